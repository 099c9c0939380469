//! The messages host and guest exchange, and their encoding into frames.
//!
//! A conversation with a zygote:
//!
//! ```text
//!  host                                   guest (hatchery-shim, PID 1 of the container)
//!   |  <-------------------- Hello ---------  (blocks until it is served its plan)
//!   |  --- SetupPlan (+ fds) ------------->   stage 1: build the container
//!   |  <------- Ready | SetupFailed -------
//!   |  --- Request (+ fds) --------------->   stage 2: fork a child per request
//!   |  --- Cancel / Ping ----------------->
//!   |  <------- Response / Pong -----------   exactly one Response per Request id
//!   |  --- Shutdown ---------------------->
//! ```
//!
//! Strings that are OS paths, arguments or environment entries are raw bytes ([`Bytes`]):
//! Linux does not promise they are UTF-8.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::frame::{split_frame, Header, Kind, HEADER_LEN, MAX_BODY_LEN, MAX_FRAME_LEN};
use crate::report::{Explain, Report};

/// Raw bytes: an OS string (path, argument, `NAME=value`) or a payload. Encoded as a MessagePack
/// `bin`, not an array of integers.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Bytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Self {
        Bytes(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// First frame of every guest: who is speaking. The protocol version itself is in every header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Hello {
    /// The shim's crate version, for diagnostics.
    pub shim_version: String,
}

/// The 16 resources of `setrlimit(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[allow(missing_docs)] // the names are the kernel's RLIMIT_* names
pub enum Resource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl Resource {
    /// All sixteen resources.
    pub const ALL: [Resource; 16] = [
        Resource::As,
        Resource::Core,
        Resource::Cpu,
        Resource::Data,
        Resource::Fsize,
        Resource::Locks,
        Resource::Memlock,
        Resource::Msgqueue,
        Resource::Nice,
        Resource::Nofile,
        Resource::Nproc,
        Resource::Rss,
        Resource::Rtprio,
        Resource::Rttime,
        Resource::Sigpending,
        Resource::Stack,
    ];

    /// The name used in `/proc/<pid>/limits`-style output and on the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Resource::As => "as",
            Resource::Core => "core",
            Resource::Cpu => "cpu",
            Resource::Data => "data",
            Resource::Fsize => "fsize",
            Resource::Locks => "locks",
            Resource::Memlock => "memlock",
            Resource::Msgqueue => "msgqueue",
            Resource::Nice => "nice",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::Rss => "rss",
            Resource::Rtprio => "rtprio",
            Resource::Rttime => "rttime",
            Resource::Sigpending => "sigpending",
            Resource::Stack => "stack",
        }
    }
}

impl std::fmt::Display for Resource {
    /// The lower-case name ([`Resource::name`]), as hakoniwa shows an `Rlimit`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One resource limit. `u64::MAX` means unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The root of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum RootPlan {
    /// A fresh tmpfs (the default), populated by the mount operations.
    Tmpfs,
    /// A host directory as the root. Read-only, it is never written: the root is a tmpfs and
    /// each top-level entry of the directory is bound into it read-only (recursively, nosuid,
    /// nodev) before anything else is mounted or created, so mount points and files it lacks
    /// are made in the tmpfs. Writable, the directory itself is bound (nosuid, nodev).
    HostDir {
        /// Host path.
        path: Bytes,
        /// Mounted read-write instead of read-only.
        writable: bool,
    },
}

/// Size of a [`MountOp::Tmpfs`] whose `size_bytes` is `None`: 64 MiB. Every writable tmpfs a
/// request can reach is bounded; ask for a size explicitly to get more.
pub const DEFAULT_TMPFS_BYTES: u64 = 64 << 20;

/// Size of the `/dev/shm` tmpfs of a [`MountOp::Devfs`] (the container's and every request's
/// private one): 64 MiB.
pub const DEFAULT_SHM_BYTES: u64 = 64 << 20;

/// `nr_inodes=` of a tmpfs of `size_bytes` that names none: one inode per 4 KiB (at least 64).
/// The size caps a tmpfs's pages only; its inodes and dentries are kernel memory the size never
/// counts, and the kernel's own default is half the machine's RAM pages, on every tmpfs.
pub const fn default_nr_inodes(size_bytes: u64) -> u64 {
    let n = size_bytes / 4096;
    if n < 64 {
        64
    } else {
        n
    }
}

