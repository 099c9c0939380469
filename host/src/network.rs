//! User-mode networking for a container's own network namespace: [`Network`] and [`Pasta`],
//! with the meaning they have in hakoniwa.
//!
//! A container that unshares [`Namespace::Network`](crate::Namespace::Network) has only a
//! loopback device, and it is down (as in hakoniwa; [`Container::loopback`] brings it up). Given
//! a [`Network`] as well ([`Container::network`]), the host configures that namespace once the
//! container exists and before the container is built, so the command starts with it:
//!
//! ```text
//!  host                                        container (own user + network namespace)
//!  clone(NEWUSER|NEWNET|...) ──────────────▶   shim waits for its plan
//!  write uid_map / gid_map
//!  pasta --config-net ... <shim pid> ───────▶  tap0 with the host's addresses and routes,
//!    (pasta stays behind as the namespace's     lo up
//!     user-mode TCP/IP stack; it exits when
//!     the namespace is gone)
//!  send the SetupPlan ──────────────────────▶  build the root, run the command
//! ```
//!
//! Cost: one `pasta` start per container (a few milliseconds), and a `pasta` process for the
//! container's lifetime. [`Pasta`] needs the `pasta` binary of Debian's `passt` package and, for
//! an unprivileged user, read-write access to `/dev/net/tun` (Debian's default mode is 0666).
//!
//! [`Container::loopback`]: crate::Container::loopback
//! [`Container::network`]: crate::Container::network

use std::process::Command as StdCommand;

/// How a container's own network namespace is connected (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// A user-mode TCP/IP stack by `pasta(1)`.
    Pasta(Pasta),
}

impl From<Pasta> for Network {
    fn from(pasta: Pasta) -> Network {
        Network::Pasta(pasta)
    }
}

/// [pasta(1)](https://passt.top): a user-mode networking stack for the container, with the
/// host's IPv4 and IPv6 addresses and routes copied in.
///
/// As in hakoniwa (and podman), `--config-net` is always given, so the interface is configured
/// when the command starts, and `--no-map-gw` unless the options contain `--map-gw` (not a real
/// pasta option: it removes `--no-map-gw`), so the container cannot reach the host through the
/// gateway address. `-t none`, `-u none`, `-T none` and `-U none` are passed unless the options
/// configure that forwarding (`-t`/`--tcp-ports`, `-u`/`--udp-ports`, `-T`/`--tcp-ns`,
/// `-U`/`--udp-ns`), which disables pasta's automatic forwarding of bound ports. `-T PORT`
/// makes `127.0.0.1:PORT` inside the container reach the host's `127.0.0.1:PORT`.
///
/// When the host runs as root, `--runas 0:0` is added (unless the options have `--runas`): pasta
/// would otherwise drop to `nobody` first and could not enter the container's user namespace,
/// which root owns. pasta then still isolates itself in namespaces of its own and drops its
/// capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pasta {
    prog: String,
    args: Vec<String>,
}

impl Default for Pasta {
    fn default() -> Pasta {
        Pasta {
            prog: "pasta".to_string(),
            args: Vec::new(),
        }
    }
}

impl Pasta {
    /// Sets the program (default `pasta`, looked up on the host's `PATH`).
    pub fn program(&mut self, program: &str) -> &mut Self {
        self.prog = program.to_string();
        self
    }

    /// Adds options, passed to pasta after the defaults described on [`Pasta`].
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// The program.
    pub fn get_program(&self) -> &str {
        &self.prog
    }

    /// The options given with [`args`](Pasta::args).
    pub fn get_args(&self) -> &[String] {
        &self.args
    }

    /// The command line that configures the network namespace of process `pid` (a pid of the
    /// host's pid namespace), as run for `pasta` by a host whose effective uid is `host_uid`.
    #[doc(hidden)]
    pub fn to_cmdline(pasta: &Pasta, pid: u32, host_uid: u32) -> Vec<String> {
        let mut map_gw = false;
        let seen = |flags: &[&str]| pasta.args.iter().any(|a| flags.contains(&a.as_str()));
        let (tcp, udp, tcp_ns, udp_ns) = (
            seen(&["-t", "--tcp-ports"]),
            seen(&["-u", "--udp-ports"]),
            seen(&["-T", "--tcp-ns"]),
            seen(&["-U", "--udp-ns"]),
        );
        let runas = seen(&["--runas"]);
        let mut out = vec![pasta.prog.clone(), "--config-net".to_string()];
        let mut rest = Vec::new();
        for a in &pasta.args {
            if a == "--map-gw" {
                map_gw = true;
            } else {
                rest.push(a.clone());
            }
        }
        if !map_gw {
            out.push("--no-map-gw".into());
        }
        for (given, flag) in [
            (tcp, "--tcp-ports"),
            (udp, "--udp-ports"),
            (tcp_ns, "--tcp-ns"),
            (udp_ns, "--udp-ns"),
        ] {
            if !given {
                out.push(flag.into());
                out.push("none".into());
            }
        }
        if host_uid == 0 && !runas {
            out.push("--runas".into());
            out.push("0:0".into());
        }
        out.extend(rest);
        out.push(pid.to_string());
        out
    }
}

