//! Every refusal with a reason: typed [`Denial`]s, each with the smallest profile change that
//! allows exactly it, from what an explaining shim reported and how the request ended.
//!
//! ```text
//!   shim Report (seccomp errno, landlock predictions, scopes, absent paths)
//!   + Outcome (rlimit signals, cgroup OOM) + the container's limits
//!        ──explain()──▶ Vec<Denial { layer, operation, target, count, allow }>
//! ```
//!
//! What the kernel offers decides what can be explained: seccomp refusals are seen exactly
//! (the shim answers them), landlock refusals are predicted from the rules the shim enforces
//! (landlock's own audit records need the host's audit subsystem enabled, a host-wide setting
//! this library does not change, and `CAP_AUDIT_READ` in the initial namespace), rlimits
//! and cgroups from how the command ended. [`UNEXPLAINED`] says what stays unseen.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hatchery_protocol::{Outcome, Refused, Report};

/// The confinement layer that refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Layer {
    /// The seccomp filter failed a system call.
    Seccomp,
    /// Landlock refused a file-system access.
    LandlockFs,
    /// Landlock refused a TCP bind or connect.
    LandlockNet,
    /// A landlock scope refused reaching outside the domain (abstract sockets, signals).
    Scope,
    /// A resource limit (`setrlimit`) ended the command.
    Rlimit,
    /// A cgroup limit ended the command.
    Cgroup,
    /// A path the command looked for is not in the container, though it exists on the host.
    MissingMount,
}

impl Layer {
    /// The layer's name (`seccomp`, `landlock-fs`, …).
    pub fn name(self) -> &'static str {
        match self {
            Layer::Seccomp => "seccomp",
            Layer::LandlockFs => "landlock-fs",
            Layer::LandlockNet => "landlock-net",
            Layer::Scope => "scope",
            Layer::Rlimit => "rlimit",
            Layer::Cgroup => "cgroup",
            Layer::MissingMount => "missing-mount",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The smallest change that allows exactly one denial: a `hatchery run` flag and the same as
/// a TOML profile snippet. `None` where no change can (signals to the container's init).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// The flag (`--landlock-fs-ro /etc/magic`).
    pub flag: String,
    /// The profile snippet (`[[landlock.fs]]` …).
    pub toml: String,
}

/// One refusal: which layer, of what, on what, how often, and how to allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The layer.
    pub layer: Layer,
    /// The operation (`openat`, `read_file`, `connect`, `socket(AF_PACKET)`, `memory`).
    pub operation: String,
    /// What it was done on (a path and the rights, a port, the errno, the limit).
    pub target: String,
    /// How often.
    pub count: u32,
    /// The change that allows exactly it, if any.
    pub allow: Option<Allow>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denied [{}] {} {}",
            self.layer, self.operation, self.target
        )?;
        if self.count > 1 {
            write!(f, " ({}×)", self.count)?;
        }
        match &self.allow {
            Some(a) => write!(f, "; allow with {}", a.flag),
            None => write!(f, "; no profile change allows it"),
        }
    }
}

/// What a recorded command used ([`Container::learn`](crate::Container::learn)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// The system calls made, by name, each with how often.
    pub syscalls: Vec<(String, u32)>,
    /// Paths reached (absolute, inside the container), with the `LANDLOCK_ACCESS_FS_*` rights
    /// the calls needed ([`rights_text`] names them), and whether they existed.
    pub paths: Vec<(std::path::PathBuf, u64, bool)>,
    /// Socket address families created.
    pub families: Vec<i32>,
    /// TCP ports bound (`false`) or connected to (`true`).
    pub ports: Vec<(u16, bool)>,
    /// Entries the shim left out for its bounds.
    pub dropped: u32,
}