/// One step of building the container's file tree, applied in order before `pivot_root`.
/// Container paths are absolute paths inside the new root. Every path the shim creates,
/// changes or mounts on is resolved inside the root without following symbolic links: a link
/// in the way fails the step with `ELOOP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum MountOp {
    /// Bind-mount a host path (recursively), read-only unless `writable`, always nosuid, nodev
    /// unless `device`.
    Bind {
        /// Host path.
        source: Bytes,
        /// Container path.
        target: Bytes,
        /// Read-write instead of read-only.
        writable: bool,
        /// Device nodes on the bind can be opened (no `nodev`; hakurei's `BindDevice`).
        device: bool,
        /// A source that does not exist skips the bind instead of failing the setup
        /// (hakurei's `BindOptional`).
        optional: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Container path.
        target: Bytes,
        /// `size=` in bytes; `None` is [`DEFAULT_TMPFS_BYTES`].
        size_bytes: Option<u64>,
        /// `nr_inodes=`; `None` is [`default_nr_inodes`] of the size.
        nr_inodes: Option<u64>,
        /// Mode of the mount's root directory.
        mode: u32,
        /// Remounted read-only once the tree is built.
        read_only: bool,
    },
    /// A fresh procfs of the container's pid namespace.
    Proc {
        /// Container path.
        target: Bytes,
    },
    /// A minimal /dev: null zero full random urandom tty, fd/stdin/stdout/stderr links, a
    /// private devpts (ptmx) and a /dev/shm tmpfs of [`DEFAULT_SHM_BYTES`]; read-only once the
    /// tree is built unless `writable`.
    Devfs {
        /// Container path.
        target: Bytes,
        /// Also a private mqueue instance at `mqueue/` (the container's IPC namespace's).
        mqueue: bool,
        /// Left writable (hakurei's `DevWritable`).
        writable: bool,
    },
    /// Create a directory (and its parents).
    Dir {
        /// Container path.
        path: Bytes,
        /// Permission bits.
        mode: u32,
    },
    /// Create a file with contents taken from the plan's blob memfd.
    File {
        /// Container path.
        path: Bytes,
        /// Permission bits.
        mode: u32,
        /// Offset of the contents in the blob.
        offset: u64,
        /// Length of the contents.
        len: u64,
    },
    /// Create a symbolic link `link` → `original`.
    Symlink {
        /// What the link points to.
        original: Bytes,
        /// Container path of the link.
        link: Bytes,
    },
    /// An overlay file system (`nosuid`, `nodev`, `userxattr`) of host directories at `target`
    /// (hakoniwa's `overlaymount_ro/rw`, hakurei's `Overlay*`).
    Overlay {
        /// Container path.
        target: Bytes,
        /// Host directories, the uppermost first; at least one, and two for a read-only
        /// overlay (the kernel's rule).
        lower: Vec<Bytes>,
        /// Where changes go.
        upper: OverlayUpper,
    },
    /// Adds mount attributes ([`REMOUNT_ATTRS`]) to the mount at `target` and every mount below
    /// it. Only ever restricts: nothing is made writable, executable or device-capable again.
    Remount {
        /// Container path: a mount point.
        target: Bytes,
        /// `MOUNT_ATTR_*` bits, a subset of [`REMOUNT_ATTRS`].
        attrs: u64,
    },
}

/// The mount attributes a [`MountOp::Remount`] may add: `MOUNT_ATTR_RDONLY`,
/// `MOUNT_ATTR_NOSUID`, `MOUNT_ATTR_NODEV` and `MOUNT_ATTR_NOEXEC`.
pub const REMOUNT_ATTRS: u64 = 0x1 | 0x2 | 0x4 | 0x8;

