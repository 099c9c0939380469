//! hakurei's ops and parameters as [`Container`] methods: adding them (reading the host where an
//! op needs it, as hakurei's `early` stage), checking them before anything starts, describing
//! them, and lowering them into the plan. Above `container` and `ops` (both pure data).

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::container::Container;
use crate::error::{Error, Result};
use crate::landlock::Mirror;
use crate::ops::{
    BindFlags, Op, RemountFlags, SchedPolicy, Upper, AUTO_ROOT_SKIPPED, DEFAULT_DAEMON_TIMEOUT,
    DEFAULT_WAIT_DELAY, EPHEMERAL_OVERLAY_BYTES,
};

impl Container {
    fn op_target(&mut self, what: &'static str, path: &str) -> Option<String> {
        crate::container::normalize_container_path(path).or_else(|| {
            self.config_errors.push((
                what,
                path.to_string(),
                "must be an absolute path without `..`",
            ));
            None
        })
    }

    fn host_path(&mut self, what: &'static str, p: &Path) -> Option<PathBuf> {
        if p.is_absolute() {
            Some(p.to_path_buf())
        } else {
            self.config_errors.push((
                what,
                p.to_string_lossy().into_owned(),
                "must be an absolute host path",
            ));
            None
        }
    }

    /// Mounts a persistent overlay at `target` (hakurei's `Overlay`): the `lower` host
    /// directories (the uppermost first) under the host directory `upper`, where every change
    /// lands and stays; `work` is an empty host directory on the same file system as `upper`.
    /// The overlay is `nosuid` and `nodev`, and works unprivileged (overlayfs in the container's
    /// user namespace, with `userxattr`): the container's user must be able to write `upper`
    /// and `work`. [`validate`](Container::validate) checks that every directory exists and
    /// that `upper` and `work` share a file system. Costs one mount.
    pub fn overlay(
        &mut self,
        target: &str,
        upper: impl AsRef<Path>,
        work: impl AsRef<Path>,
        lower: &[impl AsRef<Path>],
    ) -> &mut Self {
        let (u, w) = (upper.as_ref(), work.as_ref());
        let (Some(u), Some(w)) = (
            self.host_path("overlay upper dir", u),
            self.host_path("overlay work dir", w),
        ) else {
            return self;
        };
        self.push_overlay(target, lower, Upper::Host { upper: u, work: w })
    }

    /// Mounts an overlay of the `lower` host directories (the uppermost first) at `target`
    /// whose upper and work directories are on a fresh tmpfs of
    /// [`EPHEMERAL_OVERLAY_BYTES`] (hakurei's `OverlayEphemeral`): the container may change
    /// anything, nothing reaches the host, and it is gone with the container. Not available in
    /// a pool, whose requests would share it. Costs one tmpfs and one overlay mount.
    pub fn overlay_ephemeral(&mut self, target: &str, lower: &[impl AsRef<Path>]) -> &mut Self {
        self.push_overlay(target, lower, Upper::Ephemeral)
    }

    /// Mounts a read-only overlay of the `lower` host directories (the uppermost first; at
    /// least two, the kernel's rule: for one, use a read-only bind) at `target` (hakurei's
    /// `OverlayReadonly`).
    pub fn overlay_readonly(&mut self, target: &str, lower: &[impl AsRef<Path>]) -> &mut Self {
        self.push_overlay(target, lower, Upper::ReadOnly)
    }

    fn push_overlay(
        &mut self,
        target: &str,
        lower: &[impl AsRef<Path>],
        upper: Upper,
    ) -> &mut Self {
        let mut lowers = Vec::with_capacity(lower.len());
        for l in lower {
            match self.host_path("overlay lower dir", l.as_ref()) {
                Some(p) => lowers.push(p),
                None => return self,
            }
        }
        if let Some(target) = self.op_target("overlay target", target) {
            self.ops.push(Op::Overlay {
                target,
                lower: lowers,
                upper,
            });
        }
        self
    }

    /// Mounts a fresh tmpfs (`nosuid`, `nodev`) of at most `size_bytes` with root mode `perm` at
    /// `target` (hakurei's `Tmpfs`). A size of 0 is refused ([`Error::TmpfsSize`]): the kernel
    /// would read it as unbounded. In a pool every request gets its own.
    pub fn mount_tmpfs(&mut self, target: &str, size_bytes: u64, perm: u32) -> &mut Self {
        if let Some(target) = self.op_target("tmpfs target", target) {
            self.ops.push(Op::Tmpfs {
                target,
                size: size_bytes,
                perm,
                read_only: false,
            });
        }
        self
    }

    /// Mounts a read-only tmpfs with root mode `perm` at `target` (hakurei's `Readonly`): an
    /// empty directory nothing can write, or a place for [`place`](Container::place)d files
    /// (made read-only once the tree is built).
    pub fn readonly_tmpfs(&mut self, target: &str, perm: u32) -> &mut Self {
        if let Some(target) = self.op_target("read-only tmpfs target", target) {
            self.ops.push(Op::Tmpfs {
                target,
                size: 1 << 20,
                perm,
                read_only: true,
            });
        }
        self
    }

