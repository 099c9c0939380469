//! A shim started ahead for the next one-shot container: cloned into its namespaces, its id maps
//! written and its cgroup made, waiting for a plan.
//!
//! Half of a one-shot container's start is the same for every container of one profile: the
//! clone into new namespaces, the shim's exec, the id maps, the cgroup. None of it depends on the
//! command, its files or its fds, and none of it runs anything of a container: the shim waits for
//! its plan before it builds anything. So while a container builds its root (the host's thread
//! only waits for its `Ready` then), the thread starts the next container's shim, and the next
//! spawn of the same shape on that thread only sends its plan:
//!
//! ```text
//!  caller's thread                                   the shim of container N
//!  spawn N: take the spare (or start a shim), send plan N ─▶ builds its root …
//!  prepare: clone + exec + id maps + cgroup of shim N+1      …
//!  wait for Ready N ◀─────────────────────────────────────── Ready
//! ```
//!
//! A spare is kept per thread, only used by the thread that started it and ended when that thread
//! exits: a clone inherits the calling thread's own state (its namespaces, cgroup, seccomp
//! filters and landlock domain, capabilities, scheduling policy and affinity), and of its
//! process (working and root directory, umask, resource limits), and the shim resolves bind
//! sources in its copy of the mount table as it was at the clone. What of that can be read is
//! read again when the spare is taken ([`Inherited`], and a `poll` of the thread's `mountinfo`,
//! opened before the clone, for any mount or unmount since): a spare started before any of it
//! changed is ended, not used. A landlock domain cannot be read: a program that confines its
//! own threads with landlock turns spares off
//! ([`reaper::start_shims_ahead`](crate::reaper::start_shims_ahead)). A process forked from one
//! with spares does not take them (they are its parent's children): it closes its copies. At
//! most [`MAX`] spares live at once; the reaper thread ends them after
//! [`netns::IDLE`](crate::netns) without a container, and
//! [`reaper::settle`](crate::reaper::settle) ends them before a process exits. A spare that died
//! meanwhile is found by a `poll` of its socket and replaced by a fresh start; one killed while
//! it is being taken fails that spawn with `ShimLost`, as a shim killed at any start does.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::cgroup::Limits;
use crate::idmap::IdMap;
use crate::spawn::{self, CgroupSpec, LaunchSpec, Launched};

/// What a shim is started with before it has a plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    pub clone_flags: libc::c_int,
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    pub limits: Limits,
    pub ignore_cgroup_failure: bool,
    /// The kind of network namespace the host lends it ([`netns::wanted`](crate::netns)).
    pub netns: Option<bool>,
}

/// At most this many spares live at once (one per thread that runs one-shot containers).
const MAX: usize = 4;

struct Spare {
    /// The process that started it ([`fork::generation`](crate::fork): a child forked since
    /// holds a copy of this list).
    process: u64,
    thread: u64,
    shape: Shape,
    /// What the shim inherited from its thread and process when it was cloned.
    inherited: Inherited,
    /// The thread's `/proc/thread-self/mountinfo`, opened before the clone: `poll` reports a
    /// mount or unmount in its mount namespace since (the shim resolves bind sources in its copy
    /// of the mount table as it was at the clone).
    mounts: std::fs::File,
    shim: Launched,
}

impl Spare {
    /// Whether the host's mount table changed since the clone.
    fn mounts_changed(&self) -> bool {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.mounts.as_fd(),
            nix::poll::PollFlags::POLLPRI,
        )];
        !matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }
}

/// What a clone inherits from the calling thread and its process that a program may change
/// between two containers, as far as it can be read: the working and root directories (relative
/// bind sources resolve against the first), the thread's namespaces (a container shares those
/// it does not unshare) and cgroup (a container without limits stays in it), the umask,
/// credentials, capabilities, no_new_privs, seccomp filters, speculation controls, CPU and
/// memory-node affinity (from `/proc/thread-self/status`), the mounts the two directories are
/// on, the LSM labels (current and on exec), the resource limits, the nice value, scheduling
/// policy and priority, I/O priority, personality, memory-deny-write-execute, session and
/// process group, and OOM score adjustment. Not read: a landlock domain (no interface shows
/// it), the NUMA memory policy, and a mount's propagation type (changing it fires no mount
/// event).
#[derive(Debug, Clone, PartialEq)]
struct Inherited {
    status: Vec<String>,
    /// The working and root directories.
    files: [(libc::dev_t, libc::ino_t); 2],
    /// The thread's namespaces.
    namespaces: Vec<std::ffi::OsString>,
    /// The mounts the working and root directories are on (two binds of one directory have
    /// the same device and inode; a `chdir` between them fires no mount event).
    mount_ids: [u64; 2],
    cgroup: String,
    oom_score_adj: String,
    /// The LSM's current and on-exec labels (`/proc/thread-self/attr/{current,exec}`).
    labels: [Option<String>; 2],
    mdwe: i32,
    session: [libc::pid_t; 2],
    priority: i32,
    limits: Vec<(libc::rlim_t, libc::rlim_t)>,
    nice: i32,
    policy: i32,
    personality: i32,
    ioprio: libc::c_long,
}