/// The upper layer of a [`MountOp::Overlay`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum OverlayUpper {
    /// None: the overlay is read-only (hakurei's `OverlayReadonly`).
    ReadOnly,
    /// Upper and work directories on a fresh tmpfs of `size_bytes` (never 0), gone with the
    /// container (hakurei's `OverlayEphemeral`).
    Ephemeral {
        /// `size=` of the tmpfs.
        size_bytes: u64,
    },
    /// Host directories: changes land in `upper` and persist (hakurei's `Overlay`).
    Host {
        /// The upper directory.
        upper: Bytes,
        /// An empty directory on the same file system as `upper`.
        work: Bytes,
    },
}

/// A process started inside the container once it is built, before the command (hakurei's
/// `Daemon`), with the command's confinement. The command starts once `ready` exists; the
/// daemon dies with the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct DaemonSpec {
    /// The program, its arguments and environment.
    pub exec: ExecSpec,
    /// Container path whose appearance means the daemon is ready.
    pub ready: Bytes,
    /// How long to wait for `ready`, in microseconds (never 0).
    pub timeout_us: u64,
}

/// A scheduling policy of `sched_setscheduler(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[allow(missing_docs)] // the kernel's SCHED_* names
pub enum SchedPolicy {
    Other,
    Fifo,
    RoundRobin,
    Batch,
    Idle,
}

/// hakurei's process parameters: how the container's processes are started and ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ProcessParams {
    /// On [`Cancel`], deliver `SIGINT` to the command instead of killing the container (the host
    /// kills it after its wait delay).
    pub forward_cancel: bool,
    /// After the command exits, wait this long (µs) for the processes it left before killing
    /// them (0: kill at once).
    pub adopt_wait_us: u64,
    /// Do not start a new session for the command (no `setsid`): it keeps the host's session
    /// and controlling terminal.
    pub retain_session: bool,
    /// The scheduling policy and priority of every process of the container.
    pub scheduler: Option<(SchedPolicy, u32)>,
    /// Keep `CAP_SYS_ADMIN` in the container's processes (hakurei's `Privileged`).
    pub privileged: bool,
    /// No process of the container may create a user namespace (bubblewrap's
    /// `--disable-userns`): the shim sets the container's `max_user_namespaces` to 0.
    pub disable_userns: bool,
}

/// A command to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ExecSpec {
    /// Program path; without a `/` it is searched on the `PATH` of `env` (or the default PATH)
    /// inside the container.
    pub program: Bytes,
    /// Full argv, including argv\[0\].
    pub argv: Vec<Bytes>,
    /// Environment as `NAME=value` entries; nothing is inherited.
    pub env: Vec<Bytes>,
    /// Working directory inside the container; `None` is `/`.
    pub cwd: Option<Bytes>,
}

/// Where one of the fds received with a message goes in the command's fd table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FdAssignment {
    /// Index in the fds that came with the message.
    pub index: u8,
    /// Fd number in the command (0, 1, 2 or any other).
    pub target: i32,
    /// A name the helper can look the fd up by (`HATCHERY_FD_<NAME>=<target>`), if any.
    pub name: Option<String>,
}

/// The user and groups the command runs as, resolved in the container's `/etc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct UserSpec {
    /// User name or numeric id.
    pub user: String,
    /// Group name or numeric id; `None` is the user's primary group.
    pub group: Option<String>,
    /// Supplementary group names or ids.
    pub supplementary: Vec<String>,
}

/// Which ids the shim takes inside the user namespace once the maps are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct IdPlan {
    /// Uid inside the container.
    pub uid: u32,
    /// Gid inside the container.
    pub gid: u32,
    /// Whether `setgroups(2)` is allowed (false when the gid map was written unprivileged).
    pub setgroups_allowed: bool,
    /// Switch to this user before exec, resolved in the container's /etc.
    pub user: Option<UserSpec>,
}