impl Learned {
    pub(crate) fn from_report(r: &Report) -> Option<Learned> {
        let o = r.observed.as_ref()?;
        Some(Learned {
            syscalls: o
                .syscalls
                .iter()
                .map(|(nr, n)| (crate::seccomp::syscall_name(i64::from(*nr)), *n))
                .collect(),
            paths: o
                .paths
                .iter()
                .map(|p| {
                    (
                        Path::new(std::ffi::OsStr::from_bytes(&p.path.0)).to_path_buf(),
                        p.access,
                        p.exists,
                    )
                })
                .collect(),
            families: o.families.clone(),
            ports: o.ports.clone(),
            dropped: r.dropped,
        })
    }

    /// Merges another run's use into this one.
    pub fn merge(&mut self, other: &Learned) {
        for (name, n) in &other.syscalls {
            match self.syscalls.iter_mut().find(|(s, _)| s == name) {
                Some((_, m)) => *m = m.saturating_add(*n),
                None => self.syscalls.push((name.clone(), *n)),
            }
        }
        for (p, a, e) in &other.paths {
            match self.paths.iter_mut().find(|(q, ..)| q == p) {
                Some((_, b, f)) => {
                    *b |= a;
                    *f |= e;
                }
                None => self.paths.push((p.clone(), *a, *e)),
            }
        }
        for f in &other.families {
            if !self.families.contains(f) {
                self.families.push(*f);
            }
        }
        for p in &other.ports {
            if !self.ports.contains(p) {
                self.ports.push(*p);
            }
        }
        self.dropped = self.dropped.saturating_add(other.dropped);
    }
}

/// What explaining cannot see on any kernel: said once per explained request.
pub const UNEXPLAINED: &[&str] = &[
    "landlock-fs/landlock-net/scope: predicted from the enforced rules (landlock's audit records \
     need CAP_AUDIT_READ in the initial namespace); ioctl rights on devices are not predicted",
    "rlimit: only limits that end the command (cpu, fsize signals) are seen; nofile, nproc and \
     others fail single calls (EMFILE, EAGAIN) without a trace",
];

/// What a container's shim does besides enforcing (see [`Container::explain`] and
/// [`Container::learn`]).
///
/// [`Container::explain`]: crate::Container::explain
/// [`Container::learn`]: crate::Container::learn
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Recording {
    #[default]
    Off,
    Explain,
    Learn,
}

/// The limits a container had, for suggesting larger ones.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) cpu_secs: Option<u64>,
    pub(crate) fsize: Option<u64>,
    pub(crate) memory: Option<u64>,
}

/// The denials of a request: the shim's report (if it explained) and its outcome.
/// `on_host(path)` says whether an absent path exists on the host (then it is a missing mount).
pub(crate) fn explain(
    report: Option<&Report>,
    outcome: &Outcome,
    limits: Limits,
    failed: bool,
    on_host: impl Fn(&Path) -> bool,
) -> Vec<Denial> {
    let mut out = Vec::new();
    if let Some(r) = report {
        for d in &r.denials {
            if let Some(mut denial) = refused(&d.what, failed, &on_host) {
                denial.count = d.count;
                out.push(denial);
            }
        }
    }
    match outcome {
        Outcome::CpuTimeExceeded => out.push(Denial {
            layer: Layer::Rlimit,
            operation: "cpu".into(),
            target: limit_text(limits.cpu_secs, "s"),
            count: 1,
            allow: Some(larger("cpu", limits.cpu_secs.unwrap_or(1), "--limit-cpu")),
        }),
        Outcome::Signaled { signal, .. } if *signal == libc::SIGXFSZ => out.push(Denial {
            layer: Layer::Rlimit,
            operation: "fsize".into(),
            target: limit_text(limits.fsize, " bytes"),
            count: 1,
            allow: Some(larger(
                "fsize",
                limits.fsize.unwrap_or(1 << 20),
                "--limit-fsize",
            )),
        }),
        Outcome::MemoryExceeded => {
            let now = limits.memory.unwrap_or(256 << 20);
            out.push(Denial {
                layer: Layer::Cgroup,
                operation: "memory".into(),
                target: limit_text(limits.memory, " bytes (OOM kill)"),
                count: 1,
                allow: Some(Allow {
                    flag: format!("--cgroup-memory {}", now.saturating_mul(2)),
                    toml: format!("[cgroup]\nmemory = {}", now.saturating_mul(2)),
                }),
            })
        }
        _ => {}
    }
    out
}

