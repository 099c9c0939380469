//! [`Container`]: the description of a sandbox, as plain data (the API of the crate hakoniwa).
//! Nothing here touches the kernel; [`Container::command`] gives a [`Command`](crate::Command)
//! that does (it lives with `Command`, which builds on this module, never the reverse).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hatchery_protocol::{
    Resource, Rlimit as RlimitSpec, UserSpec, DEFAULT_SHM_BYTES, DEFAULT_TMPFS_BYTES,
};

use crate::error::{Error, Result};
use crate::idmap::{self, IdMap};
use crate::landlock::{Mirror, Ruleset};
use crate::network::Network;
use crate::seccomp::Filter;

/// A resource of `setrlimit(2)`.
pub type Rlimit = Resource;

/// A namespace that can be unshared on top of the user, mount and pid namespaces every
/// container has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Namespace {
    /// Cgroup namespace: `/proc/self/cgroup` shows the container's cgroup as its root (`/`; the
    /// host's cgroup when the container has none of its own).
    Cgroup,
    /// IPC namespace: private SysV IPC and POSIX message queues.
    Ipc,
    /// Network namespace: no interfaces but a loopback device.
    Network,
    /// UTS namespace: private hostname.
    Uts,
    /// Mount namespace (always on).
    Mount,
    /// User namespace (always on).
    User,
    /// Pid namespace (always on).
    Pid,
}

impl std::fmt::Display for Namespace {
    /// The upper-case name hakoniwa logs (`CGROUP`, `IPC`, `MOUNT`, …).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Namespace::Cgroup => "CGROUP",
            Namespace::Ipc => "IPC",
            Namespace::Network => "NETWORK",
            Namespace::Uts => "UTS",
            Namespace::Mount => "MOUNT",
            Namespace::User => "USER",
            Namespace::Pid => "PID",
        })
    }
}

/// Adjusts how a container runs (hakoniwa's `Runctl`), with [`Container::runctl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Runctl {
    /// Do not set the no_new_privs bit. Only for a container without seccomp and landlock
    /// (the kernel installs those without no_new_privs only for a process holding
    /// `CAP_SYS_ADMIN`, and hatchery's commands hold no capability): spawn fails with
    /// [`Error::InvalidConfig`] otherwise. An exec still gains no capability (the bounding set
    /// is empty) and binds are nosuid, as in hakoniwa.
    AllowNewPrivs,
    /// Without a usable cgroup for the memory, pids and CPU limits, run without them instead of
    /// failing ([`Error::Cgroup`]).
    IgnoreCgroupSetupFailed,
    /// Accepted for compatibility: hatchery always keeps the flags the kernel locks on a bind
    /// (nodev, noexec, ...) and adds its own, so there is nothing to fall back from.
    MountFallback,
    /// Accepted for compatibility: every command already starts a new session (hatchery never
    /// gives it a controlling terminal, so `TIOCSTI` cannot reach the host's terminal).
    NewSession,
    /// The [`rootdir`](Container::rootdir) is mounted read-write
    /// (as [`rootdir_rw`](Container::rootdir_rw)).
    RootdirRW,
    /// hakoniwa reads `/proc/<pid>/smaps_rollup` of the command at its exit. Not provided by
    /// hatchery (the status has [`Rusage`](crate::Rusage) instead): spawn fails with
    /// [`Error::InvalidConfig`] rather than leave the field empty.
    GetProcPidSmapsRollup,
    /// hakoniwa reads `/proc/<pid>/status` of the command at its exit. Not provided, as
    /// [`GetProcPidSmapsRollup`](Runctl::GetProcPidSmapsRollup).
    GetProcPidStatus,
}

impl Namespace {
    pub(crate) fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Network => libc::CLONE_NEWNET,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Pid => libc::CLONE_NEWPID,
        }
    }
}

/// A mount at a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountEntry {
    Bind {
        source: PathBuf,
        writable: bool,
    },
    Tmpfs {
        size: Option<u64>,
        read_only: bool,
    },
    Proc,
    Devfs,
    Overlay {
        lower: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
}

/// A file-system object created after the mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FsEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Symlink {
        original: String,
        link: String,
    },
}