/// What the shim does once the container is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum ShimMode {
    /// Run one command with the given fds, report one [`Response`] (id 0) and exit.
    OneShot {
        /// The command.
        command: ExecSpec,
        /// Fds received with the plan, and where they go.
        fds: Vec<FdAssignment>,
    },
    /// Serve [`Request`]s until [`Shutdown`] or until the host goes away.
    Zygote {
        /// Requests running at once in this zygote.
        max_concurrent: u32,
    },
    /// Call mode: once the container is built, drop every privilege and exec this call-mode
    /// helper in place of the shim (keeping the control socket on fd 3). The helper preloads,
    /// then serves [`Work::Call`] requests itself (see `hatchery_guest::Exports`).
    Helper {
        /// The helper binary (a path inside the container) and its arguments and environment.
        helper: ExecSpec,
        /// `None`: a fresh forked process per call. `Some(n)`: one long-lived worker serves up
        /// to `n` calls, recycled after that, after any fault or timeout.
        reuse: Option<u64>,
    },
}

/// Stage 1: everything the shim needs to build the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct SetupPlan {
    /// Hostname in the UTS namespace, if one was unshared.
    pub hostname: Option<String>,
    /// The root.
    pub root: RootPlan,
    /// File-tree operations, in order.
    pub mounts: Vec<MountOp>,
    /// Limits applied before the command runs.
    pub rlimits: Vec<Rlimit>,
    /// Ids to take.
    pub ids: IdPlan,
    /// Index of the memfd holding [`MountOp::File`] contents, if any file is placed.
    pub blob: Option<u8>,
    /// How many of the plan's fds, the last ones, are cgroup v1 `tasks` files (opened for
    /// writing by the host) that the shim writes `0` into, then closes, before it does anything
    /// else: it moves itself into the container's cgroups. A single thread moving itself does
    /// not take the kernel's global threadgroup lock, whose write side waits for an RCU grace
    /// period (milliseconds) whenever no other migration happened lately; the host writing the
    /// shim's pid into `cgroup.procs` does.
    pub join_cgroups: u8,
    /// The container has a cgroup namespace of its own: the shim makes it anew once it is in
    /// its cgroups (joined, born in or attached by the host before the plan), so its root is the
    /// container's cgroup and no path of the host's shows in `/proc/self/cgroup`.
    pub cgroup_namespace: bool,
    /// Bring the loopback interface up (the container has its own network namespace).
    pub loopback: bool,
    /// The container has a network namespace of its own that nothing outside configures (no
    /// user-mode network): a zygote gives every request a fresh one, so no socket, port or
    /// counter of one request reaches another.
    pub own_network: bool,
    /// A compiled seccomp filter, installed raw, last, before exec.
    pub seccomp: Option<SeccompPlan>,
    /// A landlock policy; every command gets a domain of its own built from it.
    pub landlock: Option<LandlockPlan>,
    /// Set the no_new_privs bit in every command (always, unless the container allows new
    /// privileges, which the host permits only without seccomp and landlock).
    pub no_new_privs: bool,
    /// What to do once built.
    pub mode: ShimMode,
    /// Daemons to start before the command, in order (one-shot mode only).
    pub daemons: Vec<DaemonSpec>,
    /// Process parameters.
    pub params: ProcessParams,
}

impl SetupPlan {
    /// Whether the container's tree holds host paths where a party outside the container could
    /// have a unix socket listening, or make one: a host directory as its root, a writable bind,
    /// an overlay of host directories. Over such a socket a process of the container could send
    /// fds out (of a `/proc/self/net` file, say, which shows whatever later runs in that network
    /// namespace), as over a socket it was given. Read-only binds are not counted (a bind of a
    /// socket itself is seen where the source is opened): the default root binds system
    /// directories and files, where only root makes sockets; a read-only bind of a directory
    /// where others make them (`/run`, `/var`) reaches them all the same.
    pub fn may_reach_host_sockets(&self) -> bool {
        matches!(self.root, RootPlan::HostDir { .. })
            || self.mounts.iter().any(|m| {
                matches!(
                    m,
                    MountOp::Bind { writable: true, .. } | MountOp::Overlay { .. }
                )
            })
    }
}

/// The `sendmsg` flags with which a command hands its seccomp listener to the shim, between
/// installing its filter and exec (`MSG_NOSIGNAL | MSG_DONTWAIT | MSG_EOR`, plus the TCP-only
/// `MSG_SYN | MSG_RST`, which unix sockets ignore and no program passes to `sendmsg`). Filters
/// that notify and do not allow `sendmsg` outright allow it with exactly these flags before any
/// other rule, so the hand-over can never wait on a notification that nobody is yet listening
/// to; right after it the command installs a second filter that fails this form with `EPERM`, so
/// the allowance is one-shot and never reaches the command's own code
/// ([`SeccompPlan::handover`]).
pub const LISTENER_SEND_FLAGS: i32 = 0x4000 | 0x40 | 0x80 | 0x400 | 0x1000;

