//! hakurei's container ops and parameters (the Go package `hakurei.app/container`, v0.4) as
//! data: an ordered list of setup steps beside hakoniwa's mount table, plus the parameters that
//! decide how the container's processes start and end. The [`Container`](crate::Container)
//! methods that add, check and lower them are in `hakurei.rs`, above both.
//!
//! ```text
//!  Container
//!   rootdir, mounts (hakoniwa: by path, parents first) ─┐
//!   ops (hakurei: in the order given) ──────────────────┼─▶ SetupPlan.mounts, in this order
//!   files, dirs, symlinks (hakoniwa) ───────────────────┘
//!   ops: daemons ─────────────────────────────────────────▶ SetupPlan.daemons
//!   params ──────────────────────────────────────────────▶ SetupPlan.params, landlock scopes,
//!                                                           the cgroup the shim joins
//! ```
//!
//! Ops that read the host (`auto_root`, `auto_etc`, `link` with `dereference`) resolve it when
//! they are added, as hakurei does in its `early` stage: the plan itself is pure data. Every op
//! is checked by [`Container::validate`](crate::Container::validate) before anything starts; what only the kernel can refuse
//! fails the setup with a [`SetupStep`](crate::SetupStep) naming the op and a detail naming the
//! path.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use hatchery_protocol::SchedPolicy;

/// Flags of [`Container::bind_with`](crate::Container::bind_with) and [`Container::auto_root`](crate::Container::auto_root), as hakurei names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BindFlags(pub(crate) u8);

impl BindFlags {
    /// Read-only, device nodes unusable, the source must exist.
    pub const NONE: BindFlags = BindFlags(0);
    /// A source that does not exist is skipped (`BindOptional`).
    pub const OPTIONAL: BindFlags = BindFlags(1);
    /// Mounted read-write (`BindWritable`).
    pub const WRITABLE: BindFlags = BindFlags(2);
    /// Device nodes on it can be opened: no `nodev` (`BindDevice`). `nosuid` stays.
    pub const DEVICE: BindFlags = BindFlags(4);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: BindFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list of `optional`, `rw` (or `writable`), `dev` (or `device`),
    /// `ro`.
    pub fn from_names(names: &str) -> Option<BindFlags> {
        let mut f = BindFlags::NONE;
        for n in names.split(',').filter(|n| !n.is_empty()) {
            f = f | match n {
                "optional" => BindFlags::OPTIONAL,
                "rw" | "writable" => BindFlags::WRITABLE,
                "dev" | "device" => BindFlags::DEVICE,
                "ro" => BindFlags::NONE,
                _ => return None,
            };
        }
        Some(f)
    }

    pub(crate) fn describe(self) -> String {
        let mut out = vec![if self.contains(BindFlags::WRITABLE) {
            "rw"
        } else {
            "ro"
        }];
        if self.contains(BindFlags::DEVICE) {
            out.push("dev");
        } else {
            out.push("nodev");
        }
        out.push("nosuid");
        if self.contains(BindFlags::OPTIONAL) {
            out.push("optional");
        }
        out.join(", ")
    }
}

impl std::ops::BitOr for BindFlags {
    type Output = BindFlags;
    fn bitor(self, rhs: BindFlags) -> BindFlags {
        BindFlags(self.0 | rhs.0)
    }
}

/// What [`Container::remount`](crate::Container::remount) adds to a mount: it only ever restricts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RemountFlags(pub(crate) u64);

impl RemountFlags {
    /// Read-only (`MS_RDONLY`).
    pub const RDONLY: RemountFlags = RemountFlags(0x1);
    /// No set-user-id (`MS_NOSUID`).
    pub const NOSUID: RemountFlags = RemountFlags(0x2);
    /// No device access (`MS_NODEV`).
    pub const NODEV: RemountFlags = RemountFlags(0x4);
    /// No execution (`MS_NOEXEC`).
    pub const NOEXEC: RemountFlags = RemountFlags(0x8);

