//! Explaining denials and recording use, on a command's seccomp notifications.
//!
//! ```text
//!   notification ──Explain──▶ run the policy's own filter on the call (cBPF, as the kernel)
//!        │                      ├─ ALLOW/LOG: a watched call? predict landlock (rules, path,
//!        │                      │             rights) ▶ record; let it run (CONTINUE)
//!        │                      ├─ ERRNO e:   record the call ▶ fail it with e
//!        │                      └─ NOTIFY/KILL/TRAP: a violation ▶ the caller kills the request
//!        └────────Learn───────▶ record the call, its path and rights, its address ▶ CONTINUE
//! ```
//!
//! The answers are exactly the policy's: an explaining shim never lets a call run that the
//! policy would fail, and the kernel still enforces landlock on every call it lets run. What
//! the guest's memory held for a path can change once the call runs (another thread may
//! rewrite it): recorded paths are what the call asked for, reports are explanations, not
//! evidence.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use hatchery_protocol::{
    Bytes, Explain, LandlockEnforced, LandlockPlan, Observed, Outcome, RawDenial, Refused, Report,
    UsedPath, MAX_REPORT_ENTRIES, MAX_REPORT_PATH,
};
use hatchery_sys::seccomp::{self as sc, Notif, SeccompData};

// LANDLOCK_ACCESS_FS_*.
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
// LANDLOCK_ACCESS_NET_*, LANDLOCK_SCOPE_*.
const BIND_TCP: u64 = 1;
const CONNECT_TCP: u64 = 2;
const SCOPE_ABSTRACT: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;

// SECCOMP_RET_*.
const RET_ACTION: u32 = 0xffff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// What a handled notification asks of the caller.
pub(crate) enum Handled {
    /// Answered (run or failed as the policy says).
    Answered,
    /// A violation: the caller kills the request, then denies notification `id`.
    Violation(Outcome, u64),
}

/// The landlock rules, as an explaining shim predicts them.
struct Model {
    handled_fs: u64,
    handled_net: u64,
    scoped: u64,
    /// Canonical rule paths with their rights.
    paths: Vec<(PathBuf, u64)>,
    ports: Vec<(u16, u64)>,
}

/// One request's explaining or recording supervisor.
pub(crate) struct Explainer {
    original: Option<Vec<u64>>,
    model: Option<Model>,
    denials: HashMap<Refused, u32>,
    order: Vec<Refused>,
    learn: bool,
    syscalls: HashMap<i32, u32>,
    paths: HashMap<Vec<u8>, (u64, bool)>,
    path_order: Vec<Vec<u8>>,
    families: BTreeSet<i32>,
    ports: BTreeSet<(u16, bool)>,
    bound_abstract: HashSet<Vec<u8>>,
    dropped: u32,
    /// Watched calls predicted or recorded so far, and the time that took (see
    /// [`MAX_PREDICTED`], [`MAX_PREDICTING`]).
    predicted: u32,
    spent: std::time::Duration,
}

impl Explainer {
    /// The supervisor a plan asks for, if any: `landlock` with what the kernel enforces of it.
    pub(crate) fn new(
        explain: &Explain,
        landlock: Option<&LandlockPlan>,
        enforced: Option<LandlockEnforced>,
    ) -> Option<Explainer> {
        let (original, learn) = match explain {
            Explain::Off => return None,
            Explain::Explain { original } => (Some(original.clone()), false),
            Explain::Learn => (None, true),
        };
        let model = match (landlock, enforced) {
            (Some(p), Some(e)) if !learn => Some(Model {
                handled_fs: p.handled_fs & e.fs,
                handled_net: p.handled_net & e.net,
                scoped: p.scoped & e.scoped,
                paths: p
                    .fs_rules
                    .iter()
                    .map(|r| {
                        let path = Path::new(OsStr::from_bytes(&r.path.0));
                        (
                            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
                            r.access,
                        )
                    })
                    .collect(),
                ports: p.net_rules.iter().map(|r| (r.port, r.access)).collect(),
            }),
            _ => None,
        };
        Some(Explainer {
            original,
            model,
            denials: HashMap::new(),
            order: Vec::new(),
            learn,
            syscalls: HashMap::new(),
            paths: HashMap::new(),
            path_order: Vec::new(),
            families: BTreeSet::new(),
            ports: BTreeSet::new(),
            bound_abstract: HashSet::new(),
            dropped: 0,
            predicted: 0,
            spent: std::time::Duration::ZERO,
        })
    }