/// A seccomp filter compiled by the host (with libseccomp) for the shim to install raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct SeccompPlan {
    /// `struct sock_filter` entries, each packed into a `u64`
    /// (`code | jt << 16 | jf << 24 | k << 32`).
    pub filter: Vec<u64>,
    /// The filter returns `SECCOMP_RET_USER_NOTIF` for some calls: install it with
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER`. The shim (never the guest) holds the listener; a
    /// notified call kills the request and is reported as [`Outcome::Violation`].
    pub notify: bool,
    /// The filter may notify `execve`/`execveat` themselves: the shim must not be suspended
    /// (vfork-style) until the command execs, since that exec waits for the shim.
    pub notify_exec: bool,
    /// The filter allows the listener hand-over form of `sendmsg` in front of its rules
    /// ([`LISTENER_SEND_FLAGS`]): the command revokes it with a second filter right after the
    /// hand-over. False where the policy allows `sendmsg` outright, so there is nothing to
    /// revoke.
    pub handover: bool,
    /// Whether the shim explains denials or records what the command uses.
    pub explain: Explain,
}

/// One landlock path rule: `access` (`LANDLOCK_ACCESS_FS_*` bits) beneath `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct LandlockPathRule {
    /// A path inside the container.
    pub path: Bytes,
    /// `LANDLOCK_ACCESS_FS_*` bits (file-only bits are kept for non-directories).
    pub access: u64,
}

/// One landlock port rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct LandlockPortRule {
    /// TCP port.
    pub port: u16,
    /// `LANDLOCK_ACCESS_NET_*` bits.
    pub access: u64,
}

/// A landlock policy. The shim restricts every command to a domain of its own built from it
/// (after its private mounts exist), so commands cannot signal or reach one another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct LandlockPlan {
    /// Handled `LANDLOCK_ACCESS_FS_*` rights: denied unless a rule grants them.
    pub handled_fs: u64,
    /// Handled `LANDLOCK_ACCESS_NET_*` rights.
    pub handled_net: u64,
    /// `LANDLOCK_SCOPE_*` bits.
    pub scoped: u64,
    /// Path rules.
    pub fs_rules: Vec<LandlockPathRule>,
    /// Port rules.
    pub net_rules: Vec<LandlockPortRule>,
    /// Fail the setup (step `Landlock`) when the kernel's ABI cannot enforce every handled
    /// right and scope; otherwise enforce what it can and report it in [`Features`].
    pub required: bool,
}

/// A named container setup step, for [`SetupFailure`] and [`Outcome::SetupFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[non_exhaustive]
#[allow(missing_docs)] // each name says which call failed
pub enum SetupStep {
    Handshake,
    ReceivePlan,
    StdioSetup,
    SetIds,
    SetGroups,
    MountPropagation,
    MountRoot,
    BindMount,
    RemountReadOnly,
    MountTmpfs,
    MountProc,
    MountDevfs,
    MakeDir,
    WriteFile,
    Symlink,
    Remount,
    MountMqueue,
    Daemon,
    Scheduler,
    PivotRoot,
    Hostname,
    Loopback,
    ResolveUser,
    Fork,
    NewSession,
    Rlimit,
    MapFds,
    Chdir,
    DropCapabilities,
    NoNewPrivs,
    Landlock,
    Seccomp,
    FindProgram,
    Exec,
    MountOverlay,
    /// Setting the container's `max_user_namespaces` to 0 (`disable_userns`).
    DisableUserns,
    /// Moving the shim into the container's cgroup (a v1 `tasks` file).
    JoinCgroup,
    /// Making the container's cgroup namespace, rooted at its cgroup.
    CgroupNamespace,
}