/// A sandbox description. Cheap to clone; every [`Command`](crate::Command) takes a copy.
///
/// Every container has its own user, mount and pid namespaces, a root on a fresh tmpfs (or
/// [`rootdir`](Container::rootdir)) that is read-only once built, no capabilities, no_new_privs,
/// a new session, `RLIMIT_CORE` 0 and only the fds it is explicitly given. When the host runs as
/// root, the guest is mapped to `nobody` unless configured otherwise, never to host root.
#[derive(Debug, Clone)]
pub struct Container {
    pub(crate) namespaces: std::collections::BTreeSet<Namespace>,
    pub(crate) rootdir: Option<(PathBuf, bool)>,
    pub(crate) mounts: BTreeMap<String, MountEntry>,
    pub(crate) fs: Vec<FsEntry>,
    pub(crate) hostname: Option<String>,
    pub(crate) uid_maps: Vec<IdMap>,
    pub(crate) gid_maps: Vec<IdMap>,
    pub(crate) user: Option<UserSpec>,
    pub(crate) rlimits: BTreeMap<u8, RlimitSpec>,
    pub(crate) seccomp: Option<Filter>,
    pub(crate) landlock: Option<Ruleset>,
    pub(crate) resources: crate::cgroup::Limits,
    pub(crate) network: Option<Network>,
    pub(crate) loopback: bool,
    pub(crate) runctl: std::collections::BTreeSet<Runctl>,
    /// Problems found while configuring, reported by `spawn` (builders cannot fail).
    pub(crate) config_errors: Vec<(&'static str, String, &'static str)>,
    /// hakurei's ops, in order (see [`crate::ops`]).
    pub(crate) ops: Vec<crate::ops::Op>,
    /// hakurei's process parameters.
    pub(crate) params: crate::ops::Params,
    /// Explain denials, or record what the command uses.
    pub(crate) recording: crate::denial::Recording,
}

impl Default for Container {
    fn default() -> Self {
        Container::new()
    }
}

pub(crate) fn normalize_container_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn ranges(maps: &[(u32, u32, u32)]) -> Vec<IdMap> {
    maps.iter()
        .map(|&(container_id, host_id, size)| IdMap {
            container_id,
            host_id,
            size,
        })
        .collect()
}

impl Container {
    /// A container with new user, mount and pid namespaces, the current user mapped to root
    /// inside (`nobody` on the host when the host runs as root), and a fresh `/proc`.
    pub fn new() -> Self {
        let mut c = Container::empty();
        c.procfsmount("/proc");
        c
    }

    /// A container with nothing in it: an empty read-only tmpfs root, the user, mount and pid
    /// namespaces (always on) and the default id maps.
    pub fn empty() -> Self {
        Container {
            namespaces: [Namespace::User, Namespace::Mount, Namespace::Pid]
                .into_iter()
                .collect(),
            rootdir: None,
            mounts: BTreeMap::new(),
            fs: Vec::new(),
            hostname: None,
            uid_maps: vec![IdMap {
                container_id: 0,
                host_id: idmap::default_host_uid(),
                size: 1,
            }],
            gid_maps: vec![IdMap {
                container_id: 0,
                host_id: idmap::default_host_gid(),
                size: 1,
            }],
            user: None,
            rlimits: BTreeMap::new(),
            seccomp: None,
            landlock: None,
            resources: crate::cgroup::Limits::default(),
            network: None,
            loopback: false,
            runctl: Default::default(),
            config_errors: Vec::new(),
            ops: Vec::new(),
            params: crate::ops::Params::default(),
            recording: crate::denial::Recording::Off,
        }
    }

    /// Explains every refusal: the command's [`ExitStatus::denials`](crate::ExitStatus::denials)
    /// list what seccomp failed, what landlock refuses (predicted from its rules), which scope
    /// refused what, which limit ended it, and which host path the container lacked, each with
    /// the smallest change that allows it. Costs a round trip to the shim on every system call
    /// that reaches a path or port, and on every refused one; the answers stay the policy's own.
    /// Needs a seccomp filter (the default profile has one).
    pub fn explain(&mut self, on: bool) -> &mut Self {
        self.recording = if on {
            crate::denial::Recording::Explain
        } else {
            crate::denial::Recording::Off
        };
        self
    }

    /// Records what the command uses instead of confining its calls: every system call is
    /// allowed and recorded, with the paths, rights, socket families and ports it reached
    /// ([`ExitStatus::learned`](crate::ExitStatus::learned)); the container's own seccomp filter is
    /// not installed. For learning a profile from sample inputs (`hatchery learn`) — **never
    /// on untrusted inputs**: a recorded command is confined by namespaces, landlock and limits
    /// only.
    pub fn learn(&mut self, on: bool) -> &mut Self {
        self.recording = if on {
            crate::denial::Recording::Learn
        } else {
            crate::denial::Recording::Off
        };
        self
    }

    /// The limits a denial may suggest raising.
    pub(crate) fn denial_limits(&self) -> crate::denial::Limits {
        let soft = |r: Resource| {
            self.rlimits
                .values()
                .find(|x| x.resource == r)
                .map(|x| x.soft)
        };
        crate::denial::Limits {
            cpu_secs: soft(Resource::Cpu),
            fsize: soft(Resource::Fsize),
            memory: self.resources.memory,
            filter: self.seccomp.clone(),
        }
    }

    fn target(&mut self, what: &'static str, path: &str) -> Option<String> {
        let t = normalize_container_path(path);
        if t.is_none() {
            self.config_errors.push((
                what,
                path.to_string(),
                "must be an absolute path without `..`",
            ));
        }
        t
    }

