//! `hatchery run [OPTIONS] [-- COMMAND...]`.
//!
//! Exit codes: the command's own, 128+n when it was killed by signal n (a wall-time kill is
//! 128+9), 125 when the container failed, 126 when the command could not be executed, 127 when
//! it was not found.
//!
//! Like `hakoniwa run`, the default keeps the host's network namespace, and with it the host's
//! abstract unix sockets (any listener there is reachable from the guest): [`NETWORK_NOTE`].

use std::path::Path;
use std::time::Duration;

use clap::Args;
use hatchery::Container;

use crate::sandbox::{apply, SandboxArgs};

const SHELL: &str = "/bin/sh";

/// Said in `--help` and by `-v`: what the compatible default shares.
pub const NETWORK_NOTE: &str = "Network: by default (as in hakoniwa) the command shares the \
host's network namespace: its interfaces, its ports and its abstract unix sockets, so it can \
connect to any abstract socket a host process listens on. --unshare-network (or --unshare-all) \
gives it a network namespace of its own (loopback only), which closes all of that.";

/// Options of `hatchery run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Print the plan (mounts, id maps, environment, limits) before running
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Print nothing but the command's own output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Start from a named profile instead of hakoniwa's default: `default` is the pool's
    /// secure default (minimal read-only root, /etc with the host's read-only configuration,
    /// /dev, a fresh /tmp, no network, the podman seccomp policy, landlock, limits)
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// The command and its arguments (default: /bin/sh)
    #[arg(last = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

struct Cli {
    quiet: bool,
}

impl Cli {
    fn error(&self, msg: impl std::fmt::Display) -> i32 {
        if !self.quiet {
            eprintln!("hatchery: {msg}");
        }
        125
    }
}

/// Runs `hatchery run` and returns the process exit code.
pub fn execute(args: RunArgs) -> i32 {
    let cli = Cli { quiet: args.quiet };
    let (base, rootfs_default) = match args.profile.as_deref() {
        None => (Container::new(), Some("/")),
        Some("default") => (hatchery::pool::default_profile(), None),
        Some(other) => {
            eprintln!("hatchery: --profile {other:?}: unknown profile (known: default)");
            return 2;
        }
    };
    let (container, env, workdir) = match apply(base, &args.sandbox, rootfs_default) {
        Ok(x) => x,
        Err(e) => return cli.error(e),
    };
    let argv: Vec<String> = if args.argv.is_empty() {
        vec![SHELL.to_string()]
    } else {
        args.argv.clone()
    };
    let mut cmd = container.command(&argv[0]);
    cmd.args(&argv[1..]);
    for e in &env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(w) = &workdir {
        cmd.current_dir(Path::new(w));
    }
    if let Some(t) = args.sandbox.limit_walltime {
        if !(t.is_finite() && t > 0.0) {
            return cli.error(format!(
                "--limit-walltime: {t} is not a positive number of seconds"
            ));
        }
        cmd.wait_timeout(Duration::from_secs_f64(t));
    }
    if args.verbose && !args.quiet {
        for line in container.describe() {
            eprintln!("hatchery: {line}");
        }
        if args.sandbox.unshare_all || args.sandbox.unshare_network {
            eprintln!("hatchery: network: its own namespace (loopback only)");
        } else {
            eprintln!(
                "hatchery: network: shared with the host, abstract unix sockets included \
                 (--unshare-network closes it)"
            );
        }
        eprintln!("hatchery: command: {argv:?}");
        eprintln!("hatchery: env: {env:?}");
        if let Some(w) = &workdir {
            eprintln!("hatchery: workdir: {w}");
        }
        if let Some(t) = args.sandbox.limit_walltime {
            eprintln!("hatchery: wall-time limit: {t}s");
        }
    }
    match cmd.status() {
        Ok(status) => {
            if status.exit_code.is_none() && !args.quiet {
                eprintln!("hatchery: {}", status.reason);
            }
            if status.code != 0 && !args.quiet && args.profile.is_none() {
                // hakoniwa's default has neither /dev nor /tmp: a common reason for a failure
                // ("could not open /dev/null", "Read-only file system") that does not name it.
                let missing: Vec<&str> =
                    [("/dev", &args.sandbox.devfs), ("/tmp", &args.sandbox.tmpfs)]
                        .into_iter()
                        .filter(|(p, list)| !list.iter().any(|d| d == p))
                        .map(|(p, _)| p)
                        .collect();
                if !missing.is_empty() {
                    eprintln!(
                        "hatchery: note: this sandbox has no {} (as hakoniwa's default); \
                         --devfs /dev --tmpfs /tmp add them, --profile default gives the secure default",
                        missing.join(" and no ")
                    );
                }
            }
            if args.verbose && !args.quiet {
                if let Some(r) = &status.rusage {
                    eprintln!(
                        "hatchery: real {:?} user {:?} sys {:?} maxrss {} KiB",
                        r.real_time, r.user_time, r.system_time, r.max_rss
                    );
                }
            }
            status.code
        }
        Err(e) => {
            let code = e.exit_code();
            if !args.quiet {
                eprintln!("hatchery: {e}");
                if let Some(hint) = outside_every_mount(&e, &argv[0]) {
                    eprintln!("hatchery: {hint}");
                }
            }
            code
        }
    }
}

/// A hint when the program was not found in the container although it exists on the host: it
/// lies outside every mount.
fn outside_every_mount(e: &hatchery::Error, program: &str) -> Option<String> {
    let hatchery::Error::Setup {
        step: hatchery::SetupStep::FindProgram | hatchery::SetupStep::Exec,
        ..
    } = e
    else {
        return None;
    };
    let host = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(program))
            .find(|p| p.is_file())?
    };
    if !host.is_file() {
        return None;
    }
    let dir = host.parent()?.display().to_string();
    Some(format!(
        "{} exists on the host but is not inside any mount of the sandbox: bind it with -b {dir}",
        host.display()
    ))
}