/// Building the container (or preparing a request) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct SetupFailure {
    /// The step that failed.
    pub step: SetupStep,
    /// The errno it failed with (0 when no system call failed).
    pub errno: i32,
    /// What it was working on (a path, a user name).
    pub detail: String,
}

/// Kernel features the container actually got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Features {
    /// A seccomp filter is installed before every exec.
    pub seccomp: bool,
    /// Seccomp violations are reported through a user-notification listener the shim holds.
    pub seccomp_notify: bool,
    /// The kernel's landlock ABI, when landlock is enforced.
    pub landlock_abi: Option<u32>,
    /// Landlock rights and scopes enforced (after dropping what the kernel lacks).
    pub landlock: Option<LandlockEnforced>,
    /// no_new_privs is set.
    pub no_new_privs: bool,
}

/// What a landlock domain actually restricts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct LandlockEnforced {
    /// Handled `LANDLOCK_ACCESS_FS_*` rights.
    pub fs: u64,
    /// Handled `LANDLOCK_ACCESS_NET_*` rights.
    pub net: u64,
    /// `LANDLOCK_SCOPE_*` bits.
    pub scoped: u64,
}

/// Stage 1 finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Ready {
    /// What is enforced.
    pub features: Features,
    /// How long each setup step took inside the container, in order.
    pub setup: Vec<StepTime>,
}

/// The duration of one named setup step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct StepTime {
    /// The step (`"mounts"`, `"pivot_root"`, …).
    pub step: String,
    /// Microseconds.
    pub us: u64,
}

/// Where a request's stdio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum FdSlot {
    /// `/dev/null`.
    Null,
    /// The fd at this index of those passed with the request.
    Passed(u8),
}

/// Per-request limits. `None` means the pool's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct RequestLimits {
    /// Wall-clock limit in microseconds.
    pub wall_time_us: Option<u64>,
    /// Limit on captured output in bytes (stdout and stderr each).
    pub output_bytes: Option<u64>,
    /// Size of the request's private /tmp in bytes.
    pub tmp_bytes: Option<u64>,
    /// Extra rlimits.
    pub rlimits: Vec<Rlimit>,
}

/// What a request does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Work {
    /// Execute a program.
    Exec(ExecSpec),
    /// Call a function exported by a call-mode helper.
    Call {
        /// Export name.
        export: String,
        /// Argument bytes.
        arg: Bytes,
    },
}

/// One request.
///
/// Its fds include a reply socket (a `SOCK_SEQPACKET` end, index [`Request::reply`]): the zygote
/// sends the request's [`Response`] there, and the host closing its end cancels the request (the
/// zygote kills it). So several requests can share one zygote, and cancellation needs no message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Request {
    /// Chosen by the host, echoed in the [`Response`].
    pub id: u64,
    /// Index of the reply socket among the request's fds.
    pub reply: u8,
    /// What to do.
    pub work: Work,
    /// Limits.
    pub limits: RequestLimits,
    /// stdin, stdout, stderr.
    pub stdio: [FdSlot; 3],
    /// Further passed fds and their numbers in the helper.
    pub named: Vec<FdAssignment>,
    /// Read-only copies of passed fds' contents, placed at paths inside the request's private
    /// tmpfs mounts before the command starts (exec mode only), for helpers that need a path.
    #[serde(default)]
    pub placed: Vec<Placement>,
}

/// A copy of a passed fd's contents at a path of the request's own tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Placement {
    /// Index of the source fd among the request's fds (read from offset 0, never moved).
    pub index: u8,
    /// Absolute container path inside one of the request's private tmpfs mounts; created with
    /// mode 0444, never through a symbolic link, never replacing anything.
    pub path: Bytes,
}

/// How a request ended. Exactly one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled {
        /// Signal number.
        signal: i32,
        /// A core dump was written.
        core_dumped: bool,
    },
    /// The wall-time limit was reached and the request was killed.
    TimedOut,
    /// `RLIMIT_CPU` was reached.
    CpuTimeExceeded,
    /// The memory limit was reached.
    MemoryExceeded,
    /// An output exceeded its byte limit.
    OutputExceeded,
    /// The seccomp policy stopped a system call.
    Violation {
        /// Syscall name, as libseccomp resolves it for the host's architecture (the shim sends
        /// it empty; the host fills it in from `nr`).
        syscall: String,
        /// Syscall number.
        nr: i64,
        /// Its arguments.
        args: [u64; 6],
    },
    /// Setting the request up failed; the command never ran.
    SetupFailed(SetupFailure),
}

