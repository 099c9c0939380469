//! The background reaper: a one-shot container whose command has reported is torn down here, on
//! a thread of its own (`hatchery-reaper`), not on the caller's latency path.
//!
//! ```text
//!  caller's thread                               hatchery-reaper (started on first use)
//!  Response (outcome, rusage) ◀── shim
//!  OOM kills read from the cgroup
//!  hand_off(pid, cgroup) ───────── channel ────▶ waitpid(pid): the shim's exit, and with it
//!  status()/wait() returns                        the kernel's teardown of its namespaces
//!                                                drop(cgroup): kill members, rmdir
//!                                                pending -= 1, wake settle()
//! ```
//!
//! Once the shim has sent the command's `Response` nothing of the container can change the
//! result: the shim only closes its fds and exits, and the kernel kills whatever is left in its
//! pid namespace. What remains is bookkeeping that takes about as long as the command itself on a
//! short run (the shim's exit, the namespaces' teardown, removing the cgroup). Containers are
//! reaped in the order they were handed off; a handed-off shim is a zombie of this process until
//! then. [`settle`] waits until every container handed off so far is gone (a process that exits
//! right after its last command calls it, so no cgroup directory outlives it). A program that runs
//! one container and exits (the `hatchery` CLI) calls [`tear_down_on_caller`] instead: there, the
//! thread's start and wake-ups cost more than the teardown it moves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, OnceLock};

use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::netns::Lease;

/// A container to tear down: its shim (already reporting), its cgroup, and the network
/// namespace the host made for it.
struct Remains {
    pid: Pid,
    cgroup: Option<Cgroup>,
    netns: Option<Lease>,
}

/// What the reaper thread is sent.
enum Job {
    /// A container to tear down.
    TearDown(Remains),
    /// Something is kept for later containers (a [`spare`](crate::spare) shim): time out.
    WatchIdle,
}

/// The reaper thread's queue, and how many containers it has not finished yet; each with the
/// [`fork::generation`](crate::fork) it belongs to (a forked child has no reaper thread, and
/// none of its parent's containers to wait for).
struct Reaper {
    queue: Mutex<Option<(u64, Sender<Job>)>>,
    pending: Mutex<(u64, usize)>,
    drained: Condvar,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        queue: Mutex::new(None),
        pending: Mutex::new((0, 0)),
        drained: Condvar::new(),
    })
}

/// How many containers this process has handed off and the thread not finished yet.
fn pending(r: &Reaper) -> std::sync::MutexGuard<'_, (u64, usize)> {
    let mut p = r.pending.lock().unwrap_or_else(|e| e.into_inner());
    let now = crate::fork::generation();
    if p.0 != now {
        *p = (now, 0);
    }
    p
}

fn finished(r: &Reaper) {
    let mut pending = pending(r);
    pending.1 = pending.1.saturating_sub(1);
    if pending.1 == 0 {
        r.drained.notify_all();
    }
}

/// Tears down `remains` on the calling thread.
fn tear_down(remains: Remains) {
    let reaped = crate::spawn::reap(remains.pid).is_some();
    drop(remains.cgroup);
    // Every process of the container is dead once its pid 1 is reaped.
    if let (true, Some(ns)) = (reaped, remains.netns) {
        crate::netns::give_back(ns);
    }
}

static ON_CALLER: AtomicBool = AtomicBool::new(false);

/// From now on, [`Child::wait`](crate::Child::wait) and `status()` tear their container down on
/// the calling thread before they return (the shim's exit, the namespaces' teardown, the cgroup's
/// removal), instead of handing it to the `hatchery-reaper` thread. For a program that runs one
/// container at a time and exits after it, like the `hatchery` CLI: no thread is started, and
/// the exit does not wait for one to wake up and die (a fraction of a millisecond on a busy or
/// virtual machine). [`settle`] then has nothing to wait for.
pub fn tear_down_on_caller() {
    ON_CALLER.store(true, Ordering::Relaxed);
}

/// Closes the network namespaces kept for later containers now (as root, at most four with the
/// loopback up and four with it down, one fd each; see the README's "How a command is
/// sandboxed"). They are closed anyway when the last pool is dropped, and by the reaper thread
/// after a second without a one-shot container; this is for a program that counts its fds
/// sooner. The next container makes a new one. This also ends the shims started ahead for the
/// next one-shot containers (one per thread that runs them, see the README's "Shims started
/// ahead"), which hold a namespace each.
pub fn drop_kept_network_namespaces() {
    crate::spare::end_all();
    crate::netns::drop_unused();
}

