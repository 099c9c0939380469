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
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) cpu_secs: Option<u64>,
    pub(crate) fsize: Option<u64>,
    pub(crate) memory: Option<u64>,
    /// The seccomp policy, which says which refused calls may be allowed exactly.
    pub(crate) filter: Option<crate::seccomp::Filter>,
}

/// The denials of a request: the shim's report (if it explained) and its outcome.
/// `on_host(path)` says whether an absent path exists on the host (then it is a missing mount);
/// [`on_host`] is the one to use.
pub(crate) fn explain(
    report: Option<&Report>,
    outcome: &Outcome,
    limits: &Limits,
    failed: bool,
    on_host: impl Fn(&Path) -> bool,
) -> Vec<Denial> {
    let mut out = Vec::new();
    if let Some(r) = report {
        for d in &r.denials {
            if let Some(mut denial) = refused(&d.what, failed, limits.filter.as_ref(), &on_host) {
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

/// Whether `path` exists on the host, for a missing-mount suggestion: only paths a suggestion
/// may name ([`suggestable`]), reached without any symbolic link, mount crossing or
/// automount (the path is the guest's choice), and neither a socket nor a directory holding
/// one (a read-only bind does not stop `connect`).
pub(crate) fn on_host(path: &Path) -> bool {
    suggestable(path) && hatchery_sys::fs::plain_host_entry(path)
}

/// Host paths a missing-mount suggestion may name: printable, absolute, no dot-files, no
/// secret, and under the system's own directories only (never homes, runtime directories,
/// other services' data).
fn suggestable(p: &Path) -> bool {
    const UNDER: &[&str] = &["/usr", "/opt", "/srv", "/etc"];
    const NEVER: &[&str] = &[
        "/etc/ssl/private",
        "/etc/ssh",
        "/etc/sudoers.d",
        "/etc/polkit-1",
    ];
    p.is_absolute()
        && p.to_str().is_some_and(|s| !s.chars().any(invisible))
        && !p
            .components()
            .any(|c| c.as_os_str().as_bytes().first() == Some(&b'.'))
        && UNDER.iter().any(|n| p.starts_with(n))
        && !NEVER.iter().any(|n| p.starts_with(n))
        && !is_secret(p)
}

/// Characters that do not show as themselves: controls, and invisible formatting (direction
/// overrides, zero-width characters, line and paragraph separators).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// Invisible characters of guest-chosen text, escaped (a denial is printed to a terminal).
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if invisible(c) {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn refused(
    what: &Refused,
    failed: bool,
    filter: Option<&crate::seccomp::Filter>,
    on_host: &impl Fn(&Path) -> bool,
) -> Option<Denial> {
    let mut d = refused_raw(what, failed, filter, on_host)?;
    d.operation = printable(&d.operation);
    d.target = printable(&d.target);
    Some(d)
}

fn refused_raw(
    what: &Refused,
    failed: bool,
    filter: Option<&crate::seccomp::Filter>,
    on_host: &impl Fn(&Path) -> bool,
) -> Option<Denial> {
    // Paths with control characters or that are not UTF-8 get no suggestion (a flag or a TOML
    // string could not carry them faithfully).
    let plain = |p: &[u8]| std::str::from_utf8(p).is_ok_and(|s| !s.chars().any(invisible));
    Some(match what {
        Refused::Syscall { nr, errno, arg0 } => {
            let name = crate::seccomp::syscall_name(i64::from(*nr));
            let operation = match arg0 {
                Some(a) => format!("{name}({})", arg_text(&name, *a)),
                None => name.clone(),
            };
            let spec = filter.and_then(|f| f.allowance(&name, *arg0));
            Denial {
                layer: Layer::Seccomp,
                operation,
                target: match spec {
                    Some(_) => format!("errno {}", errno_name(*errno)),
                    None => format!(
                        "errno {} (refused on purpose by the policy: no exact allowance)",
                        errno_name(*errno)
                    ),
                },
                count: 1,
                allow: spec.map(|spec| Allow {
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
                allow: plain(&path.0).then(|| Allow {
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
        // No exact allowance: --host-abstract drops the scope for every abstract socket.
        Refused::Scope {
            signal: false,
            name,
        } => Denial {
            layer: Layer::Scope,
            operation: "connect".into(),
            target: format!(
                "abstract unix socket @{} (not bound inside the sandbox; --host-abstract would \
                 open every abstract socket of the host's network namespace)",
                String::from_utf8_lossy(&name.0)
            ),
            count: 1,
            allow: None,
        },
        Refused::ReadOnly { path } => {
            let text = String::from_utf8_lossy(&path.0).into_owned();
            let p = Path::new(std::ffi::OsStr::from_bytes(&path.0));
            // A bind of host data is never suggested writable (it would write the host's
            // files); the container's own scratch places get a tmpfs.
            let scratch = (p.starts_with("/tmp") || p.starts_with("/run")) && plain(&path.0);
            Denial {
                layer: Layer::MissingMount,
                operation: "write".into(),
                target: if scratch {
                    format!("{text} (read-only)")
                } else {
                    format!("{text} (read-only mount of host files: write under /tmp instead)")
                },
                count: 1,
                allow: scratch.then(|| tmpfs_at(p)),
            }
        }
        Refused::Absent { path } => {
            // Probes of paths that do not exist anywhere are normal; a failed command that
            // looked for a host path the container lacks is told.
            let p = Path::new(std::ffi::OsStr::from_bytes(&path.0));
            if !failed || !p.is_absolute() {
                return None;
            }
            let text = p.display().to_string();
            let lookup = |target: String, allow: Option<Allow>| Denial {
                layer: Layer::MissingMount,
                operation: "lookup".into(),
                target,
                count: 1,
                allow,
            };
            if p.starts_with("/dev") {
                return Some(lookup(
                    format!("{text} (no such device in the container; --devfs /dev gives the minimal set)"),
                    None,
                ));
            }
            if (p.starts_with("/tmp") || p.starts_with("/run")) && plain(&path.0) {
                // The container's own scratch places: a fresh tmpfs where the command wants it.
                return Some(lookup(
                    format!("{text} (not in the container)"),
                    Some(tmpfs_at(p)),
                ));
            }
            if is_secret(p) {
                return Some(lookup(
                    format!("{text} (a secret of the host: never mounted)"),
                    None,
                ));
            }
            if !on_host(p) {
                return None;
            }
            lookup(
                format!(
                    "{text} (exists on the host, not in the container; the sandboxed command chose \
                     this path: check it before mounting it)"
                ),
                Some(Allow {
                    flag: format!("--bindmount-ro {text}"),
                    toml: format!("[[mounts]]\nsource = {text:?}"),
                }),
            )
        }
    })
}

/// A tmpfs at the top directory of `p` (`/tmp`, `/run`).
fn tmpfs_at(p: &Path) -> Allow {
    let top: PathBuf = p.components().take(2).collect();
    let t = top.display();
    Allow {
        flag: format!("--tmpfs {t}"),
        toml: format!("[[mounts]]\nsource = \"{t}\"\ntype = \"tmpfs\""),
    }
}

/// Account secrets and the like, which no suggestion mounts.
fn is_secret(p: &Path) -> bool {
    p.to_str().is_some_and(crate::pool::etc_is_secret)
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

    /// What a command that failed (or not) would be told of `r`, every path on the host.
    fn told(r: &Report, failed: bool) -> Vec<Denial> {
        let outcome = if failed {
            Outcome::Exited(1)
        } else {
            Outcome::Exited(0)
        };
        explain(Some(r), &outcome, &Limits::default(), failed, |_| true)
    }

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
        let d = told(&r, true);
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
        let podman = Limits {
            filter: crate::seccomp::Profile::from_name("podman").and_then(|p| p.filter()),
            ..Limits::default()
        };
        let d = explain(Some(&r), &Outcome::Exited(0), &podman, false, |_| true);
        assert_eq!(d[0].operation, "socket(AF_PACKET)");
        // podman refuses that family by name: on purpose, no allowance.
        assert!(d[0].allow.is_none(), "{:?}", d[0]);
        assert!(d[0].target.contains("on purpose"), "{:?}", d[0]);
        let r = report(Refused::Port {
            port: 80,
            connect: true,
        });
        let d = told(&r, false);
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--landlock-tcp-connect 80"
        );
    }

    #[test]
    fn refusals_on_purpose_get_no_allowance() {
        let f = crate::seccomp::Profile::from_name("podman")
            .and_then(|p| p.filter())
            .unwrap();
        // Outside podman's own policy (a persona, modify_ldt, kcmp): on purpose, nothing.
        assert_eq!(f.allowance("personality", Some(0x40000)), None);
        assert_eq!(f.allowance("modify_ldt", None), None);
        assert_eq!(f.allowance("kcmp", None), None);
        assert_eq!(f.allowance("socket", Some(17)), None);
        // clone3 (flags unseen), io_uring, ioctl, netlink's protocols, violations: nothing.
        for (call, arg) in [
            ("clone3", None),
            ("io_uring_setup", None),
            ("ioctl", Some(0x5412)),
            ("socket", Some(16)),
            ("unshare", Some(0x10000000)),
            ("mount", None),
        ] {
            assert_eq!(f.allowance(call, arg), None, "{call}");
        }
        // A narrowed (learned) policy: a dropped call and family come back exactly.
        let n = f
            .only_allowing(&["read".into(), "socket".into()], Some(&[1]))
            .unwrap();
        assert_eq!(n.allowance("write", None).as_deref(), Some("write"));
        // A dropped call podman allows for some first arguments only: that argument only.
        assert_eq!(
            n.allowance("personality", Some(0)).as_deref(),
            Some("personality:0")
        );
        assert_eq!(n.allowance("personality", Some(0x40000)), None);
        assert_eq!(n.allowance("socket", Some(2)).as_deref(), Some("socket:2"));
        assert_eq!(n.allowance("socket", Some(16)), None);
        // Narrowed to AF_UNIX: netlink's allowing rule (it also names the protocol) is gone.
        assert!(
            !n.get_rules().iter().any(|r| r.sysname == "socket"
                && r.action == crate::seccomp::Action::Allow
                && r.argcmps.iter().any(|c| c.arg == 0 && c.datum_a == 16)),
            "{:?}",
            n.rules_text()
        );
    }

    #[test]
    fn guest_chosen_text_is_escaped_and_host_data_never_suggested_writable() {
        let r = report(Refused::ReadOnly {
            path: Bytes(b"/etc/passwd".to_vec()),
        });
        let d = told(&r, true);
        assert!(d[0].allow.is_none(), "{d:?}");
        let r = report(Refused::Scope {
            signal: false,
            name: Bytes(b"\x1b]0;title\x07\nhatchery: fake".to_vec()),
        });
        let d = told(&r, true);
        assert!(!d[0].to_string().chars().any(char::is_control), "{}", d[0]);
        assert!(d[0].allow.is_none());
        for never in [
            "/root/.npmrc",
            "/home/me/x",
            "/opt/.secret/x",
            "/etc/shadow",
        ] {
            assert!(!suggestable(Path::new(never)), "{never}");
        }
        assert!(suggestable(Path::new("/etc/debian_version")));
        for never in [
            "/var/run/postgresql",
            "/etc/ssl/private/k.key",
            "/var/lib/postgresql",
        ] {
            assert!(!suggestable(Path::new(never)), "{never}");
        }
        assert!(!suggestable(Path::new("/usr/share/\u{202e}txt.exe")));
    }

    #[test]
    fn absent_paths_are_missing_mounts_only_when_on_the_host_and_the_command_failed() {
        let r = report(Refused::Absent {
            path: Bytes(b"/opt/tool/data".to_vec()),
        });
        let d = told(&r, true);
        assert_eq!(d[0].layer, Layer::MissingMount);
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--bindmount-ro /opt/tool/data"
        );
        assert!(told(&r, false).is_empty());
        assert!(explain(
            Some(&r),
            &Outcome::Exited(1),
            &Limits::default(),
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
        let d = explain(None, &Outcome::MemoryExceeded, &l, true, |_| false);
        assert_eq!(d[0].layer, Layer::Cgroup);
        assert_eq!(
            d[0].allow.as_ref().unwrap().flag,
            "--cgroup-memory 134217728"
        );
        let d = explain(
            None,
            &Outcome::CpuTimeExceeded,
            &Limits::default(),
            true,
            |_| false,
        );
        assert_eq!(d[0].layer, Layer::Rlimit);
    }
}