/// Resources a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Usage {
    /// Wall time from fork to reap, µs.
    pub wall_us: u64,
    /// User CPU time, µs.
    pub user_us: u64,
    /// System CPU time, µs.
    pub sys_us: u64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What it used.
    pub usage: Usage,
    /// Time from receiving the request to the child's exec (or failure), µs.
    pub spawn_us: u64,
    /// Call mode: how the export call ended (`None` for exec requests, and for calls that
    /// ended before the export could answer: see [`Response::outcome`]).
    pub call: Option<CallStatus>,
}

/// How a call to an export ended, as the call process reports it (call mode). Messages are
/// bounded by [`MAX_CALL_MESSAGE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum CallStatus {
    /// The export returned its result (on the call's stdout).
    Ok,
    /// The helper exports no function of that name.
    UnknownExport,
    /// The export returned an error.
    Failed(String),
    /// The export panicked.
    Panicked(String),
    /// The argument did not decode (typed exports).
    Decode(String),
    /// The result did not fit the output limit.
    OutputTooLarge,
}

/// Longest message a [`CallStatus`] carries; longer ones are cut at a char boundary.
pub const MAX_CALL_MESSAGE: usize = 4096;

/// Call mode: fork one call process. Its channel to the supervisor is the one fd passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Spawn {}

/// Call mode: the helper zygote forked this process for the last [`Spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Spawned {
    /// Its pid (in the container's pid namespace).
    pub pid: i32,
}

/// Call mode: the helper zygote reaped one of its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ChildExited {
    /// Its pid.
    pub pid: i32,
    /// Its wait status.
    pub status: i32,
    /// What it used.
    pub usage: Usage,
}

/// Call mode, `Reuse`: become (or, from the host, start) the worker that serves calls sent on
/// the direct channel passed with this message. Each worker gets a channel of its own; the
/// host closing it retires the worker (the supervisor kills the worker's whole process tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Worker {
    /// Hard limit on what one call may write to an output (`RLIMIT_FSIZE`), for the worker's
    /// whole life.
    pub output_bytes: Option<u64>,
}

/// Call mode, `Reuse`: the worker died (crashed, violated its policy, was killed); sent by the
/// supervisor on the worker's direct channel as the answer to any call in flight there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct WorkerExited {
    /// How it ended.
    pub outcome: Outcome,
    /// What it used over its life.
    pub usage: Usage,
}

/// Kill a running request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Cancel {
    /// The request's id.
    pub id: u64,
}

/// Health check; the guest answers with a [`Pong`] carrying the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Ping {
    /// Echoed back.
    pub nonce: u64,
}

/// Answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
    /// Requests running in the zygote.
    pub running: u32,
}

/// Finish running requests, then exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Shutdown {
    /// Kill running requests instead of waiting for them.
    pub kill: bool,
}

/// Any message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[allow(missing_docs)] // one variant per kind, see `Kind`
pub enum Message {
    Hello(Hello),
    SetupPlan(Box<SetupPlan>),
    Ready(Ready),
    SetupFailed(SetupFailure),
    Request(Box<Request>),
    Response(Box<Response>),
    Cancel(Cancel),
    Ping(Ping),
    Pong(Pong),
    Shutdown(Shutdown),
    Spawn(Spawn),
    Spawned(Spawned),
    ChildExited(ChildExited),
    Worker(Worker),
    WorkerExited(Box<WorkerExited>),
    Report(Box<Report>),
}

