//! The `graphq` binary: parse flags, set up logging, run the subcommand.

use clap::Parser;

/// glibc's allocator spent about half of the worker's CPU under load (see
/// BENCHMARKS.md); mimalloc cuts that to a few percent.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = graphq::cli::Cli::parse();
    let json_logs = std::env::var("GRAPHQ_LOG_FORMAT").is_ok_and(|f| f == "json");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(graphq::cli::run(cli))?;
    Ok(())
}