    /// Unshares one more namespace (cgroup, ipc, network or uts). A network namespace has only
    /// a loopback device, down as in hakoniwa ([`loopback`](Container::loopback) brings it up,
    /// [`network`](Container::network) connects it).
    pub fn unshare(&mut self, namespace: Namespace) -> &mut Self {
        self.namespaces.insert(namespace);
        self
    }

    /// Shares a namespace with the host again (the opposite of [`unshare`](Container::unshare)).
    /// The user, mount and pid namespaces cannot be shared in hatchery: asking is an
    /// [`Error::InvalidConfig`] at spawn.
    pub fn share(&mut self, namespace: Namespace) -> &mut Self {
        match namespace {
            Namespace::User | Namespace::Mount | Namespace::Pid => self.config_errors.push((
                "shared namespace",
                namespace.to_string(),
                "user, mount and pid namespaces are always new in hatchery",
            )),
            _ => {
                self.namespaces.remove(&namespace);
            }
        }
        self
    }

    /// Changes how the container runs; see [`Runctl`].
    pub fn runctl(&mut self, ctl: Runctl) -> &mut Self {
        if ctl == Runctl::RootdirRW {
            if let Some((_, rw)) = &mut self.rootdir {
                *rw = true;
            }
        }
        self.runctl.insert(ctl);
        self
    }

    /// Uses the host directory `host_path` as the root, read-only (see
    /// [`rootdir_rw`](Container::rootdir_rw)). The directory is never written: the root is a
    /// tmpfs into which each top-level entry of `host_path` is bound read-only (recursively,
    /// submounts included, nosuid, nodev) before anything else is set up, so mount points and
    /// files the directory lacks are made in the tmpfs. A [`file`](Container::file) over an
    /// existing file is bound over it; a path below an entry that does not exist there fails
    /// with `EROFS`. Costs one bind per top-level entry.
    pub fn rootdir(&mut self, host_path: impl AsRef<Path>) -> &mut Self {
        let rw = self.runctl.contains(&Runctl::RootdirRW);
        self.rootdir = Some((host_path.as_ref().to_path_buf(), rw));
        self
    }

    /// Uses the host directory `host_path` as a writable root (nosuid, nodev, recursively).
    /// Mount points and files are created in it as needed, never through a symbolic link.
    pub fn rootdir_rw(&mut self, host_path: impl AsRef<Path>) -> &mut Self {
        self.rootdir = Some((host_path.as_ref().to_path_buf(), true));
        self
    }

    /// Mounts the subdirectories of `host_path` read-only at the same places in the container,
    /// as hakoniwa does: entries that are symbolic links to directories (a merged-/usr `/bin ->
    /// usr/bin`) are recreated as links, `/proc` is skipped, anything but a directory is left
    /// out. For `/` only the system directories are taken: `bin etc lib lib64 lib32 sbin usr`.
    /// Fails when `host_path` cannot be read (hakoniwa's `rootfs` returns a `Result` too, so
    /// `c.rootfs("/")?` reads the same in both).
    pub fn rootfs(&mut self, host_path: impl AsRef<Path>) -> Result<&mut Self> {
        let dir = std::fs::canonicalize(host_path.as_ref()).map_err(Error::io("rootfs"))?;
        let mut entries: Vec<PathBuf> = Vec::new();
        if dir == Path::new("/") {
            for name in ["bin", "etc", "lib", "lib64", "lib32", "sbin", "usr"] {
                entries.push(dir.join(name));
            }
        } else {
            for e in std::fs::read_dir(&dir).map_err(Error::io("rootfs"))? {
                entries.push(e.map_err(Error::io("rootfs"))?.path());
            }
            entries.sort();
        }
        for entry in entries {
            if !entry.is_dir() {
                continue;
            }
            let Ok(rel) = entry.strip_prefix(&dir) else {
                continue;
            };
            let target = format!("/{}", rel.to_string_lossy());
            if target == "/proc" {
                continue;
            }
            if entry.is_symlink() {
                let original = std::fs::read_link(&entry).map_err(Error::io("rootfs"))?;
                self.symlink(&original.to_string_lossy(), &target);
            } else {
                self.bindmount_ro(&entry.to_string_lossy(), &target);
            }
        }
        Ok(self)
    }

    /// Bind-mounts `host_path` read-only (recursively, nosuid, nodev) at `container_path`.
    pub fn bindmount_ro(&mut self, host_path: &str, container_path: &str) -> &mut Self {
        self.bind(host_path, container_path, false)
    }

    /// Bind-mounts `host_path` read-write (recursively, nosuid, nodev) at `container_path`.
    pub fn bindmount_rw(&mut self, host_path: &str, container_path: &str) -> &mut Self {
        self.bind(host_path, container_path, true)
    }