    /// Creates the directory `path` (and its parents) with mode `perm`, in order with the other
    /// ops (hakurei's `Mkdir`).
    pub fn mkdir(&mut self, path: &str, perm: u32) -> &mut Self {
        if let Some(path) = self.op_target("mkdir path", path) {
            self.ops.push(Op::Mkdir { path, perm });
        }
        self
    }

    /// Places a read-only (0444) file holding `data` at `path`, in order with the other ops
    /// (hakurei's `Place`; [`file`](Container::file) places after every op). The contents travel
    /// in the plan's sealed memfd.
    pub fn place(&mut self, path: &str, data: impl AsRef<[u8]>) -> &mut Self {
        if let Some(path) = self.op_target("place path", path) {
            self.ops.push(Op::Place {
                path,
                data: data.as_ref().to_vec(),
            });
        }
        self
    }

    /// Creates a symbolic link at `target` pointing to `linkname` (hakurei's `Link`). With
    /// `dereference`, `linkname` must be an absolute host path that is itself a link, and the
    /// new link points where that one does (read now, on the host).
    pub fn link(&mut self, target: &str, linkname: &str, dereference: bool) -> &mut Self {
        let linkname = if dereference {
            if !linkname.starts_with('/') {
                self.config_errors.push((
                    "link to dereference",
                    linkname.to_string(),
                    "must be an absolute host path",
                ));
                return self;
            }
            match std::fs::read_link(linkname) {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(_) => {
                    self.config_errors.push((
                        "link to dereference",
                        linkname.to_string(),
                        "is not a symbolic link on the host",
                    ));
                    return self;
                }
            }
        } else {
            linkname.to_string()
        };
        if linkname.is_empty() {
            self.config_errors
                .push(("link name", linkname, "must not be empty"));
            return self;
        }
        if let Some(target) = self.op_target("link path", target) {
            self.ops.push(Op::Link { target, linkname });
        }
        self
    }

    /// Adds `flags` to the mount at `target` and every mount below it (hakurei's `Remount`):
    /// read-only, `nosuid`, `nodev`, `noexec`. It only restricts. `target` must be a mount point
    /// when the op runs (else the setup fails with `Remount` and `EINVAL`).
    pub fn remount(&mut self, target: &str, flags: RemountFlags) -> &mut Self {
        if let Some(target) = self.op_target("remount target", target) {
            self.ops.push(Op::Remount { target, flags });
        }
        self
    }

    /// Bind-mounts the host path `source` at `target` (recursively, `nosuid`) with hakurei's
    /// flags: read-only unless [`BindFlags::WRITABLE`], `nodev` unless [`BindFlags::DEVICE`],
    /// and a missing source fails the setup unless [`BindFlags::OPTIONAL`], which skips it.
    pub fn bind_with(
        &mut self,
        source: impl AsRef<Path>,
        target: &str,
        flags: BindFlags,
    ) -> &mut Self {
        let Some(source) = self.host_path("bind source", source.as_ref()) else {
            return self;
        };
        if let Some(target) = self.op_target("bind target", target) {
            self.ops.push(Op::Bind {
                source,
                target,
                flags,
            });
        }
        self
    }

    /// Mounts a minimal /dev at `target` (hakurei's `Dev`), read-only once the tree is built
    /// (see [`devfsmount`](Container::devfsmount) for what it holds); with `mqueue`, a private
    /// POSIX message-queue file system at `mqueue/` (which unshares the IPC namespace).
    pub fn dev(&mut self, target: &str, mqueue: bool) -> &mut Self {
        self.push_dev(target, mqueue, false)
    }

    /// [`dev`](Container::dev), left writable (hakurei's `DevWritable`): the command can create
    /// files in it. Follow it with a [`remount`](Container::remount) when only the setup needs
    /// to write there. Not available in a pool, whose requests would share it.
    pub fn dev_writable(&mut self, target: &str, mqueue: bool) -> &mut Self {
        self.push_dev(target, mqueue, true)
    }

    fn push_dev(&mut self, target: &str, mqueue: bool, writable: bool) -> &mut Self {
        if mqueue {
            self.unshare(crate::Namespace::Ipc);
        }
        if let Some(target) = self.op_target("dev target", target) {
            if mqueue {
                let base = target.trim_end_matches('/');
                self.params.mqueue_paths.push(format!("{base}/mqueue"));
            }
            self.ops.push(Op::Dev {
                target,
                mqueue,
                writable,
            });
        }
        self
    }

    /// Binds every top-level entry of the host directory `host` onto the container's root with
    /// `flags` (hakurei's `Root`, "auto root"), except [`AUTO_ROOT_SKIPPED`]; symbolic links are
    /// recreated as links. The directory is read now. Allowed once ([`Error::OpRepeat`]).
    /// Costs one bind per entry.
    pub fn auto_root(&mut self, host: impl AsRef<Path>, flags: BindFlags) -> &mut Self {
        let Some(host) = self.host_path("auto-root directory", host.as_ref()) else {
            return self;
        };
        let Some(entries) = self.read_host_dir("auto-root directory", &host) else {
            return self;
        };
        let mut ops = Vec::new();
        for (name, link) in entries {
            if AUTO_ROOT_SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let target = format!("/{name}");
            ops.push(match link {
                Some(linkname) => Op::Link { target, linkname },
                None => Op::Bind {
                    source: host.join(&name),
                    target,
                    flags,
                },
            });
        }
        self.ops.push(Op::AutoRoot { host, ops });
        self
    }

