//! `hatchery run [OPTIONS] [-- COMMAND...]`, a drop-in for `hakoniwa run` (hakoniwa-cli 1.8.0).
//!
//! Exit codes: the command's own, 128+n when it was killed by signal n (a wall-time kill is
//! 128+9), 125 when the container failed (or the options or the profile are wrong), 126 when
//! the command could not be executed, 127 when it was not found.
//!
//! Like `hakoniwa run`, the default keeps the host's network namespace, and with it the host's
//! abstract unix sockets (any listener there is reachable from the guest): [`NETWORK_NOTE`].
//! With `-c FILE` the sandbox comes from a hakoniwa profile (see [`crate::config`]) and the
//! other sandbox options are ignored, as in hakoniwa.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args};
use hatchery::Container;

use crate::log::{Level, Log};
use crate::sandbox::{apply, SandboxArgs};

const SHELL: &str = "/bin/sh";

/// Said in `--help`: what the compatible default shares.
pub const NETWORK_NOTE: &str = "Network: by default (as in hakoniwa) the command shares the \
host's network namespace: its interfaces, its ports and its abstract unix sockets, so it can \
connect to any abstract socket a host process listens on. --unshare-network (or --unshare-all, \
or --network none) gives it a network namespace of its own with only a loopback device, down as \
in hakoniwa, which closes all of that; --network pasta gives that namespace a user-mode TCP/IP \
stack.\n\nIdentity: as root, hatchery maps the container's root to nobody (65534), never to host \
root (hakoniwa maps it to root). A writable bind (-B), -w or --rootdir DIR:rw that nobody cannot \
write is reported before the command runs; chown it to 65534, or add a range for root to \
/etc/subuid and /etc/subgid (e.g. root:200000:65536) and use --userns auto.";

/// Options of `hatchery run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Show the setup log as hakoniwa does (-v: namespaces, mounts, id maps, limits, landlock,
    /// seccomp, Execve; -vv: every rule too)
    #[arg(short = 'v', long, action = ArgAction::Count)]
    verbose: u8,
    /// Explain every refusal on stderr, one line each with the flag that allows it (implied
    /// by -v; costs a round trip to the shim on each call that reaches a path or port)
    #[arg(long)]
    explain: bool,
    /// Print nothing but the command's own output
    #[arg(short = 'q', long, action = ArgAction::Count)]
    quiet: u8,
    /// Load the sandbox from a hakoniwa TOML profile, ignoring the other sandbox options (as
    /// hakoniwa); the COMMAND after `--` replaces the profile's command.cmdline
    #[arg(short = 'c', long, value_name = "FILE", conflicts_with = "profile")]
    config: Option<PathBuf>,
    /// Start from a named profile instead of hakoniwa's default: `default` is the pool's
    /// secure default (minimal read-only root, /etc with the host's read-only configuration,
    /// /dev, a fresh /tmp, no network, the podman seccomp policy, landlock, limits)
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// The command and its arguments (default: /bin/sh)
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) argv: Vec<String>,
}

/// The program as hakoniwa runs it: a name without `/` is looked up on the host's `PATH`
/// (and run at that path inside the container); a name found nowhere is kept, and hatchery
/// then searches the container's `PATH`.
pub(crate) fn host_program(prog: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return prog.to_string();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(prog))
                .find(|p| {
                    p.metadata()
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
        })
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| prog.to_string())
}

/// The host id that container id `id` stands for under `maps`.
fn host_id(maps: &[hatchery::idmap::IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container_id && id - m.container_id < m.size)
        .map(|m| m.host_id + (id - m.container_id))
}

