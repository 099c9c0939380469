//! Landlock policies as data (the API of hakoniwa's `landlock::Ruleset`), turned into a
//! [`LandlockPlan`] for the shim, which builds a domain per command in the fork boundary.
//!
//! ```text
//!  Ruleset { restricted resources + compat mode, fs rules, port rules, scopes }
//!     + rules derived from the container's mounts (read-only binds: read + execute,
//!       writable mounts: read + write + execute, /dev: read + write + device ioctls,
//!       /proc: read, placed files: read, the root: list directories)
//!     ──▶ LandlockPlan (rights of the targeted ABI) ──▶ shim: checked against the kernel's ABI
//!         once (best effort drops what it lacks, enforce fails the setup), then per command:
//!         create ruleset, add rules, landlock_restrict_self, right before seccomp and exec
//! ```
//!
//! The targeted ABI is pinned at 6 (Linux 6.12): filesystem rights through device ioctls, TCP
//! bind/connect, and scoping of signals and abstract unix sockets. Each command gets a domain
//! of its own, so it cannot signal or connect to the abstract sockets of its siblings, its
//! zygote or the host.

use std::collections::BTreeMap;
use std::ops::BitOr;

use hatchery_protocol::{Bytes, LandlockPathRule, LandlockPlan, LandlockPortRule};

/// The landlock ABI these policies are written for.
pub const TARGET_ABI: u32 = 6;

const EXECUTE: u64 = 1;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const IOCTL_DEV: u64 = 1 << 15;
/// Every filesystem right of ABI 6.
const ALL_FS: u64 = (1 << 16) - 1;
/// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`.
pub(crate) const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;

/// Filesystem access granted beneath a path. Combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsAccess(u64);

impl FsAccess {
    /// Read files and list directories.
    pub const R: FsAccess = FsAccess(READ_FILE | READ_DIR);
    /// Write, create, remove, rename, link and truncate, and device ioctls.
    pub const W: FsAccess = FsAccess(ALL_FS & !(EXECUTE | READ_FILE | READ_DIR));
    /// Execute files.
    pub const X: FsAccess = FsAccess(EXECUTE);

    /// The raw `LANDLOCK_ACCESS_FS_*` bits.
    pub fn bits(self) -> u64 {
        self.0
    }
}

impl FsAccess {
    /// No access.
    pub const fn empty() -> FsAccess {
        FsAccess(0)
    }

    /// Whether every right of `other` is in `self`.
    pub fn contains(self, other: FsAccess) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for FsAccess {
    type Output = FsAccess;
    fn bitor(self, rhs: FsAccess) -> FsAccess {
        FsAccess(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for FsAccess {
    fn bitor_assign(&mut self, rhs: FsAccess) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Display for FsAccess {
    /// hakoniwa's form: `r`, `w` and `x` or `-` in that order (`r-x`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (bit, c) in [(FsAccess::R, 'r'), (FsAccess::W, 'w'), (FsAccess::X, 'x')] {
            let on = self.0 & bit.0 != 0;
            std::fmt::Write::write_char(f, if on { c } else { '-' })?;
        }
        Ok(())
    }
}

/// An access string that is not made of `r`, `w`, `x` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("landlock: unknown access {0:?} (use r, w, x or -, e.g. \"r-x\")")]
pub struct ParseAccessError(pub char);

impl std::str::FromStr for FsAccess {
    type Err = ParseAccessError;

    /// hakoniwa's form: any of `r`, `w`, `x` (either case) and `-`, e.g. `rw-` or `rx`.
    fn from_str(s: &str) -> Result<FsAccess, ParseAccessError> {
        let mut access = FsAccess::empty();
        for c in s.chars() {
            match c.to_ascii_lowercase() {
                'r' => access |= FsAccess::R,
                'w' => access |= FsAccess::W,
                'x' => access |= FsAccess::X,
                '-' => {}
                other => return Err(ParseAccessError(other)),
            }
        }
        Ok(access)
    }
}

/// A path rule of a [`Ruleset`], as hakoniwa shows it (`r-x /usr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    /// The path inside the container.
    pub path: String,
    /// The access granted beneath it.
    pub mode: FsAccess,
}

impl std::fmt::Display for FsRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.mode, self.path)
    }
}