    /// Mirrors the host directory `host` (usually `/etc`) into the container's `/etc` entry by
    /// entry (hakurei's `Etc`, "auto etc"): each entry is bound read-only at
    /// `/etc/.host/PREFIX/NAME` and `/etc/NAME` links to it; links are recreated as links,
    /// `mtab` points to `/proc/mounts`, and `passwd` and `group` are left to the container. What
    /// [`pool::etc_is_secret`](crate::pool::etc_is_secret) names (shadow, sudoers, ssh keys, …)
    /// is never mirrored: a directory holding one is mirrored entry by entry without it. What
    /// the container provides itself at `/etc/NAME` (a mount, a [`file`](Container::file)) is
    /// left to it. Any bind of `/etc` itself (as [`rootfs("/")`](Container::rootfs) makes) is dropped, since
    /// `/etc` becomes a directory of the container. The directory is read now. Allowed once
    /// ([`Error::OpRepeat`]). Costs one bind per entry.
    pub fn auto_etc(&mut self, host: impl AsRef<Path>, prefix: &str) -> &mut Self {
        let Some(host) = self.host_path("auto-etc directory", host.as_ref()) else {
            return self;
        };
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|c| c == "..") {
            self.config_errors.push((
                "auto-etc prefix",
                prefix,
                "must be a relative path without `..`",
            ));
            return self;
        }
        let base = if prefix.is_empty() {
            "/etc/.host".to_string()
        } else {
            format!("/etc/.host/{prefix}")
        };
        let mut ops = vec![Op::Mkdir {
            path: "/etc".into(),
            perm: 0o755,
        }];
        let Some(entries) = self.read_host_dir("auto-etc directory", &host) else {
            return self;
        };
        for (name, link) in entries {
            let target = format!("/etc/{name}");
            match (name.as_str(), link) {
                (".host" | "passwd" | "group", _) => {}
                ("mtab", _) => ops.push(Op::Link {
                    target,
                    linkname: "/proc/mounts".into(),
                }),
                _ if crate::pool::etc_is_secret(&target) => {}
                (_, Some(linkname)) => ops.push(Op::Link { target, linkname }),
                (_, None) => {
                    let bound = format!("{base}/{name}");
                    self.mirror_etc_entry(&mut ops, &host.join(&name), &target, &bound);
                    ops.push(Op::Link {
                        target,
                        linkname: format!("{}/{name}", base.trim_start_matches("/etc/")),
                    });
                }
            }
        }
        self.mounts.remove("/etc");
        self.ops.push(Op::AutoEtc { host, prefix, ops });
        self
    }

    /// Binds `source` (the host entry for container path `name`) read-only at `bound`, or, when
    /// a secret lies below it, mirrors its entries one by one without the secret.
    fn mirror_etc_entry(&mut self, ops: &mut Vec<Op>, source: &Path, name: &str, bound: &str) {
        let holds_secret = crate::pool::ETC_NEVER
            .iter()
            .any(|s| Path::new(s).starts_with(name) && *s != name);
        if !holds_secret || !source.is_dir() {
            ops.push(Op::Bind {
                source: source.to_path_buf(),
                target: bound.to_string(),
                flags: BindFlags::NONE,
            });
            return;
        }
        ops.push(Op::Mkdir {
            path: bound.to_string(),
            perm: 0o755,
        });
        let Some(entries) = self.read_host_dir("auto-etc directory", source) else {
            return;
        };
        for (entry, link) in entries {
            let inner = format!("{name}/{entry}");
            let inner_bound = format!("{bound}/{entry}");
            if crate::pool::etc_is_secret(&inner) {
                continue;
            }
            match link {
                Some(linkname) => ops.push(Op::Link {
                    target: inner_bound,
                    linkname,
                }),
                None => self.mirror_etc_entry(ops, &source.join(&entry), &inner, &inner_bound),
            }
        }
    }

    /// The entries of a host directory, sorted, with the original of each symbolic link.
    fn read_host_dir(
        &mut self,
        what: &'static str,
        dir: &Path,
    ) -> Option<Vec<(String, Option<String>)>> {
        let Ok(listing) = std::fs::read_dir(dir) else {
            self.config_errors.push((
                what,
                dir.to_string_lossy().into_owned(),
                "cannot read the directory",
            ));
            return None;
        };
        let mut out: Vec<(String, Option<String>)> = listing
            .filter_map(|e| e.ok())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let link = e
                    .file_type()
                    .ok()
                    .filter(|t| t.is_symlink())
                    .and_then(|_| std::fs::read_link(e.path()).ok())
                    .map(|p| p.to_string_lossy().into_owned());
                (name, link)
            })
            .collect();
        out.sort();
        Some(out)
    }

    /// Starts `program` with `args` inside the container once it is built, before the command
    /// (hakurei's `Daemon`), with the command's confinement, an empty environment, `/dev/null`
    /// on stdin and stdout and the command's stderr. The command starts once the container path
    /// `ready` exists; if it does not appear within the daemon timeout
    /// ([`daemon_timeout`](Container::daemon_timeout), [`DEFAULT_DAEMON_TIMEOUT`]) or the
    /// daemon exits first, starting fails with the step [`Daemon`](crate::SetupStep::Daemon)
    /// and nothing is left running. The daemon dies with the container. One-shot commands only
    /// (not in a pool).
    pub fn daemon(&mut self, ready: &str, program: &str, args: &[&str]) -> &mut Self {
        if program.is_empty() {
            self.config_errors
                .push(("daemon program", String::new(), "must not be empty"));
            return self;
        }
        if let Some(ready) = self.op_target("daemon ready path", ready) {
            self.ops.push(Op::Daemon {
                ready,
                program: program.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
            });
        }
        self
    }

    /// How long every [`daemon`](Container::daemon) may take to become ready (default
    /// [`DEFAULT_DAEMON_TIMEOUT`]).
    pub fn daemon_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.params.daemon_timeout = Some(timeout);
        self
    }

    /// On [`Child::cancel`](crate::Child::cancel), deliver `SIGINT` to the command instead of
    /// killing the container (hakurei's `ForwardCancel`); the container is killed if the
    /// command has not ended after the [`wait_delay`](Container::wait_delay). One-shot
    /// commands only (a pool refuses it: it cancels by killing).
    pub fn forward_cancel(&mut self, forward: bool) -> &mut Self {
        self.params.forward_cancel = forward;
        self
    }

    /// How long a cancelled command may take to exit after its `SIGINT` (default
    /// [`DEFAULT_WAIT_DELAY`]; hakurei's `WaitDelay`).
    pub fn wait_delay(&mut self, delay: Duration) -> &mut Self {
        self.params.wait_delay = Some(delay);
        self
    }

    /// After the command exits, wait up to `delay` for the processes it left behind (daemons
    /// excepted, which are killed first) before killing them (hakurei's `AdoptWaitDelay`;
    /// default 0: they are killed at once, where hakurei waits 5 s). The status is the
    /// command's either way. One-shot commands only (a pool refuses it).
    pub fn adopt_wait_delay(&mut self, delay: Duration) -> &mut Self {
        self.params.adopt_wait_delay = delay;
        self
    }

    /// Runs every process of the container with scheduling `policy` and `priority`
    /// (`sched_setscheduler(2)`, hakurei's `SetScheduler`). `Batch`, `Idle` and `Other` (priority
    /// 0) work unprivileged; the real-time policies need `CAP_SYS_NICE` on the host, and
    /// starting fails with the step `Scheduler` (`EPERM`) without it.
    pub fn scheduler(&mut self, policy: SchedPolicy, priority: u32) -> &mut Self {
        self.params.scheduler = Some((policy, priority));
        self
    }

    /// Keeps the command in the shim's session (no `setsid`; hakurei's `RetainSession`), which
    /// is the host's: it keeps the controlling terminal, so job control and interactive
    /// programs work. Dangerous with an untrusted command: it can read the terminal and, where
    /// the kernel and seccomp allow `TIOCSTI`, type into it (the built-in seccomp profiles deny
    /// `TIOCSTI` and `TIOCLINUX`). One-shot commands only (a pool refuses it). Off by default.
    pub fn retain_session(&mut self, retain: bool) -> &mut Self {
        self.params.retain_session = retain;
        self
    }

    /// Shares the host's network namespace (hakurei's `HostNet`), or gives the container its
    /// own: [`share`](Container::share) or [`unshare`](Container::unshare) of
    /// [`Namespace::Network`](crate::Namespace::Network).
    pub fn host_net(&mut self, host_net: bool) -> &mut Self {
        if host_net {
            self.share(crate::Namespace::Network)
        } else {
            self.unshare(crate::Namespace::Network)
        }
    }

    /// Lets the command reach abstract unix sockets outside its landlock domain (hakurei's
    /// `HostAbstract`): the landlock ruleset's abstract-socket scope is dropped. With the host's
    /// network namespace that means every abstract socket of the host. Off by default.
    pub fn host_abstract(&mut self, host_abstract: bool) -> &mut Self {
        self.params.host_abstract = host_abstract;
        self
    }

    /// Keeps `CAP_SYS_ADMIN` (in the container's user namespace) in the command (hakurei's
    /// `Privileged`). **Dangerous**: it can mount, unshare namespaces and reach kernel code
    /// unprivileged users cannot, which is the kernel's largest attack surface; only for
    /// trusted programs that build containers of their own. Seccomp policies that deny `mount`
    /// or namespaces still apply. One-shot commands (and daemons) only: a pool refuses it. Off
    /// by default.
    pub fn privileged(&mut self, privileged: bool) -> &mut Self {
        self.params.privileged = privileged;
        self
    }

    /// Forbids every process of the container to create a user namespace (bubblewrap's
    /// `--disable-userns`), whatever its seccomp policy allows: the shim sets the container's
    /// own `/proc/sys/user/max_user_namespaces` to 0, which the kernel enforces for the
    /// container and everything beneath it. Without a user namespace of its own, a command
    /// without capabilities cannot mount or make mount namespaces either. On in
    /// [`pool::default_profile`](crate::pool::default_profile); off by default.
    pub fn disable_userns(&mut self, disable: bool) -> &mut Self {
        self.params.disable_userns = disable;
        self
    }

    /// Installs hakurei's preset seccomp filter ([`Filter::from_presets`](crate::seccomp::Filter::from_presets)):
    /// the calls the named parts deny fail with `EPERM` (or `ENOSYS`), everything else is
    /// allowed. Replaces any other filter.
    pub fn seccomp_presets(
        &mut self,
        presets: crate::seccomp::Presets,
        flags: crate::seccomp::PresetFlags,
    ) -> &mut Self {
        self.seccomp_filter(crate::seccomp::Filter::from_presets(presets, flags))
    }

    /// Starts the container in the existing cgroup (v2) whose directory `cgroup` is open
    /// (hakurei's cgroup fd): the shim joins it right after `clone`, before anything runs in
    /// the container. Its limits are the caller's; with [`cgroup_memory`](Container::cgroup_memory)
    /// and friends hatchery's own cgroup is used instead.
    pub fn cgroup_fd(&mut self, cgroup: OwnedFd) -> &mut Self {
        self.params.cgroup_fd = Some(Arc::new(cgroup));
        self
    }

    /// The existing cgroup given with [`cgroup_fd`](Container::cgroup_fd).
    pub(crate) fn existing_cgroup(&self) -> Option<&OwnedFd> {
        self.params.cgroup_fd.as_deref()
    }

    /// Whether the ops hold anything a pool's requests would share: an ephemeral overlay, a
    /// writable /dev, an mqueue, a daemon. `Some(what)` names the first.
    pub(crate) fn pool_incompatible_op(&self) -> Option<&'static str> {
        self.ops
            .iter()
            .find_map(|op| match op {
                Op::Overlay {
                    upper: Upper::Ephemeral,
                    ..
                } => Some("an ephemeral overlay (its upper layer would be shared by requests)"),
                Op::Dev { writable: true, .. } => {
                    Some("a writable /dev (its files would be shared by requests)")
                }
                Op::Dev { mqueue: true, .. } => {
                    Some("an mqueue mount (its queues would be shared by requests)")
                }
                Op::Daemon { .. } => Some("a daemon (pools start no daemons)"),
                _ => None,
            })
            .or_else(|| {
                self.params
                    .cgroup_fd
                    .is_some()
                    .then_some("an existing cgroup fd (each zygote gets a cgroup of its own)")
            })
            .or_else(|| {
                let p = &self.params;
                [
                    (
                        p.privileged,
                        "privileged (CAP_SYS_ADMIN is kept in one-shot containers only)",
                    ),
                    (
                        p.forward_cancel,
                        "forward_cancel (one-shot only: a pool cancels by killing)",
                    ),
                    (
                        !p.adopt_wait_delay.is_zero(),
                        "an adopt wait delay (one-shot only: a request ends with its command)",
                    ),
                    (
                        p.retain_session,
                        "retain_session (one-shot only: requests have no terminal)",
                    ),
                ]
                .into_iter()
                .find_map(|(set, why)| set.then_some(why))
            })
            .or_else(|| {
                self.mount_beneath_private_tmpfs().then_some(
                    "an op mounting beneath a writable tmpfs (each request gets that tmpfs \
                     afresh, which would hide it)",
                )
            })
    }

    /// Whether an op mounts something beneath a writable tmpfs, which a pool gives every request
    /// afresh (see `hidden_bind` of the pool builder for hakoniwa's binds).
    fn mount_beneath_private_tmpfs(&self) -> bool {
        use crate::container::MountEntry;
        let mut tmpfs: Vec<&str> = self
            .mounts
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m,
                    MountEntry::Tmpfs {
                        read_only: false,
                        ..
                    }
                )
            })
            .map(|(t, _)| t.as_str())
            .collect();
        let mut mounted: Vec<&str> = Vec::new();
        for op in self.flat_ops() {
            match op {
                Op::Tmpfs {
                    target,
                    read_only: false,
                    ..
                } => tmpfs.push(target),
                Op::Tmpfs { target, .. }
                | Op::Overlay { target, .. }
                | Op::Bind { target, .. }
                | Op::Dev { target, .. } => mounted.push(target),
                _ => {}
            }
        }
        mounted
            .iter()
            .any(|m| tmpfs.iter().any(|t| m != t && Path::new(m).starts_with(t)))
    }

    /// Checks the ops: singletons, overlay directories, tmpfs sizes, remount flags (hakurei's
    /// `Valid`, plus what the host can see before the kernel would refuse it).
    pub(crate) fn validate_ops(&self) -> Result<()> {
        for (name, count) in [
            (
                "auto-root",
                self.ops
                    .iter()
                    .filter(|o| matches!(o, Op::AutoRoot { .. }))
                    .count(),
            ),
            (
                "auto-etc",
                self.ops
                    .iter()
                    .filter(|o| matches!(o, Op::AutoEtc { .. }))
                    .count(),
            ),
        ] {
            if count > 1 {
                return Err(Error::OpRepeat { op: name });
            }
        }
        for op in self.flat_ops() {
            match op {
                Op::Overlay {
                    target,
                    lower,
                    upper,
                } => validate_overlay(target, lower, upper)?,
                Op::Tmpfs { target, size, .. } if *size == 0 => {
                    return Err(Error::TmpfsSize {
                        target: target.clone(),
                    })
                }
                Op::Remount { target, flags } if flags.0 == 0 => {
                    return Err(Error::InvalidConfig {
                        what: "remount flags",
                        value: target.clone(),
                        reason: "name at least one of ro, nosuid, nodev, noexec",
                    })
                }
                _ => {}
            }
        }
        if self.params.cgroup_fd.is_some() && self.resources.any() {
            return Err(Error::InvalidConfig {
                what: "cgroup",
                value: "a cgroup fd and cgroup limits".into(),
                reason: "set the limits on the given cgroup, or drop the fd",
            });
        }
        if let Some(t) = self.params.daemon_timeout.filter(|t| t.is_zero()) {
            return Err(Error::InvalidConfig {
                what: "daemon timeout",
                value: format!("{t:?}"),
                reason: "must be more than zero",
            });
        }
        Ok(())
    }

    /// Every op, with those of auto-root and auto-etc in their place. An auto-etc leaves
    /// `/etc/NAME` to the container when it mounts or places something there itself.
    pub(crate) fn flat_ops(&self) -> impl Iterator<Item = &Op> + '_ {
        self.ops
            .iter()
            .flat_map(move |op| -> Box<dyn Iterator<Item = &Op>> {
                match op {
                    Op::AutoRoot { ops, .. } => Box::new(ops.iter()),
                    Op::AutoEtc { ops, .. } => Box::new(ops.iter().filter(move |o| match o {
                        Op::Link { target, .. } => !self.provides(target),
                        _ => true,
                    })),
                    other => Box::new(std::iter::once(other)),
                }
            })
    }

    /// Whether a hakoniwa mount or file-system entry is at `path`.
    fn provides(&self, path: &str) -> bool {
        use crate::container::FsEntry;
        self.mounts.contains_key(path)
            || self.fs.iter().any(|e| match e {
                FsEntry::Dir { path: p, .. }
                | FsEntry::File { path: p, .. }
                | FsEntry::Symlink { link: p, .. } => p == path,
            })
    }

    /// The daemons, in order, with the timeout that applies.
    pub(crate) fn daemons(&self) -> impl Iterator<Item = (&str, &str, &[String], Duration)> + '_ {
        let timeout = self.params.daemon_timeout.unwrap_or(DEFAULT_DAEMON_TIMEOUT);
        self.ops.iter().filter_map(move |op| match op {
            Op::Daemon {
                ready,
                program,
                args,
            } => Some((ready.as_str(), program.as_str(), args.as_slice(), timeout)),
            _ => None,
        })
    }

    /// The wait delay of a forwarded cancel.
    pub(crate) fn cancel_wait_delay(&self) -> Duration {
        self.params.wait_delay.unwrap_or(DEFAULT_WAIT_DELAY)
    }

    /// Whether a cancel forwards `SIGINT`.
    pub(crate) fn forwards_cancel(&self) -> bool {
        self.params.forward_cancel
    }

    /// The process parameters of the plan.
    pub(crate) fn process_params(&self) -> hatchery_protocol::ProcessParams {
        let p = &self.params;
        hatchery_protocol::ProcessParams {
            forward_cancel: p.forward_cancel,
            adopt_wait_us: p.adopt_wait_delay.as_micros().min(u64::MAX as u128) as u64,
            retain_session: p.retain_session,
            scheduler: p.scheduler,
            privileged: p.privileged,
            disable_userns: p.disable_userns,
        }
    }

    /// Whether the landlock abstract-socket scope is dropped.
    pub(crate) fn abstract_sockets_shared(&self) -> bool {
        self.params.host_abstract
    }

    /// The container paths the ops mount or create, for landlock rules that mirror them.
    pub(crate) fn ops_mirrored(&self) -> impl Iterator<Item = (&str, Mirror)> + '_ {
        self.flat_ops()
            .filter_map(|op| {
                Some(match op {
                    Op::Overlay {
                        target,
                        upper: Upper::ReadOnly,
                        ..
                    } => (target.as_str(), Mirror::ReadOnly),
                    Op::Overlay { target, .. } => (target.as_str(), Mirror::Writable),
                    Op::Tmpfs {
                        target,
                        read_only: true,
                        ..
                    } => (target.as_str(), Mirror::ReadOnly),
                    Op::Tmpfs { target, .. } => (target.as_str(), Mirror::Writable),
                    Op::Mkdir { path, .. } => (path.as_str(), Mirror::Dir),
                    Op::Place { path, .. } => (path.as_str(), Mirror::File { executable: false }),
                    Op::Bind { target, flags, .. } if flags.contains(BindFlags::WRITABLE) => {
                        (target.as_str(), Mirror::Writable)
                    }
                    Op::Bind { target, .. } => (target.as_str(), Mirror::ReadOnly),
                    Op::Dev {
                        target,
                        writable: true,
                        ..
                    } => (target.as_str(), Mirror::Writable),
                    Op::Dev { target, .. } => (target.as_str(), Mirror::Dev),
                    _ => return None,
                })
            })
            .chain(self.mqueue_paths().map(|p| (p, Mirror::Writable)))
    }

    /// The mqueue mounts (`TARGET/mqueue` of each dev op with one), whose queues the command
    /// creates.
    fn mqueue_paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.params.mqueue_paths.iter().map(String::as_str)
    }

    /// The ops and parameters, for [`setup_log`](Container::setup_log).
    pub(crate) fn describe_ops(&self) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                Op::AutoRoot { host, ops } => {
                    out.push(format!(
                        "auto-root: {} ({} entries)",
                        host.display(),
                        ops.len()
                    ));
                    out.extend(ops.iter().map(|o| format!("  {}", describe_op(o))));
                }
                Op::AutoEtc { host, prefix, ops } => {
                    out.push(format!(
                        "auto-etc: {} -> /etc (host entries under /etc/.host/{prefix}, secrets \
                         skipped)",
                        host.display()
                    ));
                    out.extend(ops.iter().map(|o| format!("  {}", describe_op(o))));
                }
                Op::Daemon {
                    ready,
                    program,
                    args,
                } => out.push(format!(
                    "daemon: {program} {args:?}, ready when {ready} exists (timeout {:?})",
                    self.params.daemon_timeout.unwrap_or(DEFAULT_DAEMON_TIMEOUT)
                )),
                other => out.push(describe_op(other)),
            }
        }
        if let Some(presets) = self
            .seccomp
            .as_ref()
            .and_then(|f| f.name().strip_prefix("hakurei:"))
        {
            out.push(format!(
                "seccomp presets: {presets} (hakurei's; every other call allowed)"
            ));
        }
        let p = &self.params;
        if p.forward_cancel {
            out.push(format!(
                "cancel: SIGINT to the command, kill after {:?}",
                self.cancel_wait_delay()
            ));
        }
        if !p.adopt_wait_delay.is_zero() {
            out.push(format!(
                "adopt wait delay: {:?} for processes left behind",
                p.adopt_wait_delay
            ));
        }
        if let Some((policy, prio)) = p.scheduler {
            out.push(format!("scheduler: {policy:?} priority {prio}"));
        }
        if p.retain_session {
            out.push("session: the host's (no setsid; dangerous)".into());
        }
        if p.host_abstract {
            out.push("abstract unix sockets: not scoped by landlock".into());
        }
        if p.privileged {
            out.push("privileged: CAP_SYS_ADMIN kept in the container (dangerous)".into());
        }
        if p.disable_userns {
            out.push("user namespaces: none can be created in the container".into());
        }
        if p.cgroup_fd.is_some() {
            out.push("cgroup: an existing one, given as a fd".into());
        }
        out
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Overlay {
            target,
            lower,
            upper,
        } => {
            let lower: Vec<String> = lower.iter().map(|l| l.display().to_string()).collect();
            let upper = match upper {
                Upper::ReadOnly => "read-only".to_string(),
                Upper::Ephemeral => {
                    format!("ephemeral, on a tmpfs of {EPHEMERAL_OVERLAY_BYTES} bytes")
                }
                Upper::Host { upper, work } => format!(
                    "persistent, upper {} work {}",
                    upper.display(),
                    work.display()
                ),
            };
            format!(
                "overlay: {} -> {target} ({upper}, nosuid, nodev)",
                lower.join(":")
            )
        }
        Op::Tmpfs {
            target,
            size,
            perm,
            read_only,
        } => format!(
            "tmpfs: {target} ({}, size={size}, mode {perm:o})",
            if *read_only { "ro" } else { "rw" }
        ),
        Op::Mkdir { path, perm } => format!("mkdir: {path} ({perm:o})"),
        Op::Place { path, data } => format!("place: {path} ({} bytes, 444)", data.len()),
        Op::Link { target, linkname } => format!("link: {target} -> {linkname}"),
        Op::Remount { target, flags } => format!("remount: {target} ({})", flags.describe()),
        Op::Bind {
            source,
            target,
            flags,
        } => format!(
            "bind: {} -> {target} ({})",
            source.display(),
            flags.describe()
        ),
        Op::Dev {
            target,
            mqueue,
            writable,
        } => format!(
            "dev: {target} ({}{})",
            if *writable { "writable" } else { "read-only" },
            if *mqueue { ", mqueue" } else { "" }
        ),
        Op::AutoRoot { host, .. } => format!("auto-root: {}", host.display()),
        Op::AutoEtc { host, .. } => format!("auto-etc: {}", host.display()),
        Op::Daemon { program, .. } => format!("daemon: {program}"),
    }
}