    /// Receives one pending notification and answers it, unless it is a violation. `None`
    /// when nothing was pending.
    pub(crate) fn receive(&mut self, listener: &OwnedFd) -> Option<Handled> {
        let n = sc::notif_recv(listener.as_fd()).ok()?;
        let answered = |r: Result<(), i32>| {
            let _ = r; // ENOENT: the caller died meanwhile
            Some(Handled::Answered)
        };
        if self.learn {
            // Recording is for trusted samples: no budget (its lists are bounded).
            if Some(n.data.arch) == hatchery_sys::seccomp::native_audit_arch() {
                self.record(&n);
            }
            return answered(sc::notif_continue(listener.as_fd(), n.id));
        }
        let ret = self
            .original
            .as_deref()
            .map_or(RET_ALLOW, |p| sc::evaluate(p, &n.data));
        // Another architecture's call numbers mean other calls: answered, never explained.
        let native = Some(n.data.arch) == hatchery_sys::seccomp::native_audit_arch();
        match ret & RET_ACTION {
            RET_ALLOW | RET_LOG => {
                if native && self.take_budget() {
                    let t = std::time::Instant::now();
                    self.predict(&n);
                    self.spent += t.elapsed();
                }
                answered(sc::notif_continue(listener.as_fd(), n.id))
            }
            RET_ERRNO | RET_TRACE => {
                // Trace without a tracer (a sandboxed command never has one) is ENOSYS.
                let errno = if ret & RET_ACTION == RET_ERRNO {
                    (ret & 0xffff) as i32
                } else {
                    libc::ENOSYS
                };
                let nr = n.data.nr;
                let arg0 = [libc::SYS_socket, libc::SYS_clone, libc::SYS_personality]
                    .contains(&i64::from(nr))
                    .then_some(n.data.args[0]);
                if native {
                    self.deny(Refused::Syscall { nr, errno, arg0 });
                }
                answered(sc::notif_deny(listener.as_fd(), n.id, errno))
            }
            _ => Some(Handled::Violation(
                Outcome::Violation {
                    syscall: String::new(),
                    nr: i64::from(n.data.nr),
                    args: n.data.args,
                },
                n.id,
            )),
        }
    }

    /// Whether one more watched call may be predicted or recorded (see [`MAX_PREDICTED`]).
    fn take_budget(&mut self) -> bool {
        if self.predicted < MAX_PREDICTED && self.spent < MAX_PREDICTING {
            self.predicted += 1;
            true
        } else {
            self.dropped = self.dropped.saturating_add(1);
            false
        }
    }