/// Whether a thread that runs one-shot containers gets the next one's shim started while the
/// last one builds its root (on by default): a process of its own per thread, in new namespaces,
/// id maps written and cgroup made, waiting for a plan, until that thread's next container of
/// the same shape takes it, the thread exits, or a second passes without a container (see the
/// README's "Shims started ahead"). `false` ends those that wait and starts none (so does
/// `HATCHERY_SHIMS_AHEAD=0` in the environment, for the whole process). A spare is not
/// taken when anything it inherited from its thread and process reads differently at the next
/// spawn (namespaces, cgroup, credentials, capabilities, seccomp filters, limits, directories,
/// umask, the mount table, ...), but a landlock domain cannot be read: a program that confines
/// its own threads with landlock between containers turns this off.
pub fn start_shims_ahead(on: bool) {
    crate::spare::set_enabled(on);
}

/// Whether [`tear_down_on_caller`] was called.
pub(crate) fn tears_down_on_caller() -> bool {
    ON_CALLER.load(Ordering::Relaxed)
}

/// Hands a shim that has sent its command's `Response` (and its cgroup, whose OOM count was
/// already read) to the reaper thread. Falls back to tearing it down here when the thread
/// cannot be started, or after [`tear_down_on_caller`].
pub(crate) fn hand_off(pid: Pid, cgroup: Option<Cgroup>, netns: Option<Lease>) {
    let remains = Remains { pid, cgroup, netns };
    if ON_CALLER.load(Ordering::Relaxed) {
        tear_down(remains);
        return;
    }
    let r = reaper();
    pending(r).1 += 1;
    if let Some(Job::TearDown(remains)) = send(r, Job::TearDown(remains), true) {
        tear_down(remains);
        finished(r);
    }
}

/// Wakes the reaper thread (starting it first) to time out what is kept for later containers
/// (it checks when it has nothing else to do; see [`spare`](crate::spare)).
pub(crate) fn watch_idle() {
    let _ = send(reaper(), Job::WatchIdle, true);
}

/// Sends `job` to the reaper thread, starting it first when `start` says so; gives the job
/// back when there is no thread to take it.
fn send(r: &Reaper, job: Job, start: bool) -> Option<Job> {
    let mut queue = r.queue.lock().unwrap_or_else(|e| e.into_inner());
    let now = crate::fork::generation();
    // A forked child's copy of its parent's queue leads to no thread.
    if queue.as_ref().is_some_and(|(g, _)| *g != now) {
        *queue = None;
    }
    if queue.is_none() && start {
        let (tx, rx) = channel::<Job>();
        let started = std::thread::Builder::new()
            .name("hatchery-reaper".into())
            .spawn(move || loop {
                // What is kept for later containers ends after a while without a container.
                let next = if crate::netns::any_kept() || crate::spare::any() {
                    rx.recv_timeout(crate::netns::IDLE)
                } else {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                };
                match next {
                    Ok(Job::TearDown(remains)) => {
                        tear_down(remains);
                        finished(reaper());
                    }
                    Ok(Job::WatchIdle) => {}
                    Err(RecvTimeoutError::Timeout) => {
                        crate::spare::end_all();
                        crate::netns::drop_unused();
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            });
        if started.is_ok() {
            *queue = Some((now, tx));
        }
    }
    match queue.as_ref() {
        Some((_, tx)) => tx.send(job).err().map(|e| e.0),
        None => Some(job),
    }
}

/// Waits until every one-shot container whose command has ended so far is reaped and its cgroup
/// removed. [`Child::wait`](crate::Child::wait) returns as soon as the command's status is known
/// and leaves that teardown to a background thread; a program that is about to exit (whose
/// threads then die with it) calls this first so that nothing it created outlives it. Cheap
/// when nothing is pending.
pub fn settle() {
    let r = reaper();
    let mut pending = pending(r);
    while pending.1 > 0 {
        pending = r.drained.wait(pending).unwrap_or_else(|e| e.into_inner());
    }
    drop(pending);
    crate::spare::end_all();
}