/// hakurei's `OverlayArgumentError` cases, checked on the host before anything starts.
fn validate_overlay(target: &str, lower: &[PathBuf], upper: &Upper) -> Result<()> {
    let err = |reason: String| Error::OverlayArgument {
        target: target.to_string(),
        reason,
    };
    if target == "/" {
        return Err(err(
            "an overlay cannot be the root, which is made read-only once built: mount it at a \
             directory (or use rootdir_rw)"
                .into(),
        ));
    }
    let least = if *upper == Upper::ReadOnly { 2 } else { 1 };
    if lower.len() < least {
        return Err(err(if least == 2 {
            "a read-only overlay needs at least two lower directories (for one, use a read-only \
             bind)"
                .into()
        } else {
            "an overlay needs at least one lower directory".into()
        }));
    }
    if lower.len() > 128 {
        return Err(err(format!(
            "{} lower directories; at most 128",
            lower.len()
        )));
    }
    let dir = |what: &str, p: &Path| -> Result<std::fs::Metadata> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Ok(m),
            Ok(_) => Err(err(format!("{what} {} is not a directory", p.display()))),
            Err(e) => Err(err(format!("{what} {}: {e}", p.display()))),
        }
    };
    for l in lower {
        dir("lower directory", l)?;
    }
    if let Upper::Host { upper, work } = upper {
        let u = dir("upper directory", upper)?;
        let w = dir("work directory", work)?;
        if u.dev() != w.dev() {
            return Err(err(format!(
                "work directory {} is on another file system than upper directory {}",
                work.display(),
                upper.display()
            )));
        }
        if upper.starts_with(work) || work.starts_with(upper) {
            return Err(err(format!(
                "upper directory {} and work directory {} must be separate directories, \
                 neither inside the other",
                upper.display(),
                work.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_by_name() {
        assert_eq!(
            BindFlags::from_names("rw,dev,optional"),
            Some(BindFlags::WRITABLE | BindFlags::DEVICE | BindFlags::OPTIONAL)
        );
        assert_eq!(BindFlags::from_names("ro"), Some(BindFlags::NONE));
        assert_eq!(BindFlags::from_names("suid"), None);
        assert_eq!(
            RemountFlags::from_names("ro,noexec").map(RemountFlags::bits),
            Some(0x1 | 0x8)
        );
        assert_eq!(RemountFlags::from_names("rw"), None);
    }

    #[test]
    fn singletons_sizes_and_overlay_shapes_are_validated() {
        let mut c = Container::empty();
        c.auto_root("/usr", BindFlags::NONE);
        assert!(c.validate().is_ok());
        c.auto_root("/usr", BindFlags::NONE);
        assert!(matches!(
            c.validate(),
            Err(Error::OpRepeat { op: "auto-root" })
        ));
        let mut c = Container::empty();
        c.mount_tmpfs("/t", 0, 0o755);
        assert!(matches!(c.validate(), Err(Error::TmpfsSize { .. })));
        let mut c = Container::empty();
        c.overlay_readonly("/o", &["/usr"]);
        assert!(matches!(c.validate(), Err(Error::OverlayArgument { .. })));
        let mut c = Container::empty();
        c.overlay_readonly("/o", &["/usr", "/usr"]);
        assert!(c.validate().is_ok());
        let mut c = Container::empty();
        c.overlay("relative", "/u", "/w", &["/usr"]);
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
        let mut c = Container::empty();
        c.remount("/x", RemountFlags::default());
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn auto_etc_skips_secrets_and_account_files() {
        let mut c = Container::empty();
        c.auto_etc("/etc", "p");
        let targets: Vec<String> = c
            .flat_ops()
            .filter_map(|o| match o {
                Op::Bind { target, .. } | Op::Link { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        for never in ["/etc/shadow", "/etc/passwd", "/etc/group", "/etc/ssh"] {
            assert!(!targets.iter().any(|t| t == never), "{never}: {targets:?}");
        }
        assert!(targets.iter().all(|t| !t.contains("/.host/p/shadow")));
        // Provided by the container itself: left to it.
        let mut c = Container::empty();
        c.file("/etc/hostname", "box\n").auto_etc("/etc", "");
        assert!(!c
            .flat_ops()
            .any(|o| matches!(o, Op::Link { target, .. } if target == "/etc/hostname")));
    }

    #[test]
    fn pools_are_told_what_their_requests_would_share() {
        let mut c = Container::empty();
        assert_eq!(c.pool_incompatible_op(), None);
        c.overlay_readonly("/o", &["/a", "/b"]).dev("/dev", false);
        assert_eq!(c.pool_incompatible_op(), None);
        c.overlay_ephemeral("/e", &["/a"]);
        assert!(c.pool_incompatible_op().is_some());
        let mut c = Container::empty();
        c.forward_cancel(true);
        assert!(c.pool_incompatible_op().unwrap().contains("one-shot"));
        let mut c = Container::empty();
        c.tmpfsmount("/tmp")
            .bind_with("/srv", "/tmp/srv", BindFlags::NONE);
        assert!(c
            .pool_incompatible_op()
            .unwrap()
            .contains("beneath a writable tmpfs"));
        let mut c = Container::empty();
        c.mount_tmpfs("/w", 1 << 20, 0o755)
            .overlay_readonly("/w/o", &["/a", "/b"]);
        assert!(c.pool_incompatible_op().is_some());
    }

    #[test]
    fn an_overlay_cannot_be_the_root() {
        let mut c = Container::empty();
        c.overlay_readonly("/", &["/usr", "/usr"]);
        assert!(matches!(c.validate(), Err(Error::OverlayArgument { .. })));
    }

    #[test]
    fn landlock_mirrors_writable_dev_and_mqueue() {
        let mut c = Container::empty();
        c.dev("/dev", true).dev_writable("/dev2", false);
        let got: Vec<(&str, Mirror)> = c.ops_mirrored().collect();
        assert_eq!(
            got,
            [
                ("/dev", Mirror::Dev),
                ("/dev2", Mirror::Writable),
                ("/dev/mqueue", Mirror::Writable)
            ]
        );
    }
}
