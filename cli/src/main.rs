//! The `hatchery` command line: `hatchery run` runs a command in a one-shot sandbox,
//! accepting the flags of `hakoniwa run`.

mod bench;
mod config;
mod hakurei;
mod learn;
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
    /// Record a helper on sample inputs and write the smallest profile it needs (trusted
    /// samples only: recording allows every system call)
    Learn(learn::LearnArgs),
    /// Measure spawn latency and throughput of the sandboxes on this machine
    Bench(bench::BenchArgs),
    /// Run COMMAND once per FILE (as its stdin) in fresh sandboxes from a warm pool
    Map(map::MapArgs),
    /// Generate SHELL autocompletions (as `hakoniwa completion`)
    Completion(CompletionArgs),
}

/// Options of `hatchery completion`.
#[derive(clap::Args)]
struct CompletionArgs {
    /// Output the completion to FILE rather than stdout
    #[arg(short, long)]
    file: Option<std::path::PathBuf>,
    /// The shell
    #[arg(value_name = "SHELL", value_enum)]
    shell: clap_complete::Shell,
}

fn completion(args: CompletionArgs) -> i32 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out: Box<dyn std::io::Write> = match &args.file {
        None => Box::new(std::io::stdout()),
        Some(f) => match std::fs::File::create(f) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("hatchery: --file {}: {e}", f.display());
                return 1;
            }
        },
    };
    clap_complete::generate(args.shell, &mut cmd, "hatchery", &mut out);
    0
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Commands::Run(args) => {
            // One command per process: keep compiled seccomp filters between runs (per user,
            // $XDG_CACHE_HOME/hatchery; HATCHERY_SECCOMP_CACHE=0 turns it off).
            if std::env::var_os("HATCHERY_SECCOMP_CACHE").as_deref() != Some("0".as_ref()) {
                hatchery::seccomp::enable_disk_cache(None);
            }
            run::execute(args)
        }
        Commands::Map(args) => map::execute(args),
        Commands::Learn(args) => learn::execute(args),
        Commands::Bench(args) => bench::execute(args),
        Commands::Completion(args) => completion(args),
    };
    // One-shot containers are torn down in the background once their status is known: let that
    // finish, so that no cgroup of ours outlives the process.
    hatchery::reaper::settle();
    std::process::exit(code);
}