fn limit_text(v: Option<u64>, unit: &str) -> String {
    match v {
        Some(v) => format!("limit {v}{unit}"),
        None => "limit".into(),
    }
}

fn larger(kind: &str, now: u64, flag: &str) -> Allow {
    let v = now.saturating_mul(4);
    Allow {
        flag: format!("{flag} {v}"),
        toml: format!("[[limits]]\ntype = \"{kind}\"\nvalue = {v}"),
    }
}

fn refused(what: &Refused, failed: bool, on_host: &impl Fn(&Path) -> bool) -> Option<Denial> {
    Some(match what {
        Refused::Syscall { nr, errno, arg0 } => {
            let name = crate::seccomp::syscall_name(i64::from(*nr));
            let (operation, spec) = match arg0 {
                Some(a) => (
                    format!("{name}({})", arg_text(&name, *a)),
                    format!("{name}:{a}"),
                ),
                None => (name.clone(), name.clone()),
            };
            Denial {
                layer: Layer::Seccomp,
                operation,
                target: format!("errno {}", errno_name(*errno)),
                count: 1,
                allow: Some(Allow {
                    flag: format!("--seccomp-allow {spec}"),
                    toml: format!("[seccomp]\nallow = [\"{spec}\"]"),
                }),
            }
        }
        Refused::Path { path, access, nr } => {
            let p = String::from_utf8_lossy(&path.0).into_owned();
            let (flag, mode) = if access & !(READ | EXECUTE) != 0 {
                ("--landlock-fs-rw", "rw-")
            } else if access & EXECUTE != 0 {
                ("--landlock-fs-rx", "r-x")
            } else {
                ("--landlock-fs-ro", "r--")
            };
            Denial {
                layer: Layer::LandlockFs,
                operation: crate::seccomp::syscall_name(i64::from(*nr)),
                target: format!("{p} ({})", rights_text(*access)),
                count: 1,
                allow: Some(Allow {
                    flag: format!("{flag} {p}"),
                    toml: format!("[[landlock.fs]]\npath = {p:?}\naccess = \"{mode}\""),
                }),
            }
        }
        Refused::Port { port, connect } => {
            let (op, flag, access) = if *connect {
                ("connect", "--landlock-tcp-connect", "tcp.connect")
            } else {
                ("bind", "--landlock-tcp-bind", "tcp.bind")
            };
            Denial {
                layer: Layer::LandlockNet,
                operation: op.into(),
                target: format!("tcp port {port}"),
                count: 1,
                allow: Some(Allow {
                    flag: format!("{flag} {port}"),
                    toml: format!("[[landlock.net]]\nport = {port}\naccess = \"{access}\""),
                }),
            }
        }
        Refused::Scope { signal: true, name } => Denial {
            layer: Layer::Scope,
            operation: "signal".into(),
            target: format!(
                "pid {} (the container's init)",
                String::from_utf8_lossy(&name.0)
            ),
            count: 1,
            allow: None,
        },
        Refused::Scope {
            signal: false,
            name,
        } => Denial {
            layer: Layer::Scope,
            operation: "connect".into(),
            target: format!(
                "abstract unix socket @{} (not bound inside the sandbox)",
                String::from_utf8_lossy(&name.0)
            ),
            count: 1,
            allow: Some(Allow {
                flag: "--host-abstract".into(),
                toml: "[hakurei]\nhost_abstract = true".into(),
            }),
        },
        Refused::ReadOnly { path } => {
            let text = String::from_utf8_lossy(&path.0).into_owned();
            let p = Path::new(std::ffi::OsStr::from_bytes(&path.0));
            // A writable place is a writable bind of the host path (when it exists there and
            // is no secret) or, under the container's own directories, a tmpfs.
            let system = [
                "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/boot",
            ]
            .iter()
            .any(|d| p.starts_with(d))
                || p == Path::new("/");
            let allow = if is_secret(p) || system {
                // The host's system is never made writable: write under /tmp instead.
                None
            } else if p.exists() && !is_virtual(p) {
                Some(Allow {
                    flag: format!("--bindmount-rw {text}"),
                    toml: format!("[[mounts]]\nsource = {text:?}\nrw = true"),
                })
            } else {
                Some(Allow {
                    flag: format!("--tmpfs {text}"),
                    toml: format!("[[mounts]]\nsource = {text:?}\ntype = \"tmpfs\""),
                })
            };
            Denial {
                layer: Layer::MissingMount,
                operation: "write".into(),
                target: if system {
                    format!("{text} (read-only mount of the host's system; write under /tmp)")
                } else {
                    format!("{text} (read-only mount)")
                },
                count: 1,
                allow,
            }
        }
        Refused::Absent { path } => {
            // Probes of paths that do not exist anywhere are normal; a failed command that
            // looked for a host path the container lacks is told.
            let p = Path::new(std::ffi::OsStr::from_bytes(&path.0));
            if !failed || !p.is_absolute() || !on_host(p) {
                return None;
            }
            let text = p.display().to_string();
            if is_virtual(p) {
                // The container's own file systems: a fresh one where the command wants it.
                let (flag, toml) = if p.starts_with("/dev") {
                    return Some(Denial {
                        layer: Layer::MissingMount,
                        operation: "lookup".into(),
                        target: format!("{text} (no such device in the container; --devfs /dev gives the minimal set)"),
                        count: 1,
                        allow: None,
                    });
                } else if p.starts_with("/tmp") || p.starts_with("/run") {
                    let top: PathBuf = p.components().take(2).collect();
                    let t = top.display();
                    (
                        format!("--tmpfs {t}"),
                        format!("[[mounts]]\nsource = \"{t}\"\ntype = \"tmpfs\""),
                    )
                } else {
                    return None;
                };
                return Some(Denial {
                    layer: Layer::MissingMount,
                    operation: "lookup".into(),
                    target: format!("{text} (not in the container)"),
                    count: 1,
                    allow: Some(Allow { flag, toml }),
                });
            }
            if is_secret(p) {
                return Some(Denial {
                    layer: Layer::MissingMount,
                    operation: "lookup".into(),
                    target: format!("{text} (a secret of the host: never mounted)"),
                    count: 1,
                    allow: None,
                });
            }
            Denial {
                layer: Layer::MissingMount,
                operation: "lookup".into(),
                target: format!("{text} (exists on the host, not in the container)"),
                count: 1,
                allow: Some(Allow {
                    flag: format!("--bindmount-ro {text}"),
                    toml: format!("[[mounts]]\nsource = {text:?}"),
                }),
            }
        }
    })
}