/// A port rule of a [`Ruleset`], as hakoniwa shows it (`tcp.connect 443`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    /// The TCP port.
    pub port: u16,
    /// The access granted on it.
    pub access: NetAccess,
}

impl std::fmt::Display for NetRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.access.name(), self.port)
    }
}

/// Network access granted on a TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetAccess {
    /// `bind(2)` to the port.
    TcpBind,
    /// `connect(2)` to the port.
    TcpConnect,
}

impl NetAccess {
    /// hakoniwa's name of [`NetAccess::TcpBind`].
    pub const TCP_BIND: NetAccess = NetAccess::TcpBind;
    /// hakoniwa's name of [`NetAccess::TcpConnect`].
    pub const TCP_CONNECT: NetAccess = NetAccess::TcpConnect;

    /// `tcp.bind` or `tcp.connect`, as hakoniwa names them.
    pub fn name(self) -> &'static str {
        match self {
            NetAccess::TcpBind => "tcp.bind",
            NetAccess::TcpConnect => "tcp.connect",
        }
    }

    fn bits(self) -> u64 {
        match self {
            NetAccess::TcpBind => 1,
            NetAccess::TcpConnect => 2,
        }
    }
}

/// What a ruleset can restrict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Resource {
    /// File-system access: denied unless a rule (or a mount) grants it.
    Fs,
    /// Binding TCP ports.
    TcpBind,
    /// Connecting to TCP ports.
    TcpConnect,
    /// Signals and abstract unix sockets reaching outside the command's own domain.
    Scope,
}

#[allow(non_upper_case_globals)]
impl Resource {
    /// hakoniwa's name of [`Resource::Fs`].
    pub const FS: Resource = Resource::Fs;
    /// hakoniwa's name of [`Resource::TcpBind`].
    pub const NET_TCP_BIND: Resource = Resource::TcpBind;
    /// hakoniwa's name of [`Resource::TcpConnect`].
    pub const NET_TCP_CONNECT: Resource = Resource::TcpConnect;

    /// `fs`, `tcp.bind`, `tcp.connect` (as hakoniwa names them) or `scope`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Fs => "fs",
            Resource::TcpBind => "tcp.bind",
            Resource::TcpConnect => "tcp.connect",
            Resource::Scope => "scope",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens when the kernel cannot enforce a restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompatMode {
    /// The container fails to start (`SetupStep::Landlock`).
    Enforce,
    /// Enforce what the kernel can, and report it (`Child::features`, pool metrics).
    BestEffort,
}

#[allow(non_upper_case_globals)]
impl CompatMode {
    /// hakoniwa's name of [`CompatMode::BestEffort`].
    pub const Relax: CompatMode = CompatMode::BestEffort;
}

/// What a path of the container is, for the rules that mirror its mounts (see the module
/// diagram). The container describes its paths in these terms; the rights each gets are
/// decided here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mirror {
    /// The root when it is the shim's own tmpfs: directories can be listed, nothing more.
    TmpfsRoot,
    /// Read-only (a read-only bind, tmpfs or root directory): read and execute.
    ReadOnly,
    /// Writable (a writable bind, tmpfs or root directory): every right.
    Writable,
    /// A procfs: read.
    Proc,
    /// A minimal `/dev`: read, write and device ioctls; its `shm` is writable.
    Dev,
    /// A placed file: read, and execute when a mode bit allows it.
    File {
        /// Any of the mode's execute bits is set.
        executable: bool,
    },
    /// A created directory: read.
    Dir,
}

impl Mirror {
    fn access(self) -> u64 {
        let rx = READ_FILE | READ_DIR | EXECUTE;
        match self {
            Mirror::TmpfsRoot => READ_DIR,
            Mirror::ReadOnly => rx,
            Mirror::Writable => ALL_FS,
            Mirror::Proc | Mirror::Dir => READ_FILE | READ_DIR,
            Mirror::Dev => READ_FILE | READ_DIR | WRITE_FILE | IOCTL_DEV,
            Mirror::File { executable } => READ_FILE | if executable { EXECUTE } else { 0 },
        }
    }
}

