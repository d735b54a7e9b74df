//! The `graphq` binary: parse flags and run the subcommand, which reads the
//! configuration, sets up logging and starts what it names.

use clap::Parser;

/// glibc's allocator spent about half of the worker's CPU under load (see
/// BENCHMARKS.md); mimalloc cuts that to a few percent.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = graphq_workers::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(graphq_workers::cli::run(cli))?;
    Ok(())
}
