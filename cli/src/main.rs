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

/// The command line. `hatchery run …` is parsed by `run`'s arguments alone, without building the
/// other subcommands' (clap builds every argument of every subcommand first: about 0.25 ms of a
/// `hatchery run` on a slow VM); anything that does not parse there, help and errors included,
/// is parsed again by the whole command, which prints what clap prints.
fn parse(argv: Vec<std::ffi::OsString>) -> Cli {
    match parse_run(&argv) {
        Some(args) => Cli {
            command: Commands::Run(args),
        },
        None => Cli::parse_from(argv),
    }
}

/// `hatchery run …` parsed by `run`'s arguments alone; `None` for another subcommand, help, or
/// anything clap would report.
fn parse_run(argv: &[std::ffi::OsString]) -> Option<run::RunArgs> {
    use clap::{Args, FromArgMatches};
    if argv.get(1).map_or(true, |a| a != "run") {
        return None;
    }
    run::RunArgs::augment_args(clap::Command::new("run"))
        .try_get_matches_from(&argv[1..])
        .and_then(|m| run::RunArgs::from_arg_matches(&m))
        .ok()
}

fn main() {
    let cli = parse(std::env::args_os().collect());
    let code = match cli.command {
        Commands::Run(args) => {
            // One command per process: keep compiled seccomp filters between runs (the host's
            // root only, $XDG_CACHE_HOME/hatchery; HATCHERY_SECCOMP_CACHE=0 turns it off, =user
            // keeps them for any user, who then must not give a sandbox that directory).
            match std::env::var_os("HATCHERY_SECCOMP_CACHE").as_deref() {
                Some(v) if v == "0" => {}
                Some(v) if v == "user" => hatchery::seccomp::enable_disk_cache_any_user(None),
                _ => hatchery::seccomp::enable_disk_cache(None),
            }
            // ... and a copy of the embedded shim, executed read-only (instead of copying it into
            // a sealed memfd in every run; HATCHERY_SHIM_CACHE=0 turns it off).
            hatchery::shim_binary::enable_disk_cache(None);
            // One container, then exit: tear it down on this thread (no reaper thread to start,
            // wake and wait for).
            hatchery::reaper::tear_down_on_caller();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `hatchery run`'s arguments parsed by the fast path and by the whole command line.
    fn both(args: &[&str]) -> (String, String) {
        let argv: Vec<std::ffi::OsString> = std::iter::once("hatchery")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        let fast = parse_run(&argv).map_or_else(|| "error".into(), |a| format!("{a:?}"));
        let full = match Cli::try_parse_from(&argv) {
            Ok(Cli {
                command: Commands::Run(a),
            }) => format!("{a:?}"),
            Ok(_) => "another subcommand".into(),
            Err(e) => format!("error {:?}", e.kind()),
        };
        (fast, full)
    }

    #[test]
    fn the_run_fast_path_parses_as_the_whole_command_line_does() {
        for args in [
            &["run", "--profile", "default", "--", "/bin/true"][..],
            &[
                "run",
                "-v",
                "--unshare-all",
                "-b",
                "/a:/b",
                "--rootfs",
                "/",
                "--",
                "ls",
            ],
            &[
                "run",
                "--tmpfs",
                "/tmp",
                "--limit-walltime",
                "1.5",
                "--",
                "sh",
                "-c",
                "x",
            ],
            &[
                "run",
                "-e",
                "A=B",
                "-w",
                ":/tmp",
                "--network",
                "none",
                "--",
                "env",
                "--run",
            ],
            &["run"],
        ] {
            let (fast, full) = both(args);
            assert!(!fast.starts_with("error"), "{args:?}: {fast}");
            assert_eq!(fast, full, "{args:?}");
        }
        // Help, version and mistakes are declined by the fast path and reported by the whole
        // command line's parse, as clap reports them.
        for args in [
            &["run", "--no-such-flag"][..],
            &["run", "--help"],
            &["run", "--version"],
            &["run", "--limit-walltime"],
        ] {
            let (fast, full) = both(args);
            assert!(fast.starts_with("error"), "{args:?}: {fast}");
            assert!(full.starts_with("error"), "{args:?}: {full}");
        }
        let parsed = parse(["hatchery", "run", "--", "true"].map(Into::into).to_vec());
        assert!(matches!(parsed.command, Commands::Run(a) if a.argv == ["true"]));
        assert!(parse_run(&["hatchery".into(), "map".into()]).is_none());
    }
}