    fn bind(&mut self, host_path: &str, container_path: &str, writable: bool) -> &mut Self {
        if let Some(t) = self.target("bind mount target", container_path) {
            self.mounts.insert(
                t,
                MountEntry::Bind {
                    source: PathBuf::from(host_path),
                    writable,
                },
            );
        }
        self
    }

    /// Mounts a minimal /dev at `container_path`: null zero full random urandom tty, the
    /// fd/stdin/stdout/stderr links, a private devpts (with ptmx) and a /dev/shm tmpfs of
    /// [`DEFAULT_SHM_BYTES`](hatchery_protocol::DEFAULT_SHM_BYTES) (64 MiB; in a pool every
    /// request gets its own).
    pub fn devfsmount(&mut self, container_path: &str) -> &mut Self {
        if let Some(t) = self.target("devfs mount target", container_path) {
            self.mounts.insert(t, MountEntry::Devfs);
        }
        self
    }

    /// Mounts a fresh tmpfs (nosuid, nodev, mode 1777) at `container_path`, of at most
    /// [`DEFAULT_TMPFS_BYTES`](hatchery_protocol::DEFAULT_TMPFS_BYTES) (64 MiB; see
    /// [`tmpfsmount_sized`](Container::tmpfsmount_sized) for another size).
    pub fn tmpfsmount(&mut self, container_path: &str) -> &mut Self {
        self.tmpfs(container_path, None, false)
    }

    /// Mounts a fresh tmpfs of at most `size_bytes` at `container_path`.
    pub fn tmpfsmount_sized(&mut self, container_path: &str, size_bytes: u64) -> &mut Self {
        self.tmpfs(container_path, Some(size_bytes), false)
    }

    /// Mounts a tmpfs (of at most 64 MiB) that is made read-only once files were placed in it.
    pub fn tmpfsmount_ro(&mut self, container_path: &str) -> &mut Self {
        self.tmpfs(container_path, None, true)
    }

    fn tmpfs(&mut self, path: &str, size: Option<u64>, read_only: bool) -> &mut Self {
        if let Some(t) = self.target("tmpfs mount target", path) {
            self.mounts.insert(t, MountEntry::Tmpfs { size, read_only });
        }
        self
    }

    /// Mounts a read-only overlay of the host directories in `lowerdir_host_path` (hakoniwa's
    /// form: `:`-separated, uppermost first; the kernel wants at least two without an upper
    /// directory) at `container_path`, nosuid and nodev.
    pub fn overlaymount_ro(&mut self, lowerdir_host_path: &str, container_path: &str) -> &mut Self {
        let lower = lowerdir_host_path.split(':').map(PathBuf::from).collect();
        if let Some(t) = self.target("overlay mount target", container_path) {
            self.mounts
                .insert(t, MountEntry::Overlay { lower, upper: None });
        }
        self
    }

    /// Mounts a writable overlay at `container_path`: the host directories in
    /// `lowerdir_host_path` (`:`-separated) below `upperdir_host_path`, which takes the
    /// changes, with `workdir_host_path` (an empty directory on the same file system as the
    /// upper one) for the kernel's bookkeeping. nosuid and nodev; the overlay uses `user.*`
    /// extended attributes (`userxattr`), as an overlay in a user namespace must.
    pub fn overlaymount_rw(
        &mut self,
        lowerdir_host_path: &str,
        upperdir_host_path: &str,
        workdir_host_path: &str,
        container_path: &str,
    ) -> &mut Self {
        let lower = lowerdir_host_path.split(':').map(PathBuf::from).collect();
        let upper = Some((
            PathBuf::from(upperdir_host_path),
            PathBuf::from(workdir_host_path),
        ));
        if let Some(t) = self.target("overlay mount target", container_path) {
            self.mounts.insert(t, MountEntry::Overlay { lower, upper });
        }
        self
    }

    /// Mounts a procfs of the container's pid namespace at `container_path`.
    pub fn procfsmount(&mut self, container_path: &str) -> &mut Self {
        if let Some(t) = self.target("procfs mount target", container_path) {
            self.mounts.insert(t, MountEntry::Proc);
        }
        self
    }

    /// Creates a file with `contents` (mode 0644) at `container_path`, after the mounts.
    pub fn file(&mut self, container_path: &str, contents: impl AsRef<[u8]>) -> &mut Self {
        self.file_with_mode(container_path, contents, 0o644)
    }