/// A landlock policy. Empty by default (restricts nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    restricted: BTreeMap<Resource, CompatMode>,
    fs_rules: Vec<(String, FsAccess)>,
    net_rules: Vec<(u16, NetAccess)>,
}

impl Ruleset {
    /// An empty ruleset.
    pub fn new() -> Ruleset {
        Ruleset::default()
    }

    /// Restricts `resource`.
    pub fn restrict(&mut self, resource: Resource, mode: CompatMode) -> &mut Self {
        self.restricted.insert(resource, mode);
        self
    }

    /// Restricts the file system, TCP bind and connect, and scopes signals and abstract unix
    /// sockets to the command's own domain.
    pub fn restrict_all(&mut self, mode: CompatMode) -> &mut Self {
        for r in [
            Resource::Fs,
            Resource::TcpBind,
            Resource::TcpConnect,
            Resource::Scope,
        ] {
            self.restrict(r, mode);
        }
        self
    }

    /// Grants `access` beneath `path` (a path inside the container; it must exist there).
    pub fn add_fs_rule(&mut self, path: &str, access: FsAccess) -> &mut Self {
        self.fs_rules.push((path.to_string(), access));
        self
    }

    /// Grants `access` on TCP `port`.
    pub fn add_net_rule(&mut self, port: u16, access: NetAccess) -> &mut Self {
        self.net_rules.push((port, access));
        self
    }

    /// Whether `resource` is restricted.
    pub fn restricts(&self, resource: Resource) -> bool {
        self.restricted.contains_key(&resource)
    }

    /// Lifts the restriction of `resource` (hakoniwa's `unrestrict`; its rules stay, unused).
    pub fn unrestrict(&mut self, resource: Resource) -> &mut Self {
        self.restricted.remove(&resource);
        self
    }

    /// hakoniwa's name of [`add_fs_rule`](Ruleset::add_fs_rule). As there, a rule has no effect
    /// unless [`Resource::Fs`] is restricted.
    pub fn allow_path(&mut self, path: &str, access: FsAccess) -> &mut Self {
        self.add_fs_rule(path, access)
    }

    /// Allows binding TCP `port` (effective once [`Resource::TcpBind`] is restricted).
    pub fn allow_tcp_bind(&mut self, port: u16) -> &mut Self {
        self.add_net_rule(port, NetAccess::TcpBind)
    }

    /// Allows connecting to TCP `port` (effective once [`Resource::TcpConnect`] is restricted).
    pub fn allow_tcp_connect(&mut self, port: u16) -> &mut Self {
        self.add_net_rule(port, NetAccess::TcpConnect)
    }