/// Account secrets and the like, which no suggestion mounts.
fn is_secret(p: &Path) -> bool {
    p.to_str().is_some_and(crate::pool::etc_is_secret)
}

/// Paths of the container's own file systems, never host mounts.
fn is_virtual(p: &Path) -> bool {
    ["/proc", "/dev", "/sys", "/tmp", "/run"]
        .iter()
        .any(|v| p.starts_with(v))
}

const READ: u64 = 1 << 2 | 1 << 3;
const EXECUTE: u64 = 1;

/// `LANDLOCK_ACCESS_FS_*` names, in bit order.
const RIGHTS: [&str; 16] = [
    "execute",
    "write_file",
    "read_file",
    "read_dir",
    "remove_dir",
    "remove_file",
    "make_char",
    "make_dir",
    "make_reg",
    "make_sock",
    "make_fifo",
    "make_block",
    "make_sym",
    "refer",
    "truncate",
    "ioctl_dev",
];

/// `read_file,read_dir` for landlock rights bits.
pub fn rights_text(access: u64) -> String {
    RIGHTS
        .iter()
        .enumerate()
        .filter(|(i, _)| access & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn arg_text(syscall: &str, a: u64) -> String {
    if syscall == "socket" {
        let name = match a as i32 {
            libc::AF_UNIX => "AF_UNIX",
            libc::AF_INET => "AF_INET",
            libc::AF_INET6 => "AF_INET6",
            libc::AF_NETLINK => "AF_NETLINK",
            libc::AF_PACKET => "AF_PACKET",
            libc::AF_BLUETOOTH => "AF_BLUETOOTH",
            libc::AF_CAN => "AF_CAN",
            libc::AF_VSOCK => "AF_VSOCK",
            libc::AF_ALG => "AF_ALG",
            _ => return format!("family {a}"),
        };
        return name.into();
    }
    format!("{a:#x}")
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EINVAL => "EINVAL",
        0 => return "0 (faked success)".into(),
        _ => return e.to_string(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchery_protocol::{Bytes, RawDenial};

    fn report(what: Refused) -> Report {
        Report {
            denials: vec![RawDenial { what, count: 3 }],
            ..Report::default()
        }
    }

    #[test]
    fn each_layer_gets_its_exact_allowance() {
        let r = report(Refused::Path {
            path: Bytes(b"/etc/magic".to_vec()),
            access: 1 << 2,
            nr: libc::SYS_openat as i32,
        });
        let d = explain(
            Some(&r),
            &Outcome::Exited(1),
            Limits::default(),
            true,
            |_| true,
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].layer, Layer::LandlockFs);
        assert_eq!(d[0].count, 3);
        assert_eq!(d[0].operation, "openat");
        assert_eq!(d[0].target, "/etc/magic (read_file)");
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--landlock-fs-ro /etc/magic"
        );
        let r = report(Refused::Syscall {
            nr: libc::SYS_socket as i32,
            errno: libc::EAFNOSUPPORT,
            arg0: Some(libc::AF_PACKET as u64),
        });
        let d = explain(
            Some(&r),
            &Outcome::Exited(0),
            Limits::default(),
            false,
            |_| true,
        );
        assert_eq!(d[0].operation, "socket(AF_PACKET)");
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--seccomp-allow socket:17"
        );
        let r = report(Refused::Port {
            port: 80,
            connect: true,
        });
        let d = explain(
            Some(&r),
            &Outcome::Exited(0),
            Limits::default(),
            false,
            |_| true,
        );
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--landlock-tcp-connect 80"
        );
    }

    #[test]
    fn absent_paths_are_missing_mounts_only_when_on_the_host_and_the_command_failed() {
        let r = report(Refused::Absent {
            path: Bytes(b"/opt/tool/data".to_vec()),
        });
        let d = explain(
            Some(&r),
            &Outcome::Exited(1),
            Limits::default(),
            true,
            |_| true,
        );
        assert_eq!(d[0].layer, Layer::MissingMount);
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--bindmount-ro /opt/tool/data"
        );
        assert!(explain(
            Some(&r),
            &Outcome::Exited(0),
            Limits::default(),
            false,
            |_| true
        )
        .is_empty());
        assert!(explain(
            Some(&r),
            &Outcome::Exited(1),
            Limits::default(),
            true,
            |_| false
        )
        .is_empty());
    }

    #[test]
    fn limits_from_the_outcome() {
        let l = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let d = explain(None, &Outcome::MemoryExceeded, l, true, |_| false);
        assert_eq!(d[0].layer, Layer::Cgroup);
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--cgroup-memory 134217728"
        );
        let d = explain(
            None,
            &Outcome::CpuTimeExceeded,
            Limits::default(),
            true,
            |_| false,
        );
        assert_eq!(d[0].layer, Layer::Rlimit);
    }
}