impl Inherited {
    /// Now, on this thread; `None` when any of it cannot be read (no spare then).
    #[allow(unsafe_code)]
    fn now() -> Option<Inherited> {
        const FIELDS: [&str; 16] = [
            "Umask:",
            "Uid:",
            "Gid:",
            "Groups:",
            "CapInh:",
            "CapPrm:",
            "CapEff:",
            "CapBnd:",
            "CapAmb:",
            "NoNewPrivs:",
            "Seccomp:",
            "Seccomp_filters:",
            "Speculation_Store_Bypass:",
            "SpeculationIndirectBranch:",
            "Cpus_allowed_list:",
            "Mems_allowed_list:",
        ];
        let text = std::fs::read_to_string("/proc/thread-self/status").ok()?;
        let status = text
            .lines()
            .filter(|l| FIELDS.iter().any(|f| l.starts_with(f)))
            .map(str::to_string)
            .collect();
        let dir = |p: &str| {
            nix::sys::stat::stat(p)
                .ok()
                .map(|st| (st.st_dev, st.st_ino))
        };
        let files = [dir(".")?, dir("/")?];
        // The namespaces by their links' text (`net:[4026531840]`: the inode on the one nsfs),
        // which costs half of a `stat` through the link.
        let namespaces = [
            "mnt",
            "net",
            "ipc",
            "uts",
            "cgroup",
            "user",
            "pid_for_children",
            "time_for_children",
        ]
        .iter()
        .map(
            |n| match std::fs::read_link(format!("/proc/thread-self/ns/{n}")) {
                Ok(link) => Some(link.into_os_string()),
                // A kernel without time namespaces has no such link.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && n.starts_with("time") => {
                    Some(std::ffi::OsString::new())
                }
                Err(_) => None,
            },
        )
        .collect::<Option<Vec<_>>>()?;
        let mount_id = |p: &std::ffi::CStr| {
            // SAFETY: zeroed `statx` is a valid value for the kernel to overwrite.
            let mut st: libc::statx = unsafe { std::mem::zeroed() };
            // SAFETY: `p` is NUL-terminated, `st` valid for writes for the call.
            let r =
                unsafe { libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, libc::STATX_MNT_ID, &mut st) };
            (r == 0 && st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id)
        };
        let mount_ids = [mount_id(c".")?, mount_id(c"/")?];
        let label = |p: &str| std::fs::read_to_string(p).ok();
        let labels = [
            label("/proc/thread-self/attr/current"),
            label("/proc/thread-self/attr/exec"),
        ];
        let cgroup = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
        let oom_score_adj = std::fs::read_to_string("/proc/thread-self/oom_score_adj").ok()?;
        let limits = (0..16) // RLIM_NLIMITS: the same on every Linux architecture
            .map(|r| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: `l` is valid for writes for the duration of the call.
                let ok = unsafe { libc::getrlimit(r as _, &mut l) } == 0;
                ok.then_some((l.rlim_cur, l.rlim_max))
            })
            .collect::<Option<Vec<_>>>()?;
        // (-1 from either is compared as it is: an error then stays an error.)
        // SAFETY: a plain system call on the calling thread.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // SAFETY: as above.
        let policy = unsafe { libc::sched_getscheduler(0) };
        // SAFETY: as above (0xffffffff only reads the persona).
        let personality = unsafe { libc::personality(0xffff_ffff) };
        // SAFETY: as above (IOPRIO_WHO_PROCESS = 1: the calling thread).
        let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) };
        // SAFETY: as above.
        let mdwe = unsafe { libc::prctl(libc::PR_GET_MDWE, 0, 0, 0, 0) };
        // SAFETY: as above.
        let sid = unsafe { libc::getsid(0) };
        // SAFETY: as above.
        let session = [sid, unsafe { libc::getpgid(0) }];
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is valid for writes for the duration of the call.
        let priority = match unsafe { libc::sched_getparam(0, &mut param) } {
            0 => param.sched_priority,
            _ => -1,
        };
        Some(Inherited {
            status,
            files,
            namespaces,
            mount_ids,
            cgroup,
            oom_score_adj,
            labels,
            mdwe,
            session,
            priority,
            limits,
            nice,
            policy,
            personality,
            ioprio,
        })
    }
}

static SPARES: Mutex<Vec<Spare>> = Mutex::new(Vec::new());

/// [`reaper::start_shims_ahead`](crate::reaper::start_shims_ahead) turned spares off.
static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether one-shot containers get a spare: unless turned off, or `HATCHERY_SHIMS_AHEAD=0`.
pub(crate) fn enabled() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !OFF.load(std::sync::atomic::Ordering::Relaxed)
        && *FROM_ENV
            .get_or_init(|| std::env::var_os("HATCHERY_SHIMS_AHEAD").map_or(true, |v| v != "0"))
}

