//! The `hatchery` command line: `hatchery run` runs a command in a one-shot sandbox,
//! accepting the flags of `hakoniwa run`.

mod bench;
mod config;
mod log;
mod map;
mod run;
mod sandbox;

use clap::{Parser, Subcommand};

/// Run untrusted native code in hardened Linux containers.
#[derive(Parser)]
#[command(name = "hatchery", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a COMMAND in a sandbox (compatible with `hakoniwa run`)
    #[command(after_help = run::NETWORK_NOTE)]
    Run(run::RunArgs),
    /// Measure spawn latency and throughput of the sandboxes on this machine
    Bench(bench::BenchArgs),
    /// Run COMMAND once per FILE (as its stdin) in fresh sandboxes from a warm pool
    Map(map::MapArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Commands::Run(args) => run::execute(args),
        Commands::Map(args) => map::execute(args),
        Commands::Bench(args) => bench::execute(args),
    };
    std::process::exit(code);
}