    /// The restricted resources and their compatibility modes.
    pub fn restricted(&self) -> impl Iterator<Item = (Resource, CompatMode)> + '_ {
        self.restricted.iter().map(|(r, m)| (*r, *m))
    }

    /// The path rules, in the order given.
    pub fn fs_rules(&self) -> Vec<FsRule> {
        self.fs_rules
            .iter()
            .map(|(path, mode)| FsRule {
                path: path.clone(),
                mode: *mode,
            })
            .collect()
    }

    /// The port rules, in the order given.
    pub fn net_rules(&self) -> Vec<NetRule> {
        self.net_rules
            .iter()
            .map(|(port, access)| NetRule {
                port: *port,
                access: *access,
            })
            .collect()
    }

    /// The plan for a container whose paths are `mirrored` (its root first, then its mounts
    /// and placed files, in setup order): the explicit rules plus, when the file system is
    /// restricted, one rule per mirrored path.
    pub(crate) fn plan<'a>(
        &self,
        mirrored: impl IntoIterator<Item = (&'a str, Mirror)>,
    ) -> LandlockPlan {
        let mut plan = LandlockPlan {
            required: self.restricted.values().any(|m| *m == CompatMode::Enforce),
            ..LandlockPlan::default()
        };
        let rule = |path: &str, access: u64| LandlockPathRule {
            path: Bytes(path.as_bytes().to_vec()),
            access,
        };
        if self.restricts(Resource::Fs) {
            plan.handled_fs = ALL_FS;
            for (path, m) in mirrored {
                plan.fs_rules.push(rule(path, m.access()));
                if m == Mirror::Dev {
                    // Its shm is a private tmpfs of every request.
                    plan.fs_rules
                        .push(rule(&format!("{path}/shm"), ALL_FS & !EXECUTE));
                }
            }
            for (path, access) in &self.fs_rules {
                plan.fs_rules.push(rule(path, access.bits()));
            }
        }
        for (res, bit) in [(Resource::TcpBind, 1), (Resource::TcpConnect, 2)] {
            if self.restricts(res) {
                plan.handled_net |= bit;
            }
        }
        for (port, access) in &self.net_rules {
            if plan.handled_net & access.bits() != 0 {
                plan.net_rules.push(LandlockPortRule {
                    port: *port,
                    access: access.bits(),
                });
            }
        }
        if self.restricts(Resource::Scope) {
            plan.scoped = 0b11;
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_paths_become_rules() {
        let mirrored = [
            ("/", Mirror::TmpfsRoot),
            ("/data", Mirror::Writable),
            ("/dev", Mirror::Dev),
            ("/proc", Mirror::Proc),
            ("/tmp", Mirror::Writable),
            ("/usr", Mirror::ReadOnly),
            ("/etc/passwd", Mirror::File { executable: false }),
            ("/bin/tool", Mirror::File { executable: true }),
            ("/var", Mirror::Dir),
        ];
        let mut r = Ruleset::new();
        r.restrict_all(CompatMode::BestEffort)
            .add_net_rule(8080, NetAccess::TcpConnect)
            .add_fs_rule("/extra", FsAccess::R);
        let plan = r.plan(mirrored);
        let access = |p: &str| {
            plan.fs_rules
                .iter()
                .find(|r| r.path.0 == p.as_bytes())
                .map(|r| r.access)
        };
        assert_eq!(access("/"), Some(READ_DIR));
        assert_eq!(access("/usr"), Some(READ_FILE | READ_DIR | EXECUTE));
        assert_eq!(access("/data"), Some(ALL_FS));
        assert_eq!(access("/tmp"), Some(ALL_FS));
        assert_eq!(access("/proc"), Some(READ_FILE | READ_DIR));
        assert_eq!(
            access("/dev"),
            Some(READ_FILE | READ_DIR | WRITE_FILE | IOCTL_DEV)
        );
        assert_eq!(access("/dev/shm"), Some(ALL_FS & !EXECUTE));
        assert_eq!(access("/etc/passwd"), Some(READ_FILE));
        assert_eq!(access("/bin/tool"), Some(READ_FILE | EXECUTE));
        assert_eq!(access("/var"), Some(READ_FILE | READ_DIR));
        assert_eq!(access("/extra"), Some(FsAccess::R.bits()));
        // Mirrored paths first, in order, then the explicit rules.
        assert_eq!(plan.fs_rules.first().unwrap().path.0, b"/");
        assert_eq!(plan.fs_rules.last().unwrap().path.0, b"/extra");
        assert_eq!(plan.handled_fs, ALL_FS);
        assert_eq!(plan.handled_net, 0b11);
        assert_eq!(plan.net_rules.len(), 1);
        assert_eq!(plan.scoped, 0b11);
        assert!(!plan.required);
    }

    #[test]
    fn nothing_restricted_means_no_rules() {
        let mut r = Ruleset::new();
        r.restrict(Resource::TcpBind, CompatMode::Enforce);
        let plan = r.plan([("/", Mirror::TmpfsRoot), ("/proc", Mirror::Proc)]);
        assert_eq!(plan.handled_fs, 0);
        assert!(plan.fs_rules.is_empty());
        assert_eq!(plan.handled_net, 1);
        assert!(plan.required);
    }
}