impl Message {
    /// The frame kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::SetupPlan(_) => Kind::SetupPlan,
            Message::Ready(_) => Kind::Ready,
            Message::SetupFailed(_) => Kind::SetupFailed,
            Message::Request(_) => Kind::Request,
            Message::Response(_) => Kind::Response,
            Message::Cancel(_) => Kind::Cancel,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::Shutdown(_) => Kind::Shutdown,
            Message::Spawn(_) => Kind::Spawn,
            Message::Spawned(_) => Kind::Spawned,
            Message::ChildExited(_) => Kind::ChildExited,
            Message::Worker(_) => Kind::Worker,
            Message::WorkerExited(_) => Kind::WorkerExited,
            Message::Report(_) => Kind::Report,
        }
    }

    /// Encodes the message as one whole frame (header + body).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Encodes the message as one whole frame into `out` (cleared first), so a sender can reuse
    /// one buffer.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let kind = self.kind();
        out.clear();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let res = match self {
            Message::Hello(m) => rmp_serde::encode::write(out, m),
            Message::SetupPlan(m) => rmp_serde::encode::write(out, m),
            Message::Ready(m) => rmp_serde::encode::write(out, m),
            Message::SetupFailed(m) => rmp_serde::encode::write(out, m),
            Message::Request(m) => rmp_serde::encode::write(out, m),
            Message::Response(m) => rmp_serde::encode::write(out, m),
            Message::Cancel(m) => rmp_serde::encode::write(out, m),
            Message::Ping(m) => rmp_serde::encode::write(out, m),
            Message::Pong(m) => rmp_serde::encode::write(out, m),
            Message::Shutdown(m) => rmp_serde::encode::write(out, m),
            Message::Spawn(m) => rmp_serde::encode::write(out, m),
            Message::Spawned(m) => rmp_serde::encode::write(out, m),
            Message::ChildExited(m) => rmp_serde::encode::write(out, m),
            Message::Worker(m) => rmp_serde::encode::write(out, m),
            Message::WorkerExited(m) => rmp_serde::encode::write(out, m),
            Message::Report(m) => rmp_serde::encode::write(out, m),
        };
        res.map_err(|source| ProtocolError::Encode { kind, source })?;
        let body_len = out.len() - HEADER_LEN;
        if body_len > MAX_BODY_LEN {
            return Err(ProtocolError::TooLarge {
                len: out.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let header = Header {
            kind,
            len: body_len as u32,
        };
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(())
    }

    /// Decodes one whole frame. Never panics and never allocates more than the frame's size
    /// permits, whatever the bytes.
    pub fn decode(frame: &[u8]) -> Result<Message, ProtocolError> {
        let (header, body) = split_frame(frame)?;
        Self::decode_body(header.kind, body)
    }

    /// Decodes the body of a frame whose header was already validated.
    pub fn decode_body(kind: Kind, body: &[u8]) -> Result<Message, ProtocolError> {
        fn de<T: serde::de::DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, ProtocolError> {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
            let value =
                T::deserialize(&mut de).map_err(|source| ProtocolError::Decode { kind, source })?;
            if de.position() == body.len() as u64 {
                Ok(value)
            } else {
                Err(ProtocolError::Decode {
                    kind,
                    source: rmp_serde::decode::Error::Syntax(
                        "trailing bytes after the message".into(),
                    ),
                })
            }
        }
        Ok(match kind {
            Kind::Hello => Message::Hello(de(kind, body)?),
            Kind::SetupPlan => Message::SetupPlan(de(kind, body)?),
            Kind::Ready => Message::Ready(de(kind, body)?),
            Kind::SetupFailed => Message::SetupFailed(de(kind, body)?),
            Kind::Request => Message::Request(de(kind, body)?),
            Kind::Response => Message::Response(de(kind, body)?),
            Kind::Cancel => Message::Cancel(de(kind, body)?),
            Kind::Ping => Message::Ping(de(kind, body)?),
            Kind::Pong => Message::Pong(de(kind, body)?),
            Kind::Shutdown => Message::Shutdown(de(kind, body)?),
            Kind::Spawn => Message::Spawn(de(kind, body)?),
            Kind::Spawned => Message::Spawned(de(kind, body)?),
            Kind::ChildExited => Message::ChildExited(de(kind, body)?),
            Kind::Worker => Message::Worker(de(kind, body)?),
            Kind::WorkerExited => Message::WorkerExited(de(kind, body)?),
            Kind::Report => Message::Report(de(kind, body)?),
        })
    }
}
