//! Host-side errors of the one-shot API.

use std::path::PathBuf;

use hatchery_protocol::{ProtocolError, SetupStep};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn errno_text(errno: i32) -> String {
    if errno == 0 {
        String::from("no errno")
    } else {
        std::io::Error::from_raw_os_error(errno).to_string()
    }
}

fn clone_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::ENOSPC | libc::EUSERS => {
            " (unprivileged user namespaces may be disabled: check \
             /proc/sys/user/max_user_namespaces, kernel.unprivileged_userns_clone and \
             kernel.apparmor_restrict_unprivileged_userns)"
        }
        libc::EINVAL => " (the kernel may lack one of the requested namespaces)",
        _ => "",
    }
}

/// Everything that can go wrong starting or running a sandboxed command, apart from the command
/// itself failing (that is an [`ExitStatus`](crate::ExitStatus)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A container setup step failed inside the sandbox; the command never ran.
    #[error(
        "container setup failed at {step:?} ({detail}): {}{}",
        errno_text(*errno),
        setup_hint(*step, *errno)
    )]
    Setup {
        /// The step.
        step: SetupStep,
        /// Its errno (0 when no system call failed).
        errno: i32,
        /// The path, user or call it was working on.
        detail: String,
    },
    /// The `hatchery-shim` binary was not found (only possible when this build of the library
    /// embeds none; see the crate's `embed-shim` feature).
    #[error(
        "hatchery-shim not found ({}, so it is looked for next to the program and on $PATH; \
         searched {}: {searched:?}): build hatchery with its default `embed-shim` feature, or \
         build the shim (`cargo build --release -p hatchery-guest --bin hatchery-shim`) and \
         install it next to your program, on $PATH, or at $HATCHERY_SHIM",
        why_not_embedded,
        searched.len()
    )]
    ShimNotFound {
        /// Why this build embeds no shim.
        why_not_embedded: &'static str,
        /// Paths that were tried.
        searched: Vec<PathBuf>,
    },
    /// The shim binary could not be copied into its sealed memfd.
    #[error("cannot load the hatchery-shim binary from {path:?}: {source}")]
    ShimLoad {
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The seccomp policy could not be compiled.
    #[error("compiling the seccomp policy {profile:?}: {source}")]
    Seccomp {
        /// The profile's name.
        profile: String,
        /// Why.
        #[source]
        source: crate::seccomp::SeccompError,
    },
    /// The container's cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// The container's network could not be configured (pasta missing or failing).
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// `clone` with new namespaces failed.
    #[error("clone with new namespaces failed: {}{}", errno_text(*errno), clone_hint(*errno))]
    Clone {
        /// The errno.
        errno: i32,
    },
    /// Executing the shim in the new namespaces failed.
    #[error("executing hatchery-shim failed: {}", errno_text(*errno))]
    ShimExec {
        /// The errno.
        errno: i32,
    },
    /// The shim died before reporting a result.
    #[error("hatchery-shim exited without a report ({status})")]
    ShimLost {
        /// How it ended.
        status: ShimEnd,
    },
    /// Writing the user namespace's id maps failed.
    #[error("writing {file} for the container failed: {source}")]
    IdMap {
        /// `uid_map`, `gid_map`, `setgroups`, or the newuidmap/newgidmap program.
        file: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap`/`newgidmap` refused the mapping.
    #[error(
        "{program} refused the id mapping: {stderr} (install Debian's `uidmap` package and give \
         the user ranges in /etc/subuid and /etc/subgid)"
    )]
    NewIdMap {
        /// Which program.
        program: &'static str,
        /// What it printed.
        stderr: String,
    },
    /// The configuration would map host root into the sandbox.
    #[error("the id map {kind} {container}->{host} (x{count}) includes host id 0; the guest is never host root")]
    HostRootMapped {
        /// `uid` or `gid`.
        kind: &'static str,
        /// First container id.
        container: u32,
        /// First host id.
        host: u32,
        /// Range length.
        count: u32,
    },
    /// A configuration value is invalid.
    #[error("invalid {what}: {value:?} ({reason})")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Talking to the shim failed.
    #[error("protocol error while {op}: {source}")]
    Protocol {
        /// What the host was doing.
        op: &'static str,
        /// The cause.
        #[source]
        source: ProtocolError,
    },
    /// A host-side system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An op that may appear once in a container appeared again (hakurei's `OpRepeatError`).
    #[error("the {op} op may appear only once in a container")]
    OpRepeat {
        /// The op (`auto-root`, `auto-etc`).
        op: &'static str,
    },
    /// An overlay's directories cannot make an overlay (hakurei's `OverlayArgumentError`).
    #[error("overlay on {target}: {reason}")]
    OverlayArgument {
        /// Its container path.
        target: String,
        /// What is wrong, naming the directory.
        reason: String,
    },
    /// A tmpfs of size 0 (hakurei's `TmpfsSizeError`): the kernel would not bound it.
    #[error(
        "tmpfs on {target}: a size of 0 is refused (the kernel reads it as unbounded); give a \
         size in bytes"
    )]
    TmpfsSize {
        /// Its container path.
        target: String,
    },
}

/// The fix for a setup failure, when it is known.
fn setup_hint(step: SetupStep, errno: i32) -> &'static str {
    match (step, errno) {
        (SetupStep::MountOverlay, libc::EINVAL) => {
            " (an overlay needs existing lower directories, two for a read-only one, and a work \
             directory that is empty and on the same file system as the upper directory)"
        }
        (SetupStep::MountOverlay, libc::EACCES | libc::EPERM) => {
            " (the container's user must be able to write the upper and work directories)"
        }
        (SetupStep::Remount, libc::EINVAL) => " (the target is not a mount point)",
        (SetupStep::MountMqueue, libc::EPERM) => {
            " (an mqueue needs the container's own IPC namespace)"
        }
        (SetupStep::Daemon, libc::ETIMEDOUT) => {
            " (the daemon did not create its ready path in time: raise the daemon timeout or \
             check the daemon)"
        }
        (SetupStep::DisableUserns, libc::EROFS) => {
            " (this host's /proc/sys is read-only, as inside a container that mounts it so; the \
             kernel then refuses a container its own /proc too)"
        }
        (SetupStep::Scheduler, libc::EPERM) => {
            " (real-time policies need CAP_SYS_NICE on the host; batch, idle and other do not)"
        }
        _ => "",
    }
}

impl Error {
    /// The exit code `hatchery run` uses for this error: 127 when the program was not found,
    /// 126 when it could not be executed, 125 for any other container failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Setup {
                step: SetupStep::FindProgram,
                ..
            } => 127,
            Error::Setup {
                step: SetupStep::Exec,
                errno,
                ..
            } => {
                if *errno == libc::ENOENT {
                    127
                } else {
                    126
                }
            }
            _ => 125,
        }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    pub(crate) fn protocol(op: &'static str) -> impl FnOnce(ProtocolError) -> Error {
        move |source| Error::Protocol { op, source }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::Error;
    use crate::PoolError;

    #[test]
    fn a_missing_shim_shows_its_hint_through_the_pool_error() {
        let e = PoolError::Spawn(Arc::new(Error::ShimNotFound {
            why_not_embedded: "built without embed-shim",
            searched: vec![PathBuf::from("/x/hatchery-shim")],
        }));
        let text = e.to_string();
        assert!(
            text.starts_with("starting a zygote failed: hatchery-shim not found ("),
            "{text}"
        );
        for hint in [
            "embed-shim",
            "HATCHERY_SHIM",
            "/x/hatchery-shim",
            "searched 1",
        ] {
            assert!(text.contains(hint), "{hint} missing from {text}");
        }
        // The cause stays typed.
        let source = e.source().and_then(|s| s.downcast_ref::<Arc<Error>>());
        assert!(
            matches!(source.map(|a| &**a), Some(Error::ShimNotFound { .. })),
            "{source:?}"
        );
    }

    #[test]
    fn wrapped_io_errors_show_their_cause() {
        let e = Error::ShimLoad {
            path: PathBuf::from("/nowhere"),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let text = PoolError::Spawn(Arc::new(e)).to_string();
        assert!(
            text.contains("\"/nowhere\": No such file or directory"),
            "{text}"
        );
        let io = Error::io("pipe2")(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(
            io.to_string(),
            "pipe2 failed: Too many open files (os error 24)"
        );
    }
}

/// How `hatchery-shim` ended when it ended without a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShimEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It was already reaped (the result was taken before).
    AlreadyReaped,
    /// No wait status could be read.
    Unknown,
}

impl ShimEnd {
    /// From a raw wait status.
    pub fn from_raw(status: i32) -> ShimEnd {
        if libc::WIFEXITED(status) {
            ShimEnd::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ShimEnd::Signaled(libc::WTERMSIG(status))
        } else {
            ShimEnd::Unknown
        }
    }

    /// From nix's wait status.
    pub(crate) fn from_wait(status: Option<nix::sys::wait::WaitStatus>) -> ShimEnd {
        use nix::sys::wait::WaitStatus;
        match status {
            Some(WaitStatus::Exited(_, code)) => ShimEnd::Exited(code),
            Some(WaitStatus::Signaled(_, sig, _)) => ShimEnd::Signaled(sig as i32),
            _ => ShimEnd::Unknown,
        }
    }
}

impl std::fmt::Display for ShimEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShimEnd::Exited(c) => write!(f, "exited with code {c}"),
            ShimEnd::Signaled(s) => write!(f, "killed by signal {s}"),
            ShimEnd::AlreadyReaped => f.write_str("already reaped"),
            ShimEnd::Unknown => f.write_str("no wait status"),
        }
    }
}