    /// Parses a comma-separated list of `ro`, `nosuid`, `nodev`, `noexec`.
    pub fn from_names(names: &str) -> Option<RemountFlags> {
        let mut f = 0;
        for n in names.split(',').filter(|n| !n.is_empty()) {
            f |= match n {
                "ro" | "rdonly" => 0x1,
                "nosuid" => 0x2,
                "nodev" => 0x4,
                "noexec" => 0x8,
                _ => return None,
            };
        }
        Some(RemountFlags(f))
    }

    /// The `MOUNT_ATTR_*` bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    pub(crate) fn describe(self) -> String {
        [(1, "ro"), (2, "nosuid"), (4, "nodev"), (8, "noexec")]
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::ops::BitOr for RemountFlags {
    type Output = RemountFlags;
    fn bitor(self, rhs: RemountFlags) -> RemountFlags {
        RemountFlags(self.0 | rhs.0)
    }
}

/// Where an overlay's changes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upper {
    ReadOnly,
    Ephemeral,
    Host { upper: PathBuf, work: PathBuf },
}

/// One hakurei op, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Overlay {
        target: String,
        lower: Vec<PathBuf>,
        upper: Upper,
    },
    Tmpfs {
        target: String,
        size: u64,
        perm: u32,
        read_only: bool,
    },
    Mkdir {
        path: String,
        perm: u32,
    },
    Place {
        path: String,
        data: Vec<u8>,
    },
    /// A symbolic link at `target` pointing to `linkname` (resolved already when dereferenced).
    Link {
        target: String,
        linkname: String,
    },
    Remount {
        target: String,
        flags: RemountFlags,
    },
    Bind {
        source: PathBuf,
        target: String,
        flags: BindFlags,
    },
    Dev {
        target: String,
        mqueue: bool,
        writable: bool,
    },
    /// The binds and links an auto-root expanded into.
    AutoRoot {
        host: PathBuf,
        ops: Vec<Op>,
    },
    /// The mkdirs, binds and links an auto-etc expanded into.
    AutoEtc {
        host: PathBuf,
        prefix: String,
        ops: Vec<Op>,
    },
    Daemon {
        ready: String,
        program: String,
        args: Vec<String>,
    },
}

/// Default of [`Container::daemon_timeout`](crate::Container::daemon_timeout): how long a daemon may take to become ready.
pub const DEFAULT_DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of [`Container::wait_delay`](crate::Container::wait_delay): how long a cancelled command has to exit after its
/// `SIGINT` ([`Container::forward_cancel`](crate::Container::forward_cancel)) before the container is killed.
pub const DEFAULT_WAIT_DELAY: Duration = Duration::from_secs(5);

/// Size of an [`overlay_ephemeral`](crate::Container::overlay_ephemeral)'s tmpfs:
/// [`DEFAULT_TMPFS_BYTES`](hatchery_protocol::DEFAULT_TMPFS_BYTES) (64 MiB).
pub const EPHEMERAL_OVERLAY_BYTES: u64 = hatchery_protocol::DEFAULT_TMPFS_BYTES;

/// Top-level entries [`Container::auto_root`](crate::Container::auto_root) never binds, as hakurei: the container brings its
/// own `/proc`, `/dev`, `/tmp` and `/etc`, and `/mnt` holds other file systems.
pub const AUTO_ROOT_SKIPPED: &[&str] = &["proc", "dev", "tmp", "mnt", "etc"];

/// hakurei's process parameters, as set on a [`Container`](crate::Container).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pub forward_cancel: bool,
    pub wait_delay: Option<Duration>,
    pub adopt_wait_delay: Duration,
    pub retain_session: bool,
    pub scheduler: Option<(SchedPolicy, u32)>,
    pub host_abstract: bool,
    pub privileged: bool,
    pub disable_userns: bool,
    pub cgroup_fd: Option<Arc<OwnedFd>>,
    pub daemon_timeout: Option<Duration>,
    /// `TARGET/mqueue` of each dev op with an mqueue (for landlock rules).
    pub mqueue_paths: Vec<String>,
}
