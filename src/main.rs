//! The `graphq` binary: parse flags, run the subcommand (which reads the
//! configuration and sets up logging).

use clap::Parser;

/// glibc's allocator spent about half of the worker's CPU under load (see
/// BENCHMARKS.md); mimalloc cuts that to a few percent.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = graphq::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(graphq::cli::run(cli))?;
    Ok(())
}