    /// Creates a file with `contents` and permission bits `mode`.
    pub fn file_with_mode(
        &mut self,
        container_path: &str,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> &mut Self {
        if let Some(path) = self.target("file path", container_path) {
            self.fs.push(FsEntry::File {
                path,
                contents: contents.as_ref().to_vec(),
                mode,
            });
        }
        self
    }

    /// Creates a directory (and its parents) with permission bits `mode`, after the mounts.
    pub fn dir(&mut self, container_path: &str, mode: u32) -> &mut Self {
        if let Some(path) = self.target("directory path", container_path) {
            self.fs.push(FsEntry::Dir { path, mode });
        }
        self
    }

    /// Creates a symbolic link at `link` pointing to `original`, after the mounts.
    pub fn symlink(&mut self, original: &str, link: &str) -> &mut Self {
        if let Some(link) = self.target("symlink path", link) {
            self.fs.push(FsEntry::Symlink {
                original: original.to_string(),
                link,
            });
        }
        self
    }

    /// Maps container uid `container_id` to the default host uid (the current user, or
    /// `nobody` when the host runs as root).
    pub fn uidmap(&mut self, container_id: u32) -> &mut Self {
        self.uid_maps = vec![IdMap {
            container_id,
            host_id: idmap::default_host_uid(),
            size: 1,
        }];
        self
    }

    /// Maps container gid `container_id` to the default host gid.
    pub fn gidmap(&mut self, container_id: u32) -> &mut Self {
        self.gid_maps = vec![IdMap {
            container_id,
            host_id: idmap::default_host_gid(),
            size: 1,
        }];
        self
    }

    /// The uid ranges (the first is the one the shim and, by default, the command run as).
    pub fn get_uidmaps(&self) -> &[IdMap] {
        &self.uid_maps
    }

    /// The gid ranges.
    pub fn get_gidmaps(&self) -> &[IdMap] {
        &self.gid_maps
    }

    /// Sets several uid ranges `(container_id, host_id, count)`. More than one range, or a
    /// range that is not the current user, needs `newuidmap` and `/etc/subuid` (or a root host).
    /// The first range's container id is the uid the shim and, unless [`user`](Container::user)
    /// says otherwise, the command run as.
    pub fn uidmaps(&mut self, maps: &[(u32, u32, u32)]) -> &mut Self {
        self.uid_maps = ranges(maps);
        self
    }

    /// Sets several gid ranges, as [`uidmaps`](Container::uidmaps).
    pub fn gidmaps(&mut self, maps: &[(u32, u32, u32)]) -> &mut Self {
        self.gid_maps = ranges(maps);
        self
    }

    /// Runs the command as `user` (name or id), with primary `group` (default: the user's) and
    /// supplementary groups, all resolved in the container's own `/etc/passwd` and `/etc/group`.
    pub fn user(&mut self, user: &str, group: Option<&str>, supplementary: &[&str]) -> &mut Self {
        self.user = Some(UserSpec {
            user: user.to_string(),
            group: group.map(str::to_string),
            supplementary: supplementary.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// Sets the hostname (unshares the UTS namespace).
    pub fn hostname(&mut self, hostname: &str) -> &mut Self {
        self.namespaces.insert(Namespace::Uts);
        self.hostname = Some(hostname.to_string());
        self
    }

    /// Connects the container's own network namespace (see [`crate::network`]), as hakoniwa
    /// does: it takes effect only when [`Namespace::Network`] is unshared, e.g.
    /// `c.unshare(Namespace::Network).network(Pasta::default())`.
    ///
    /// [`Pasta::default()`]: crate::Pasta
    pub fn network<T: Into<Network>>(&mut self, network: T) -> &mut Self {
        self.network = Some(network.into());
        self
    }

    /// Brings the loopback device of the container's own network namespace up (a hatchery
    /// extension: hakoniwa leaves it down unless a [`network`](Container::network) configures
    /// it). The pool's [`default_profile`](crate::pool::default_profile) has it up.
    pub fn loopback(&mut self, up: bool) -> &mut Self {
        self.loopback = up;
        self
    }

    /// The network of the container's own network namespace, if any.
    pub fn get_network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// Sets a resource limit for the command. `u64::MAX` is unlimited.
    pub fn setrlimit(&mut self, resource: Rlimit, soft: u64, hard: u64) -> &mut Self {
        self.rlimits.insert(
            resource as u8,
            RlimitSpec {
                resource,
                soft,
                hard,
            },
        );
        self
    }

    /// Installs `filter` in every command, last, right before exec (compiled once, with
    /// libseccomp, in this process; see [`crate::seccomp`]). No filter by default, as in
    /// hakoniwa; the pool's [`default_profile`](crate::pool::default_profile) has
    /// [`Profile::Podman`](crate::seccomp::Profile::Podman).
    pub fn seccomp_filter(&mut self, filter: Filter) -> &mut Self {
        self.seccomp = Some(filter);
        self
    }

    /// Removes the seccomp filter.
    pub fn seccomp_unconfined(&mut self) -> &mut Self {
        self.seccomp = None;
        self
    }

    /// The seccomp filter, if any.
    pub fn seccomp(&self) -> Option<&Filter> {
        self.seccomp.as_ref()
    }

    /// Restricts every command with `ruleset` (plus rules derived from the mounts when it
    /// restricts the file system; see [`crate::landlock`]). Each command gets a domain of its
    /// own.
    pub fn landlock_ruleset(&mut self, ruleset: Ruleset) -> &mut Self {
        self.landlock = Some(ruleset);
        self
    }

    /// The landlock ruleset, if any.
    pub fn landlock(&self) -> Option<&Ruleset> {
        self.landlock.as_ref()
    }

    /// Limits the container's memory to `bytes` (RAM, no swap on top): a cgroup where one is
    /// available ([`crate::cgroup::mechanism`]), where exceeding it is reported as
    /// `MemoryExceeded`; `RLIMIT_AS` otherwise (allocations fail instead).
    pub fn cgroup_memory(&mut self, bytes: u64) -> &mut Self {
        self.resources.memory = Some(bytes);
        self
    }

    /// Limits the container's memory plus swap to `bytes` (hakoniwa's `--cgroup-memory-swap`:
    /// the total, not the swap alone; see [`Limits::memory_swap`](crate::cgroup::Limits)).
    pub fn cgroup_memory_swap(&mut self, bytes: u64) -> &mut Self {
        self.resources.memory_swap = Some(bytes);
        self
    }

    /// Limits the container to `n` processes and threads: a cgroup's `pids.max`, or
    /// `RLIMIT_NPROC` (counted per user namespace, so per container) without one.
    pub fn cgroup_pids_limit(&mut self, n: u64) -> &mut Self {
        self.resources.pids = Some(n);
        self
    }

    /// Limits the container's CPU bandwidth to `cpus` CPUs (`cpu.max` / CFS quota). Needs a
    /// cgroup: without one, starting fails with a typed error.
    pub fn cgroup_cpus(&mut self, cpus: f64) -> &mut Self {
        self.resources.cpus = Some(cpus);
        self
    }

    /// Sets the container's cgroup resources with hakoniwa's API ([`crate::cgroups`]): a CPU
    /// quota and period, a memory (and memory plus swap) limit, a pids limit. What hatchery does
    /// not enforce (CPU shares or weight, a memory reservation) makes spawn fail with
    /// [`Error::InvalidConfig`] instead of being ignored.
    pub fn cgroups_resources(&mut self, resources: crate::cgroups::Resources) -> &mut Self {
        match resources.to_limits() {
            Ok(l) => self.resources = l,
            Err(what) => self.config_errors.push((
                "cgroups resource",
                what.to_string(),
                "not enforced by hatchery (it sets CPU bandwidth, memory, swap and pids)",
            )),
        }
        self
    }

    /// The memory, pids and CPU limits.
    pub fn resource_limits(&self) -> crate::cgroup::Limits {
        self.resources
    }

    /// The landlock part of a setup plan: the ruleset with rules that mirror the mounts.
    pub(crate) fn landlock_plan(&self) -> Option<hatchery_protocol::LandlockPlan> {
        self.landlock.as_ref().map(|r| {
            let mut plan = r.plan(self.mirrored_paths());
            if self.abstract_sockets_shared() {
                plan.scoped &= !crate::landlock::SCOPE_ABSTRACT_UNIX_SOCKET;
            }
            plan
        })
    }

    /// Every path the landlock rules mirror, in setup order: the root, the mounts, the placed
    /// files and directories (symbolic links get no rule).
    fn mirrored_paths(&self) -> impl Iterator<Item = (&str, Mirror)> + '_ {
        let root = match self.rootdir {
            None => Mirror::TmpfsRoot,
            Some((_, false)) => Mirror::ReadOnly,
            Some((_, true)) => Mirror::Writable,
        };
        let mounts = self.mounts.iter().map(|(target, m)| {
            let mirror = match m {
                MountEntry::Bind {
                    writable: false, ..
                }
                | MountEntry::Tmpfs {
                    read_only: true, ..
                } => Mirror::ReadOnly,
                MountEntry::Bind { writable: true, .. }
                | MountEntry::Tmpfs {
                    read_only: false, ..
                } => Mirror::Writable,
                MountEntry::Proc => Mirror::Proc,
                MountEntry::Devfs => Mirror::Dev,
                MountEntry::Overlay { upper: None, .. } => Mirror::ReadOnly,
                MountEntry::Overlay { upper: Some(_), .. } => Mirror::Writable,
            };
            (target.as_str(), mirror)
        });
        let fs = self.fs.iter().filter_map(|e| match e {
            FsEntry::File { path, mode, .. } => Some((
                path.as_str(),
                Mirror::File {
                    executable: mode & 0o111 != 0,
                },
            )),
            FsEntry::Dir { path, .. } => Some((path.as_str(), Mirror::Dir)),
            FsEntry::Symlink { .. } => None,
        });
        std::iter::once(("/", root))
            .chain(mounts)
            .chain(self.ops_mirrored())
            .chain(fs)
    }

    /// The namespaces this container gets.
    pub fn namespaces(&self) -> impl Iterator<Item = Namespace> + '_ {
        self.namespaces.iter().copied()
    }

    /// Checks the configuration (paths, id maps) without starting anything.
    pub fn validate(&self) -> Result<()> {
        if let Some((what, value, reason)) = self.config_errors.first() {
            return Err(Error::InvalidConfig {
                what,
                value: value.clone(),
                reason,
            });
        }
        idmap::validate("uid", &self.uid_maps)?;
        idmap::validate("gid", &self.gid_maps)?;
        if let Some(h) = &self.hostname {
            if h.len() > 64 || h.is_empty() {
                return Err(Error::InvalidConfig {
                    what: "hostname",
                    value: h.clone(),
                    reason: "must be 1 to 64 bytes",
                });
            }
        }
        self.validate_ops()
    }

    /// The setup log lines hakoniwa prints at debug level (`hakoniwa run -v`), for this
    /// container: the namespaces, the root, the mounts, the file-system operations, the id maps,
    /// the rlimits, landlock and seccomp, plus hatchery's own lines (the loopback, the memory,
    /// pids and CPU limits). With `trace` (`-vv`), one line per rlimit, landlock rule and
    /// seccomp rule too. [`Command::setup_log`](crate::Command::setup_log) adds the command's.
    pub fn setup_log(&self, trace: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut ns: Vec<String> = self.namespaces.iter().map(|n| n.to_string()).collect();
        ns.sort();
        out.push(format!("Unshare namespaces: {}", ns.join(", ")));
        match &self.rootdir {
            None => out.push("Mount:  <root>: tmpfs (read-only once built)".into()),
            Some((p, rw)) => out.push(format!(
                "Mount:  <root>: {}{}",
                p.display(),
                if *rw { " (read-write)" } else { "" }
            )),
        }
        for (t, m) in &self.mounts {
            out.push(match m {
                MountEntry::Bind { source, writable } => format!(
                    "Mount: bind_{}: {} -> {t}",
                    if *writable { "rw" } else { "ro" },
                    source.display(),
                ),
                MountEntry::Tmpfs { size, read_only } => format!(
                    "Mount:   tmpfs: {t} (size {}{})",
                    size.unwrap_or(DEFAULT_TMPFS_BYTES),
                    if *read_only { ", read-only" } else { "" }
                ),
                MountEntry::Proc => format!("Mount:    proc: {t}"),
                MountEntry::Overlay { lower, upper } => format!(
                    "Mount: overlay: {t} (lower {}{})",
                    lower
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                    match upper {
                        Some((u, w)) => format!(", upper {}, work {}", u.display(), w.display()),
                        None => String::new(),
                    }
                ),
                MountEntry::Devfs => format!("Mount:   devfs: {t} (shm size {DEFAULT_SHM_BYTES})"),
            });
        }
        let mut fs: Vec<(&str, String)> = self
            .fs
            .iter()
            .map(|f| match f {
                FsEntry::Dir { path, mode } => {
                    (path.as_str(), format!("  mkdir: {path} ({mode:o})"))
                }
                FsEntry::File { path, contents, .. } => (
                    path.as_str(),
                    format!("  write: {path} ({} bytes)", contents.len()),
                ),
                FsEntry::Symlink { original, link } => {
                    (link.as_str(), format!("symlink: {link} -> {original}"))
                }
            })
            .collect();
        fs.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(fs.into_iter().map(|(_, l)| format!("FsOperation: {l}")));
        out.extend(self.describe_ops());
        for (kind, maps) in [("UID", &self.uid_maps), ("GID", &self.gid_maps)] {
            for m in maps {
                out.push(format!(
                    "{kind} mapping: container_id: {}, host_id: {}, count: {}",
                    m.container_id, m.host_id, m.size
                ));
            }
        }
        if let Some(u) = &self.user {
            let mut line = format!("User: {}", u.user);
            if let Some(g) = &u.group {
                line.push_str(&format!(", group: {g}"));
            }
            if !u.supplementary.is_empty() {
                line.push_str(&format!(", supplementary: {}", u.supplementary.join(",")));
            }
            out.push(line);
        }
        if let Some(h) = &self.hostname {
            out.push(format!("Hostname: {h}"));
        }
        if self.namespaces.contains(&Namespace::Network) {
            out.push(match (&self.network, self.loopback) {
                (Some(crate::network::Network::Pasta(_)), _) => {
                    "Network: pasta (user-mode TCP/IP stack)".to_string()
                }
                (None, true) => "Network: own namespace, loopback up".to_string(),
                (None, false) => "Network: own namespace, loopback down".to_string(),
            });
        } else {
            out.push(
                "Network: the host's (its interfaces, ports and abstract unix sockets)".to_string(),
            );
        }
        if !self.rlimits.is_empty() {
            let mut r: Vec<&RlimitSpec> = self.rlimits.values().collect();
            r.sort_by_key(|r| r.resource.name());
            let names: Vec<&str> = r.iter().map(|r| r.resource.name()).collect();
            out.push(format!("Rlimit: {}", names.join(", ")));
            if trace {
                for l in r {
                    out.push(format!(
                        "Rlimit rule: {:>7}: ({}, {})",
                        l.resource.name(),
                        l.soft,
                        l.hard
                    ));
                }
            }
        }
        if let Some(r) = &self.landlock {
            let mut names: Vec<&str> = r.restricted().map(|(res, _)| res.name()).collect();
            names.sort();
            if !names.is_empty() {
                out.push(format!("Landlock: {}", names.join(", ")));
            }
            if trace {
                for rule in r.fs_rules() {
                    out.push(format!("Landlock FS rule: {rule}"));
                }
                for rule in r.net_rules() {
                    out.push(format!("Landlock NET rule: {rule}"));
                }
            }
        }
        if let Some(f) = &self.seccomp {
            // hakoniwa names architectures by their libseccomp names (`X8664`): the native
            // one is shown as what it is.
            let native = match std::env::consts::ARCH {
                "x86_64" => "X8664",
                "aarch64" => "Aarch64",
                "riscv64" => "Riscv64",
                "x86" => "X86",
                "arm" => "Arm",
                _ => "Native",
            };
            let mut arches: Vec<String> = f
                .architectures()
                .iter()
                .map(|a| match a {
                    crate::seccomp::Arch::Native => native.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            arches.dedup();
            arches.sort();
            out.push(format!(
                "Seccomp: Load {} rules for architectures({})",
                f.rules_len() + 1,
                arches.join(", ")
            ));
            if trace {
                out.push(format!("Seccomp rule: ... -> {:?}", f.default_action()));
                out.extend(
                    f.rules_text()
                        .into_iter()
                        .map(|r| format!("Seccomp rule: {r}")),
                );
            }
        }
        let l = self.resources;
        if l.any() {
            let mut parts = Vec::new();
            if let Some(m) = l.memory {
                parts.push(format!("memory {m}"));
            }
            if let Some(s) = l.memory_swap {
                parts.push(format!("memory+swap {s}"));
            }
            if let Some(p) = l.pids {
                parts.push(format!("pids {p}"));
            }
            if let Some(c) = l.cpus {
                parts.push(format!("cpus {c}"));
            }
            out.push(format!(
                "Cgroup: {} (via {:?})",
                parts.join(", "),
                crate::cgroup::mechanism()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_checked() {
        assert_eq!(
            normalize_container_path("/a//b/./c/").as_deref(),
            Some("/a/b/c")
        );
        assert_eq!(normalize_container_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_container_path("a"), None);
        assert_eq!(normalize_container_path("/a/../b"), None);
        let mut c = Container::new();
        c.bindmount_ro("/usr", "usr");
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn landlock_mirrors_the_root_mounts_and_files() {
        let mut c = Container::new();
        c.bindmount_ro("/usr", "/usr")
            .bindmount_rw("/var/tmp", "/data")
            .devfsmount("/dev")
            .tmpfsmount("/tmp")
            .tmpfsmount_ro("/ro")
            .file("/etc/passwd", "root:x:0:0::/:/bin/sh\n")
            .file_with_mode("/bin/tool", "#!/bin/sh\n", 0o755)
            .dir("/var/empty", 0o755)
            .symlink("/usr/bin", "/bin2");
        let got: Vec<(&str, Mirror)> = c.mirrored_paths().collect();
        assert_eq!(
            got,
            vec![
                ("/", Mirror::TmpfsRoot),
                ("/data", Mirror::Writable),
                ("/dev", Mirror::Dev),
                ("/proc", Mirror::Proc),
                ("/ro", Mirror::ReadOnly),
                ("/tmp", Mirror::Writable),
                ("/usr", Mirror::ReadOnly),
                ("/etc/passwd", Mirror::File { executable: false }),
                ("/bin/tool", Mirror::File { executable: true }),
                ("/var/empty", Mirror::Dir),
            ]
        );
        c.rootdir("/srv");
        assert_eq!(c.mirrored_paths().next(), Some(("/", Mirror::ReadOnly)));
        c.rootdir_rw("/srv");
        assert_eq!(c.mirrored_paths().next(), Some(("/", Mirror::Writable)));
    }

    #[test]
    fn root_host_maps_to_nobody_by_default() {
        let c = Container::new();
        let expected = if nix::unistd::geteuid().is_root() {
            idmap::NOBODY
        } else {
            nix::unistd::geteuid().as_raw()
        };
        assert_eq!(c.uid_maps[0].host_id, expected);
        assert_eq!(c.uid_maps[0].container_id, 0);
        assert!(c.validate().is_ok());
    }
}
