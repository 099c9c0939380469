//! What the fork boundary (`child`) reads: a [`LaunchPlan`], built by `launch::prepare` before
//! the fork. Plain data; nothing here runs in the child but field reads.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};

use hatchery_sys::exec::CStringArray;
use hatchery_sys::process::Resource;

use crate::shim::confine::Confinement;

/// Ids the child switches to.
#[derive(Debug)]
pub(crate) struct ChildIds {
    /// Uid.
    pub(crate) uid: u32,
    /// Gid.
    pub(crate) gid: u32,
    /// Supplementary groups.
    pub(crate) groups: Vec<libc::gid_t>,
    /// Whether to call setgroups.
    pub(crate) set_groups: bool,
}

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub(crate) struct LaunchPlan {
    pub(crate) path: CString,
    pub(crate) argv: CStringArray,
    pub(crate) envp: CStringArray,
    pub(crate) cwd: Option<CString>,
    /// (source fd, target number); sources are above every target.
    pub(crate) fd_moves: Vec<(RawFd, RawFd)>,
    pub(crate) sorted_targets: Vec<RawFd>,
    pub(crate) max_target: RawFd,
    /// The sources of `fd_moves`: never read, owned here so they stay open while the plan lives.
    pub(crate) _sources: Vec<OwnedFd>,
    pub(crate) rlimits: Vec<(Resource, u64, u64)>,
    /// Limits set last, right before exec (under the seccomp filter, which must allow
    /// `prlimit64`; every preset does): the open-file limit.
    pub(crate) late_rlimits: Vec<(Resource, u64, u64)>,
    /// Set no_new_privs (off only when the container allows new privileges).
    pub(crate) no_new_privs: bool,
    /// Ignore SIGXFSZ in the command, so that a write past `RLIMIT_FSIZE` fails with `EFBIG`
    /// instead of killing it: the one-shot command behaves as under hakoniwa, where it is PID 1
    /// of its pid namespace and the kernel's SIGXFSZ is ignored.
    pub(crate) ignore_sigxfsz: bool,
    pub(crate) ids: Option<ChildIds>,
    pub(crate) confinement: Confinement,
    pub(crate) fd_limit: u32,
    /// RLIMIT_CPU hard limit in seconds, to tell a CPU-limit kill from another SIGKILL.
    pub(crate) cpu_limit_secs: Option<u64>,
    /// Fresh tmpfs instances (target, options) mounted for this request alone.
    pub(crate) private_tmpfs: Vec<(CString, CString)>,
    /// Read-only copies placed in those tmpfs mounts: (container path, source fd; the source is
    /// read from offset 0 and owned here).
    pub(crate) placed: Vec<(CString, OwnedFd)>,
    /// Proc instances of the request's own pid namespace.
    pub(crate) private_proc: Vec<CString>,
    /// A request root gets a network namespace of its own (`Some`), with its loopback up
    /// (`Some(true)`).
    pub(crate) private_network: Option<bool>,
    /// Signals to reset to their default before exec (the ones the shim ignores or handles).
    pub(crate) reset_signals: &'static [i32],
    /// Top of the stack for the command's `CLONE_VM | CLONE_VFORK` start (one stack for the
    /// whole shim, see `launch::child_stack_top`).
    pub(crate) child_stack_top: usize,
    /// SIGKILL the command when its parent dies (off for a helper exec'd in place of PID 1,
    /// whose parent is a host thread).
    pub(crate) die_with_parent: bool,
    /// Start a new session (`setsid`); off only for hakurei's `RetainSession`.
    pub(crate) new_session: bool,
    /// Capabilities the command keeps (ambient, so they survive exec): 0, or `CAP_SYS_ADMIN`
    /// for hakurei's `Privileged`.
    pub(crate) keep_caps: u64,
    /// A landlock ruleset the zygote prebuilt (its fd, above every target, owned by `_ruleset`), and
    /// which rules of the landlock plan it lacks: the indices of the paths that lie in the
    /// request's private mounts, opened by the child once they are mounted. `None`: the child
    /// builds the whole ruleset.
    pub(crate) landlock_prebuilt: Option<(RawFd, &'static [usize])>,
    /// The prebuilt ruleset's fd, owned here (never read: `landlock_prebuilt` has its number).
    pub(crate) _ruleset: Option<OwnedFd>,
}