/// Turns spares on or off (off ends those that wait).
pub(crate) fn set_enabled(on: bool) {
    OFF.store(!on, std::sync::atomic::Ordering::Relaxed);
    if !on {
        end_all();
    }
}

fn spares() -> MutexGuard<'static, Vec<Spare>> {
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the spares `which` picks out of `all`.
fn remove(all: &mut Vec<Spare>, which: impl Fn(&Spare) -> bool) -> Vec<Spare> {
    let (picked, kept) = all.drain(..).partition(|s| which(s));
    *all = kept;
    picked
}

/// Kills and reaps each spare's shim, removes its cgroup, gives its network namespace back.
fn end(spares: Vec<Spare>) {
    for s in spares {
        s.shim.discard();
    }
}

/// This thread's number (never reused, unlike thread ids); its spares end when it exits.
fn this_thread() -> u64 {
    /// Ends its thread's spares when the thread exits.
    struct Owner(u64);
    impl Drop for Owner {
        fn drop(&mut self) {
            let mine = remove(&mut own_spares(), |s| s.thread == self.0);
            end(mine);
        }
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    thread_local! {
        static OWNER: Owner = Owner(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    }
    // 0 (no spare is ever taken or kept) while the thread's locals are being destroyed.
    OWNER.try_with(|o| o.0).unwrap_or(0)
}

/// The spares, locked; in a process forked from the one that started them, none (it abandons
/// its copies: the shims are its parent's children, see [`Launched::abandon`]).
fn own_spares() -> MutexGuard<'static, Vec<Spare>> {
    let mut all = spares();
    let me = crate::fork::generation();
    for s in remove(&mut all, |s| s.process != me) {
        s.shim.abandon();
    }
    all
}

/// The shim this thread started ahead for a container of `shape`, if it still waits and
/// nothing it inherited changed since.
pub(crate) fn take(shape: &Shape) -> Option<Launched> {
    let thread = this_thread();
    if thread == 0 {
        return None;
    }
    let spare = {
        let mut all = own_spares();
        let i = all
            .iter()
            .position(|s| s.thread == thread && s.shape == *shape)?;
        all.swap_remove(i)
    };
    if spare.shim.alive()
        && !spare.mounts_changed()
        && Inherited::now().is_some_and(|now| now == spare.inherited)
    {
        Some(spare.shim)
    } else {
        end(vec![spare]);
        None
    }
}

/// Starts a shim for this thread's next container of `shape`, unless one waits already; this
/// thread's spare of another shape is ended, and none is started while [`MAX`] other threads
/// have one. A start that fails leaves no spare (the next spawn starts its own shim and reports
/// what fails).
pub(crate) fn prepare(shape: &Shape) {
    let thread = this_thread();
    if thread == 0 {
        return;
    }
    let (mine, full) = {
        let mut all = own_spares();
        if all.iter().any(|s| s.thread == thread && s.shape == *shape) {
            return;
        }
        let mine = remove(&mut all, |s| s.thread == thread);
        // Other threads' spares are not ended to make room (with more threads than spares,
        // each start would end one a thread is about to take): no spare for this one then.
        (mine, all.len() >= MAX)
    };
    end(mine);
    if full {
        return;
    }
    let t = Instant::now();
    let Ok(mounts) = std::fs::File::open("/proc/thread-self/mountinfo") else {
        return;
    };
    let Some(inherited) = Inherited::now() else {
        return;
    };
    let launched = spawn::launch(LaunchSpec {
        clone_flags: shape.clone_flags,
        uid_maps: &shape.uid_maps,
        gid_maps: &shape.gid_maps,
        title: "hatchery:oneshot",
        cgroup: CgroupSpec {
            limits: &shape.limits,
            // A cgroup that cannot be made now leaves no spare: the container's own start
            // tries again (and goes on without one only then, if its profile says so).
            ignore_failure: false,
        },
        netns: shape.netns.and_then(crate::netns::take),
    });
    let Ok(mut shim) = launched else {
        return;
    };
    shim.started_ahead(t.elapsed());
    let mut all = own_spares();
    // Turned off meanwhile (`set_enabled` ends what it finds under this lock).
    if !enabled() {
        drop(all);
        shim.discard();
        return;
    }
    all.push(Spare {
        process: crate::fork::generation(),
        thread,
        shape: shape.clone(),
        inherited,
        mounts,
        shim,
    });
    drop(all);
    crate::reaper::watch_idle();
}

/// Whether a spare waits.
pub(crate) fn any() -> bool {
    !own_spares().is_empty()
}

/// Ends every spare: kills and reaps its shim, removes its cgroup, gives its network namespace
/// back.
pub(crate) fn end_all() {
    let all = std::mem::take(&mut *own_spares());
    end(all);
}