/// A network could not be set up; the container was killed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The program is not installed.
    #[error(
        "{program:?} not found: --network pasta needs the pasta binary of Debian's passt \
         package (apt-get install passt)"
    )]
    NotFound {
        /// The program looked for.
        program: String,
    },
    /// The program could not be started.
    #[error("starting {program:?} failed")]
    Start {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("configuring the network namespace failed: {cmdline:?} exited with {status}: {stderr}{hint}")]
    Failed {
        /// The command line.
        cmdline: Vec<String>,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
        /// What may fix it, or "".
        hint: &'static str,
    },
}

/// What [`setup`] did, for the caller's log, and the daemon it left running: pasta forks
/// into the background to serve the namespace, and usually quits when the namespace goes, but
/// not if the namespace went before pasta watched it. Dropping the log kills it.
#[derive(Debug)]
pub(crate) struct SetupLog {
    /// The command line run.
    pub cmdline: Vec<String>,
    /// What it printed.
    pub output: String,
    /// A pidfd of the background pasta.
    daemon: Option<std::os::fd::OwnedFd>,
}

impl Drop for SetupLog {
    fn drop(&mut self) {
        if let Some(fd) = &self.daemon {
            use std::os::fd::AsFd;
            // Gone already is fine: it quit with the namespace.
            let _ = hatchery_sys::process::pidfd_kill(fd.as_fd());
        }
    }
}

/// A private directory for pasta's pid file (mode 0700, removed with the guard).
struct PidDir(std::path::PathBuf);

impl PidDir {
    fn new() -> std::io::Result<PidDir> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("hatchery-pasta-{}-{n}-{nanos}", std::process::id()));
        // Fails if anything (a planted link included) is already there.
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PidDir(dir))
    }

    fn file(&self) -> std::path::PathBuf {
        self.0.join("pid")
    }

    /// The daemon's pidfd, from the pid file pasta wrote once configured.
    fn daemon(&self) -> Option<std::os::fd::OwnedFd> {
        let pid: libc::pid_t = std::fs::read_to_string(self.file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        hatchery_sys::process::pidfd_open(pid).ok()
    }
}

impl Drop for PidDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Configures the network namespace of host process `pid`.
pub(crate) fn setup(network: &Network, pid: u32) -> Result<SetupLog, NetworkError> {
    match network {
        Network::Pasta(p) => {
            let cmdline = Pasta::to_cmdline(p, pid, nix::unistd::geteuid().as_raw());
            let pid_dir = PidDir::new().map_err(|source| NetworkError::Start {
                program: p.prog.clone(),
                source,
            })?;
            // Our pid file goes before the target pid (pasta's last argument).
            let (target, options) = cmdline[1..].split_last().unwrap_or((&cmdline[0], &[]));
            let out = StdCommand::new(&cmdline[0])
                .args(options)
                .arg("--pid")
                .arg(pid_dir.file())
                .arg(target)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => NetworkError::NotFound {
                        program: p.prog.clone(),
                    },
                    _ => NetworkError::Start {
                        program: p.prog.clone(),
                        source,
                    },
                })?;
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if out.status.success() {
                return Ok(SetupLog {
                    cmdline,
                    output: stderr,
                    daemon: pid_dir.daemon(),
                });
            }
            let hint = if stderr.contains("/dev/net/tun") {
                " (an unprivileged pasta needs read-write access to /dev/net/tun: Debian's \
                 default is mode 0666, `chmod 0666 /dev/net/tun` restores it)"
            } else {
                ""
            };
            Err(NetworkError::Failed {
                cmdline,
                status: out.status,
                stderr,
                hint,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasta_defaults_follow_hakoniwa() {
        let p = Pasta::default();
        assert_eq!(
            Pasta::to_cmdline(&p, 42, 1000),
            [
                "pasta",
                "--config-net",
                "--no-map-gw",
                "--tcp-ports",
                "none",
                "--udp-ports",
                "none",
                "--tcp-ns",
                "none",
                "--udp-ns",
                "none",
                "42"
            ]
        );
    }

    #[test]
    fn given_options_replace_their_defaults() {
        let mut p = Pasta::default();
        p.program("/usr/bin/pasta")
            .args(["--map-gw", "-T", "8080", "-t", "80"]);
        assert_eq!(
            Pasta::to_cmdline(&p, 7, 0),
            [
                "/usr/bin/pasta",
                "--config-net",
                "--udp-ports",
                "none",
                "--udp-ns",
                "none",
                "--runas",
                "0:0",
                "-T",
                "8080",
                "-t",
                "80",
                "7"
            ]
        );
        p.args(["--runas", "65534"]);
        assert!(!Pasta::to_cmdline(&p, 7, 0).contains(&"0:0".to_string()));
    }
}