    fn deny(&mut self, what: Refused) {
        if let Some(c) = self.denials.get_mut(&what) {
            *c = c.saturating_add(1);
        } else if self.order.len() < MAX_REPORT_ENTRIES {
            self.order.push(what.clone());
            self.denials.insert(what, 1);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The report for the host.
    pub(crate) fn report(&self) -> Report {
        let denials = self
            .order
            .iter()
            .map(|w| RawDenial {
                what: w.clone(),
                count: self.denials.get(w).copied().unwrap_or(1),
            })
            .collect();
        let observed = self.learn.then(|| {
            let mut syscalls: Vec<(i32, u32)> =
                self.syscalls.iter().map(|(k, v)| (*k, *v)).collect();
            syscalls.sort_unstable();
            Observed {
                syscalls,
                paths: self
                    .path_order
                    .iter()
                    .map(|p| {
                        let (access, exists) = self.paths[p];
                        UsedPath {
                            path: Bytes(p.clone()),
                            access,
                            exists,
                        }
                    })
                    .collect(),
                families: self.families.iter().copied().collect(),
                ports: self.ports.iter().copied().collect(),
            }
        });
        Report {
            denials,
            observed,
            dropped: self.dropped,
        }
    }

    /// Learn mode: what the call uses.
    fn record(&mut self, n: &Notif) {
        let nr = n.data.nr;
        let c = self.syscalls.entry(nr).or_insert(0);
        *c = c.saturating_add(1);
        let pid = n.pid as libc::pid_t;
        if i64::from(nr) == libc::SYS_socket {
            self.families.insert(n.data.args[0] as i32);
        }
        if let Some(a) = address(pid, &n.data) {
            if let Address::Inet { port, connect } = a {
                self.ports.insert((port, connect));
            }
            return;
        }
        let links = RefCell::new(Vec::new());
        let mut needs = path_needs(pid, &n.data, &links);
        // The links passed must be there too (a profile mounts where they are).
        needs.extend(links.into_inner().into_iter().map(|path| Need {
            path,
            access: 0,
            exists: true,
        }));
        for need in needs {
            let key = need.path.as_os_str().as_bytes().to_vec();
            match self.paths.get_mut(&key) {
                Some((access, exists)) => {
                    *access |= need.access;
                    *exists |= need.exists;
                }
                None if self.path_order.len() < 4 * MAX_REPORT_ENTRIES => {
                    self.path_order.push(key.clone());
                    self.paths.insert(key, (need.access, need.exists));
                }
                None => self.dropped = self.dropped.saturating_add(1),
            }
        }
    }

    /// Explain mode: what landlock (as the model predicts it) refuses of an allowed call.
    fn predict(&mut self, n: &Notif) {
        let pid = n.pid as libc::pid_t;
        let nr = n.data.nr;
        let Some(model) = &self.model else {
            // No landlock: only absent paths are worth telling.
            for need in path_needs(pid, &n.data, &RefCell::default()) {
                if !need.exists {
                    self.deny(Refused::Absent {
                        path: bytes_of(&need.path),
                    });
                } else if need.access & WRITING != 0 && read_only(pid, &need.path) {
                    self.deny(Refused::ReadOnly {
                        path: bytes_of(&need.path),
                    });
                    break;
                }
            }
            return;
        };
        match address(pid, &n.data) {
            Some(Address::Inet { port, connect }) => {
                let right = if connect { CONNECT_TCP } else { BIND_TCP };
                let granted = model
                    .ports
                    .iter()
                    .any(|(p, a)| *p == port && a & right != 0);
                if model.handled_net & right != 0 && !granted {
                    self.deny(Refused::Port { port, connect });
                }
                return;
            }
            Some(Address::Abstract { name, connect }) => {
                if !connect {
                    if self.bound_abstract.len() < MAX_REPORT_ENTRIES {
                        self.bound_abstract.insert(name);
                    }
                } else if model.scoped & SCOPE_ABSTRACT != 0 && !self.bound_abstract.contains(&name)
                {
                    self.deny(Refused::Scope {
                        signal: false,
                        name: Bytes(name),
                    });
                }
                return;
            }
            Some(Address::Other) => return,
            None => {}
        }
        if [libc::SYS_kill, libc::SYS_tkill, libc::SYS_tgkill].contains(&i64::from(nr)) {
            // The shim is PID 1 of the command's pid namespace, outside its domain.
            // kill(pid, sig), tkill(tid, sig), tgkill(tgid, tid, sig).
            let sig = if i64::from(nr) == libc::SYS_tgkill {
                n.data.args[2]
            } else {
                n.data.args[1]
            };
            let target = n.data.args[0] as i32;
            if model.scoped & SCOPE_SIGNAL != 0 && target == 1 && sig != 0 {
                self.deny(Refused::Scope {
                    signal: true,
                    name: Bytes(b"1".to_vec()),
                });
            }
            return;
        }
        let mut refused = Vec::new();
        for need in path_needs(pid, &n.data, &RefCell::default()) {
            if !need.exists {
                refused.push(Refused::Absent {
                    path: bytes_of(&need.path),
                });
                break; // the call fails there
            }
            if need.access & WRITING != 0 && read_only(pid, &need.path) {
                // The mount refuses it before landlock is asked.
                refused.push(Refused::ReadOnly {
                    path: bytes_of(&need.path),
                });
                break; // the call fails there: its other paths are not reached
            }
            let granted = model
                .paths
                .iter()
                .filter(|(p, _)| need.path.starts_with(p))
                .fold(0, |acc, (_, a)| acc | a);
            let access = need.access & model.handled_fs & !granted;
            if access != 0 {
                refused.push(Refused::Path {
                    path: bytes_of(&need.path),
                    access,
                    nr,
                });
            }
        }
        for r in refused {
            self.deny(r);
        }
    }
}

/// Rights that change the file system (a read-only mount refuses them).
const WRITING: u64 = WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_CHAR
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_BLOCK
    | MAKE_SYM
    | TRUNCATE;

/// The mount holding `path` (or, for a path not there yet, its nearest existing parent) is
/// read-only.
fn read_only(pid: libc::pid_t, path: &Path) -> bool {
    // A few levels up at most, and only past missing entries: anything else (ELOOP from a
    // link the guest swapped in meanwhile) ends the look.
    for q in path.ancestors().take(4) {
        match nix::sys::statvfs::statvfs(&in_root(pid, q)) {
            Ok(st) => return st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn bytes_of(p: &Path) -> Bytes {
    let b = p.as_os_str().as_bytes();
    if b.len() > MAX_REPORT_PATH {
        let mut v = b[..MAX_REPORT_PATH].to_vec();
        v.extend_from_slice("…".as_bytes());
        Bytes(v)
    } else {
        Bytes(b.to_vec())
    }
}

/// A socket address a `connect` or `bind` names.
enum Address {
    /// TCP (landlock's network rights are TCP's only).
    Inet { port: u16, connect: bool },
    /// An abstract unix socket's name.
    Abstract { name: Vec<u8>, connect: bool },
    /// Anything else (UDP, a path socket, another family).
    Other,
}

/// The address of a `connect`/`bind` call, `None` for other calls.
fn address(pid: libc::pid_t, d: &SeccompData) -> Option<Address> {
    let nr = i64::from(d.nr);
    let connect = match nr {
        libc::SYS_connect => true,
        libc::SYS_bind => false,
        _ => return None,
    };
    let len = (d.args[2] as usize).min(128);
    let mut buf = vec![0u8; len];
    let n = sc::read_memory(pid, d.args[1], &mut buf).unwrap_or(0);
    if n < 4 {
        return Some(Address::Other);
    }
    let family = i32::from(u16::from_ne_bytes([buf[0], buf[1]]));
    match family {
        libc::AF_INET | libc::AF_INET6 => {
            // Landlock's network rights are TCP's (and MPTCP's) only.
            let tcp = hatchery_sys::fs::socket_protocol(Path::new(&format!(
                "/proc/{pid}/fd/{}",
                d.args[0] as i32
            )))
            .is_some_and(|p| matches!(p.as_str(), "TCP" | "TCPv6" | "MPTCP" | "MPTCPv6"));
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            Some(if tcp {
                Address::Inet { port, connect }
            } else {
                Address::Other
            })
        }
        libc::AF_UNIX if n > 2 && buf[2] == 0 => Some(Address::Abstract {
            name: buf[3..n].to_vec(),
            connect,
        }),
        _ => Some(Address::Other),
    }
}

/// One path a call reaches, with the rights it needs there.
struct Need {
    path: PathBuf,
    access: u64,
    exists: bool,
}

/// The paths a call reaches and the landlock rights each needs (none for other calls), and
/// the symbolic links passed on the way (into `links`).
fn path_needs(pid: libc::pid_t, d: &SeccompData, links: &RefCell<Vec<PathBuf>>) -> Vec<Need> {
    let a = d.args;
    let at = |dirfd: u64, ptr: u64| resolve(pid, dirfd as i32, ptr, links);
    let cwd = libc::AT_FDCWD as u64;
    let nr = i64::from(d.nr);
    let mut out = Vec::new();
    let mut open = |path: Option<PathBuf>, flags: u64| {
        if let Some(p) = path {
            out.extend(open_needs(pid, p, flags as i32));
        }
    };
    match nr {
        libc::SYS_open => open(at(cwd, a[0]), a[1]),
        libc::SYS_creat => open(
            at(cwd, a[0]),
            (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
        ),
        libc::SYS_openat => open(at(a[0], a[1]), a[2]),
        libc::SYS_openat2 => {
            let mut how = [0u8; 8];
            let flags = match sc::read_memory(pid, a[2], &mut how) {
                Ok(8) => u64::from_ne_bytes(how),
                _ => 0,
            };
            open(at(a[0], a[1]), flags)
        }
        _ => {
            let mut leaf = |path: Option<PathBuf>, access: u64| {
                if let Some(p) = path {
                    let exists = exists(pid, &p, false);
                    out.push(Need {
                        path: p,
                        access,
                        exists,
                    });
                }
            };
            match nr {
                libc::SYS_execve => leaf(at(cwd, a[0]), EXECUTE),
                libc::SYS_execveat if a[4] & libc::AT_EMPTY_PATH as u64 == 0 => {
                    leaf(at(a[0], a[1]), EXECUTE)
                }
                libc::SYS_truncate => leaf(at(cwd, a[0]), TRUNCATE),
                // Lookups: no right needed; they tell absent paths.
                libc::SYS_stat | libc::SYS_lstat | libc::SYS_access | libc::SYS_chdir => {
                    leaf(at(cwd, a[0]), 0)
                }
                libc::SYS_newfstatat
                | libc::SYS_statx
                | libc::SYS_faccessat
                | libc::SYS_faccessat2 => {
                    // An empty path (AT_EMPTY_PATH) looks at the fd itself.
                    if let Some(p) = at(a[0], a[1]).filter(|_| !empty_path(pid, a[1])) {
                        leaf(Some(p), 0)
                    }
                }
                libc::SYS_mkdir => parent(&mut out, pid, at(cwd, a[0]), MAKE_DIR),
                libc::SYS_mkdirat => parent(&mut out, pid, at(a[0], a[1]), MAKE_DIR),
                libc::SYS_mknod => parent(&mut out, pid, at(cwd, a[0]), make_right(a[1])),
                libc::SYS_mknodat => parent(&mut out, pid, at(a[0], a[1]), make_right(a[2])),
                libc::SYS_unlink => parent(&mut out, pid, at(cwd, a[0]), REMOVE_FILE),
                libc::SYS_rmdir => parent(&mut out, pid, at(cwd, a[0]), REMOVE_DIR),
                libc::SYS_unlinkat => {
                    let right = if a[2] & libc::AT_REMOVEDIR as u64 != 0 {
                        REMOVE_DIR
                    } else {
                        REMOVE_FILE
                    };
                    parent(&mut out, pid, at(a[0], a[1]), right)
                }
                libc::SYS_symlink => parent(&mut out, pid, at(cwd, a[1]), MAKE_SYM),
                libc::SYS_symlinkat => parent(&mut out, pid, at(a[1], a[2]), MAKE_SYM),
                libc::SYS_rename => moved(&mut out, pid, at(cwd, a[0]), at(cwd, a[1]), true),
                libc::SYS_renameat | libc::SYS_renameat2 => {
                    moved(&mut out, pid, at(a[0], a[1]), at(a[2], a[3]), true)
                }
                libc::SYS_link => moved(&mut out, pid, at(cwd, a[0]), at(cwd, a[1]), false),
                libc::SYS_linkat => moved(&mut out, pid, at(a[0], a[1]), at(a[2], a[3]), false),
                _ => {}
            }
        }
    }
    out
}

/// The string at `ptr` is empty (or unreadable).
fn empty_path(pid: libc::pid_t, ptr: u64) -> bool {
    let mut b = [0u8; 1];
    !matches!(sc::read_memory(pid, ptr, &mut b), Ok(1) if b[0] != 0)
}

/// `MAKE_*` of an `mknod` mode.
fn make_right(mode: u64) -> u64 {
    match mode as u32 & libc::S_IFMT {
        libc::S_IFCHR => MAKE_CHAR,
        libc::S_IFBLK => MAKE_BLOCK,
        libc::S_IFIFO => MAKE_FIFO,
        libc::S_IFSOCK => MAKE_SOCK,
        _ => MAKE_REG,
    }
}

/// A right needed on the directory that holds `path`.
fn parent(out: &mut Vec<Need>, pid: libc::pid_t, path: Option<PathBuf>, access: u64) {
    let Some(p) = path else { return };
    if let Some(dir) = p.parent() {
        out.push(Need {
            path: dir.to_path_buf(),
            access,
            exists: exists(pid, dir, true),
        });
    }
}

/// `rename` (`remove`: the source leaves its directory) or `link` from `from` to `to`.
fn moved(
    out: &mut Vec<Need>,
    pid: libc::pid_t,
    from: Option<PathBuf>,
    to: Option<PathBuf>,
    remove: bool,
) {
    let (Some(from), Some(to)) = (from, to) else {
        return;
    };
    let dir = is_dir(pid, &from);
    let make = if dir { MAKE_DIR } else { MAKE_REG };
    let refer = if from.parent() != to.parent() {
        REFER
    } else {
        0
    };
    if remove {
        let right = if dir { REMOVE_DIR } else { REMOVE_FILE };
        parent(out, pid, Some(from), right | refer);
    }
    parent(out, pid, Some(to), make | refer);
}

/// The rights an `open` with `flags` needs: on the file, or, creating it, on its directory too.
fn open_needs(pid: libc::pid_t, path: PathBuf, flags: i32) -> Vec<Need> {
    if flags & libc::O_PATH != 0 {
        return Vec::new(); // landlock does not check O_PATH opens
    }
    let exists = exists(pid, &path, false);
    let mut access = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => WRITE_FILE,
        libc::O_RDWR => READ_FILE | WRITE_FILE,
        _ if exists && is_dir(pid, &path) => READ_DIR,
        _ => READ_FILE,
    };
    // O_TRUNC truncates (and landlock checks it) only for an existing regular file.
    if flags & libc::O_TRUNC != 0
        && flags & libc::O_ACCMODE != libc::O_RDONLY
        && exists
        && std::fs::metadata(in_root(pid, &path)).is_ok_and(|m| m.is_file())
    {
        access |= TRUNCATE;
    }
    let mut out = Vec::new();
    if !exists && flags & libc::O_CREAT != 0 {
        parent(&mut out, pid, Some(path.clone()), MAKE_REG);
        if out.first().is_some_and(|p| !p.exists) {
            return out; // no directory to create it in
        }
        out.push(Need {
            path,
            access,
            exists: true, // created by this call
        });
        return out;
    }
    out.push(Need {
        path,
        access,
        exists,
    });
    out
}

/// `path` (absolute, inside `pid`'s root) exists; a directory, with `dir`.
fn exists(pid: libc::pid_t, path: &Path, dir: bool) -> bool {
    std::fs::metadata(in_root(pid, path)).is_ok_and(|m| !dir || m.is_dir())
}

fn is_dir(pid: libc::pid_t, path: &Path) -> bool {
    exists(pid, path, true)
}

/// `path` seen through `pid`'s root (`/proc/PID/root/…`).
fn in_root(pid: libc::pid_t, path: &Path) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/{pid}/root"));
    p.push(path.strip_prefix("/").unwrap_or(path));
    p
}

/// The absolute, canonical path a call's `(dirfd, pathname)` names, as the caller sees it:
/// relative paths against its working directory or `dirfd`, symbolic links resolved in its
/// root (all but a last component that does not exist).
fn resolve(
    pid: libc::pid_t,
    dirfd: i32,
    ptr: u64,
    links: &RefCell<Vec<PathBuf>>,
) -> Option<PathBuf> {
    let (raw, _cut) = sc::read_c_string(pid, ptr, 4096).ok()?;
    let given = Path::new(OsStr::from_bytes(&raw));
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?
        } else {
            std::fs::read_link(format!("/proc/{pid}/fd/{dirfd}")).ok()?
        };
        base.join(given)
    };
    canonical(pid, &joined, links)
}

/// Components [`canonical`] resolves per path, symbolic links' included.
const MAX_RESOLVE_STEPS: usize = 96;

/// Watched calls a request's explainer predicts landlock for (and records, learning); past it
/// calls are still answered exactly as the policy says, without the prediction, and counted as
/// dropped. Bounds what one request's calls cost the shim, which serves other requests too.
const MAX_PREDICTED: u32 = 50_000;

/// Shim time a request's predictions and records may take in all (see [`MAX_PREDICTED`]).
const MAX_PREDICTING: std::time::Duration = std::time::Duration::from_secs(1);

/// `path` with `.`/`..` and symbolic links resolved inside `pid`'s root, as far as it exists;
/// the rest appended as given.
fn canonical(pid: libc::pid_t, path: &Path, links: &RefCell<Vec<PathBuf>>) -> Option<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut out = PathBuf::from("/");
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut followed = 0;
    // Each step is an lstat that walks the prefix again: bounded, so a guest's deep paths and
    // long link chains cost the shim little (past the bound, the rest is appended as given).
    let mut steps = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            out.pop();
            continue;
        }
        steps += 1;
        if steps > MAX_RESOLVE_STEPS || out.as_os_str().len() > MAX_REPORT_PATH {
            // Past the bound nothing is predicted: the rest, unresolved, would have the kernel
            // follow whatever links the guest put there on every later lookup.
            return None;
        }
        let next = out.join(&name);
        let on_host = root.join(next.strip_prefix("/").unwrap_or(&next));
        match std::fs::symlink_metadata(&on_host) {
            Ok(m) if m.file_type().is_symlink() => {
                if followed >= 40 {
                    return None; // ELOOP for the caller too
                }
                followed += 1;
                links.borrow_mut().push(next.clone());
                let Ok(target) = std::fs::read_link(&on_host) else {
                    out = next;
                    continue;
                };
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => out = next,
            Err(_) => {
                // Not there: the rest as given.
                out = next;
                while let Some(rest) = pending.pop() {
                    if rest == ".." {
                        out.pop();
                    } else {
                        out.push(rest);
                    }
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resolves_links_and_dots_in_the_callers_root() {
        let me = std::process::id() as libc::pid_t;
        let dir = std::env::temp_dir().join(format!("hatchery-canon-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", dir.join("link")).unwrap();
        let links = RefCell::default();
        let got = canonical(me, &dir.join("link/./sub/../sub/new/x"), &links).unwrap();
        assert_eq!(
            got,
            std::fs::canonicalize(&dir).unwrap().join("real/sub/new/x")
        );
        assert_eq!(links.into_inner(), vec![dir.join("link")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_rights() {
        let me = std::process::id() as libc::pid_t;
        let n = open_needs(me, PathBuf::from("/"), libc::O_RDONLY);
        assert_eq!(n[0].access, READ_DIR);
        let new = std::env::temp_dir().join(format!("hatchery-new-{me}"));
        let n = open_needs(me, new.clone(), libc::O_WRONLY | libc::O_CREAT);
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].access, n[0].exists), (MAKE_REG, true));
        assert_eq!((n[1].access, n[1].exists), (WRITE_FILE, true));
        // No directory to create it in: only that is told.
        let n = open_needs(me, new.join("x"), libc::O_WRONLY | libc::O_CREAT);
        assert_eq!(n.len(), 1);
        assert!(!n[0].exists);
        assert!(open_needs(me, PathBuf::from("/"), libc::O_PATH).is_empty());
        assert_eq!(make_right(libc::S_IFIFO as u64), MAKE_FIFO);
    }
}