/// Whether host ids `uid`/`gid` may write into `path` by its mode bits.
fn writable_by(path: &Path, uid: u32, gid: u32) -> bool {
    let Ok(m) = std::fs::metadata(path) else {
        return true; // reported elsewhere
    };
    let mode = m.mode();
    if m.uid() == uid {
        mode & 0o200 != 0
    } else if m.gid() == gid {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}

/// Notes about writable host paths the command's mapped ids cannot write (the deliberate
/// difference from hakoniwa: as root the guest is nobody, never host root).
fn unwritable_notes(container: &Container, paths: &[PathBuf]) -> Vec<String> {
    let uid_maps = container.get_uidmaps();
    let gid_maps = container.get_gidmaps();
    let (Some(cuid), Some(cgid)) = (uid_maps.first(), gid_maps.first()) else {
        return Vec::new();
    };
    let (cuid, cgid) = (cuid.container_id, cgid.container_id);
    let (Some(huid), Some(hgid)) = (host_id(uid_maps, cuid), host_id(gid_maps, cgid)) else {
        return Vec::new();
    };
    let root = nix::unistd::geteuid().is_root();
    let who = if huid == hatchery::idmap::NOBODY {
        format!("host uid {huid} (nobody)")
    } else {
        format!("host uid {huid}")
    };
    paths
        .iter()
        .filter(|p| !writable_by(p, huid, hgid))
        .map(|p| {
            let d = p.display();
            let fixes = if root {
                format!(
                    "as root, hatchery maps the container's uid {cuid} to {who}, never to host \
                     root (hakoniwa would use root). Fixes: `chown {huid}:{hgid} {d}` (or make \
                     it writable for others); or add a range for root to /etc/subuid and \
                     /etc/subgid (e.g. `root:200000:65536`), chown {d} to its first id and use \
                     --userns auto; or run hatchery as a user who can write it"
                )
            } else {
                format!(
                    "the container's uid {cuid} is {who}. Fix: `chmod u+w {d}`, or chown it to \
                     yourself"
                )
            };
            format!("note: {d} is mounted writable but {who} cannot write it: {fixes}")
        })
        .collect()
}

/// Runs `hatchery run` and returns the process exit code.
pub fn execute(args: RunArgs) -> i32 {
    let log = Log {
        level: Level::from_flags(args.verbose, args.quiet),
    };
    let (sandbox, profile_cmd) = match &args.config {
        Some(path) => {
            if args.sandbox != SandboxArgs::default() {
                log.note("--config: the other sandbox options are ignored, as in hakoniwa");
            }
            match crate::config::load(path, &log) {
                Ok(p) => (p.sandbox, Some(p.command)),
                Err(e) => {
                    log.error(format!("--config: {e}"));
                    return 125;
                }
            }
        }
        None => (args.sandbox.clone(), None),
    };
    let (base, rootfs_default) = match args.profile.as_deref() {
        None if sandbox.from_profile => (Container::new(), None),
        None => (Container::new(), Some("/")),
        Some("default") => (hatchery::pool::default_profile(), None),
        Some(other) => {
            log.error(format!(
                "--profile {other:?}: unknown profile (known: default)"
            ));
            return 2;
        }
    };
    let applied = match apply(base, &sandbox, rootfs_default) {
        Ok(x) => x,
        Err(e) => {
            log.error(e);
            return 125;
        }
    };
    let mut container = applied.container;
    let explaining = args.explain || log.debugging();
    if explaining {
        container.explain(true);
    }
    let (mut argv, cwd) = match &profile_cmd {
        Some(cmd) if args.argv.is_empty() => (cmd.cmdline.clone(), cmd.cwd.clone()),
        Some(cmd) => (args.argv.clone(), cmd.cwd.clone()),
        None => (args.argv.clone(), None),
    };
    if argv.is_empty() {
        argv.push(SHELL.to_string());
    }
    argv[0] = host_program(&argv[0]);
    let mut cmd = container.command(&argv[0]);
    cmd.args(&argv[1..]);
    for (k, v) in &applied.env {
        cmd.env(k, v);
    }
    if let Some(w) = applied.workdir.as_ref().or(cwd.as_ref()) {
        cmd.current_dir(Path::new(w));
    }
    if let Some(t) = sandbox.limit_walltime {
        if !(t.is_finite() && t > 0.0) {
            log.error(format!(
                "--limit-walltime: {t} is not a positive number of seconds"
            ));
            return 125;
        }
        cmd.wait_timeout(Duration::from_secs_f64(t));
    }
    match crate::sandbox::guest_writable(&sandbox) {
        Ok(paths) => {
            for n in unwritable_notes(&container, &paths) {
                log.note(n);
            }
        }
        Err(e) => {
            log.error(e);
            return 125;
        }
    }
    if log.debugging() {
        for line in cmd.setup_log(log.tracing()) {
            log.debug(line);
        }
    }
    // --forward-cancel: termination signals cancel the command (blocked before the spawn).
    let cancel_signals = match crate::hakurei::cancel_signals(sandbox.hakurei.forward_cancel) {
        Ok(s) => s,
        Err(e) => {
            log.error(e);
            return 125;
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return spawn_failed(&log, &e, &argv[0]),
    };
    if let Some((cmdline, output)) = child.network_setup() {
        log.debug(format!("Configuring Network: Execve: {cmdline:?}"));
        log.debug(format!("Configuring Network: Output: \n{output}"));
        log.debug("================================");
    }
    let walltime = sandbox.limit_walltime.map(Duration::from_secs_f64);
    let status = match crate::hakurei::wait(&mut child, cancel_signals.as_ref(), walltime) {
        Ok(s) => s,
        Err(e) => return spawn_failed(&log, &e, &argv[0]),
    };
    if log.debugging() {
        log.debug("================================");
        log.debug(format!("Exited: {}", status.reason));
        if let Some(r) = &status.rusage {
            log.debug(format!(
                "Metric:      RealTime: {:>12} sec",
                r.real_time.as_secs_f64()
            ));
            log.debug(format!(
                "Metric:      UserTime: {:>12} sec",
                r.user_time.as_secs_f64()
            ));
            log.debug(format!(
                "Metric:       SysTime: {:>12} sec",
                r.system_time.as_secs_f64()
            ));
            log.debug(format!("Metric:        MaxRss: {:>12} kB", r.max_rss));
        }
    }
    if status.exit_code.is_none() {
        log.error(&status.reason);
    }
    if explaining {
        print_denials(&log, &status);
    }
    if status.code != 0 && args.profile.is_none() && args.config.is_none() {
        // hakoniwa's default has neither /dev nor /tmp: a common reason for a failure
        // ("could not open /dev/null", "Read-only file system") that does not name it.
        let missing: Vec<&str> = [("/dev", &sandbox.devfs), ("/tmp", &sandbox.tmpfs)]
            .into_iter()
            .filter(|(p, list)| !list.iter().any(|d| d == p))
            .map(|(p, _)| p)
            .collect();
        if !missing.is_empty() {
            log.note(format!(
                "note: this sandbox has no {} (as hakoniwa's default); \
                 --devfs /dev --tmpfs /tmp add them, --profile default gives the secure default",
                missing.join(" and no ")
            ));
        }
    }
    status.code
}

/// One line per denial (with `--explain` or `-v`), and, with `-vv`, what could not be seen.
fn print_denials(log: &Log, status: &hatchery::ExitStatus) {
    for d in status.denials() {
        log.note(d);
    }
    if log.tracing() {
        for d in status.denials() {
            if let Some(a) = &d.allow {
                log.debug(format!(
                    "allow {} {} in a profile:\n{}",
                    d.layer, d.target, a.toml
                ));
            }
        }
        for n in hatchery::denial::UNEXPLAINED {
            log.debug(format!("not explained: {n}"));
        }
    }
}

fn spawn_failed(log: &Log, e: &hatchery::Error, program: &str) -> i32 {
    log.error(e);
    if let Some(hint) = outside_every_mount(e, program) {
        log.error(hint);
    }
    e.exit_code()
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
        PathBuf::from(program)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_follow_the_maps() {
        let maps = [
            hatchery::idmap::IdMap {
                container_id: 0,
                host_id: 1000,
                size: 1,
            },
            hatchery::idmap::IdMap {
                container_id: 1,
                host_id: 100_000,
                size: 65536,
            },
        ];
        assert_eq!(host_id(&maps, 0), Some(1000));
        assert_eq!(host_id(&maps, 5), Some(100_004));
        assert_eq!(host_id(&maps, 70_000), None);
    }

    #[test]
    fn relative_programs_are_found_on_the_host_path() {
        assert_eq!(host_program("/bin/sh"), "/bin/sh");
        assert!(host_program("sh").ends_with("/sh"));
        assert_eq!(host_program("no-such-program-x"), "no-such-program-x");
    }
}
