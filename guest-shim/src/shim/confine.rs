//! Seccomp and landlock, prepared once in stage 1 for every command the shim starts.
//!
//! The host compiled the seccomp filter; here it becomes `sock_filter`s once. The landlock plan
//! is checked against the kernel's ABI (what the kernel lacks is dropped, or the setup fails
//! when the plan requires it) and its paths become `CString`s; each command then builds a
//! domain of its own in the fork boundary (`child`), after its private mounts exist, so rules on
//! its private `/tmp` name that request's tmpfs and its scopes separate it from every sibling.
//! A zygote prebuilds the next request's ruleset while it waits ([`prebuild_ruleset`]): every
//! rule but those in the private mounts, which the child adds, on the paths as they were when it
//! started serving ([`pin_rules`]).
//!
//! The rights below are those of landlock ABI 6 (Linux 6.12, which adds signal and abstract unix
//! socket scoping), the host's target; newer kernels enforce at least what ABI 6 does.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use hatchery_protocol::{LandlockEnforced, LandlockPlan, SeccompPlan, SetupFailure, SetupStep};

use hatchery_sys as sys;

/// `LANDLOCK_ACCESS_FS_*` rights that apply to files (the rest only to directories).
pub(crate) const FS_FILE_RIGHTS: u64 = 1 | 1 << 1 | 1 << 2 | 1 << 14 | 1 << 15;

/// Filesystem rights a kernel of landlock ABI `abi` knows.
pub(crate) fn fs_rights(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// Network rights (TCP bind and connect) of ABI `abi`.
pub(crate) fn net_rights(abi: u32) -> u64 {
    if abi >= 4 {
        0b11
    } else {
        0
    }
}

/// Scopes (abstract unix sockets, signals) of ABI `abi`.
pub(crate) fn scopes(abi: u32) -> u64 {
    if abi >= 6 {
        0b11
    } else {
        0
    }
}

/// A seccomp filter ready to install.
#[derive(Debug)]
pub(crate) struct SeccompLaunch {
    /// The program.
    pub(crate) filter: Vec<libc::sock_filter>,
    /// Install with a listener (which goes to the shim, never to the guest).
    pub(crate) notify: bool,
    /// The filter may notify the command's own `execve`: never wait for that exec suspended.
    pub(crate) notify_exec: bool,
    /// Installed right after the listener hand-over (when the filter allows it in front of its
    /// rules): see [`revoke_filter`]; empty otherwise.
    pub(crate) revoke: Vec<libc::sock_filter>,
}

/// `AUDIT_ARCH_*` of the native architecture (0 where the host cannot build notifying filters).
const NATIVE_AUDIT_ARCH: u32 = if cfg!(target_arch = "x86_64") {
    0xC000_003E
} else if cfg!(target_arch = "aarch64") {
    0xC000_00B7
} else {
    0
};

/// The filter that ends the listener hand-over: `sendmsg` with exactly
/// [`LISTENER_SEND_FLAGS`](hatchery_protocol::LISTENER_SEND_FLAGS), which a notifying policy
/// that does not allow `sendmsg` outright allows before its own rules so the command can send its
/// listener to the shim, fails with `EPERM` from then on; everything else is left to the policy.
/// The command installs it after the hand-over and before exec, so its own code never has the
/// allowance.
pub(crate) fn revoke_filter() -> Vec<libc::sock_filter> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let flags_low = if cfg!(target_endian = "little") {
        32
    } else {
        36
    };
    vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 5, NATIVE_AUDIT_ARCH),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 3, libc::SYS_sendmsg as u32),
        op(LD_W_ABS, 0, 0, flags_low),
        op(JEQ_K, 0, 1, hatchery_protocol::LISTENER_SEND_FLAGS as u32),
        op(RET_K, 0, 0, 0x0005_0000 | libc::EPERM as u32),
        op(RET_K, 0, 0, 0x7fff_0000),
    ]
}

/// A landlock policy ready for the fork boundary.
#[derive(Debug)]
pub(crate) struct LandlockLaunch {
    /// The ruleset's handled rights and scopes (only what the kernel knows).
    pub(crate) attr: sys::landlock::RulesetAttr,
    /// Paths and the rights granted beneath them (already within `attr`).
    pub(crate) paths: Vec<(CString, u64)>,
    /// TCP ports and the rights granted on them.
    pub(crate) ports: Vec<(u64, u64)>,
}

/// What every command of this shim gets. Lives as long as the process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Confinement {
    /// Installed last, before exec.
    pub(crate) seccomp: Option<&'static SeccompLaunch>,
    /// A domain per command, entered after no_new_privs.
    pub(crate) landlock: Option<&'static LandlockLaunch>,
}

/// The indices of `ll`'s paths that lie at or beneath one of `private` (the mount points a
/// request gets fresh mounts on: its /tmp, /dev/shm, proc): their rules must be made on the
/// request's own mounts, after they are mounted, so a prebuilt ruleset leaves them out.
pub(crate) fn late_rules(ll: &LandlockLaunch, private: &[String]) -> Vec<usize> {
    let beneath = |path: &std::path::Path| {
        private
            .iter()
            .any(|m| path.starts_with(std::path::Path::new(m)))
    };
    ll.paths
        .iter()
        .enumerate()
        .filter(|(_, (path, _))| {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
            // A relative path resolves against the request's cwd: made late, like the rest.
            !path.is_absolute() || beneath(path)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The rules a zygote prebuilds each request's ruleset from: every rule of its plan but the
/// late ones (see [`late_rules`]), each path opened once, when the zygote starts serving, before
/// any guest ran. A guest that replaces a rule's path in a writable bind between requests (with a
/// link elsewhere, or another directory) cannot move the next request's rule: it stays on the
/// inode the path named at setup.
#[derive(Debug)]
pub(crate) struct PinnedRules {
    /// Each rule's opened path and the rights it grants there.
    rules: Vec<(OwnedFd, u64)>,
}

/// Opens the paths of `ll`'s rules but those at `late`. An error (a rule's path is missing)
/// leaves the whole ruleset to each request's child, which reports it.
pub(crate) fn pin_rules(ll: &LandlockLaunch, late: &[usize]) -> Result<PinnedRules, i32> {
    let mut rules = Vec::with_capacity(ll.paths.len());
    for (i, (path, access)) in ll.paths.iter().enumerate() {
        if late.binary_search(&i).is_err() {
            rules.extend(crate::shim::child::open_rule(path, *access)?);
        }
    }
    Ok(PinnedRules { rules })
}

/// A ruleset with `pinned`'s rules and `ll`'s ports, built by a zygote while it waits, for its
/// next request alone (whose child adds the late rules to it). Rules are on inodes, so they hold
/// in the request's copy of the zygote's mount namespace.
pub(crate) fn prebuild_ruleset(ll: &LandlockLaunch, pinned: &PinnedRules) -> Result<OwnedFd, i32> {
    let ruleset = sys::landlock::create_ruleset(&ll.attr)?;
    for (fd, access) in &pinned.rules {
        sys::landlock::allow_path(ruleset.as_fd(), fd.as_fd(), *access)?;
    }
    for &(port, access) in ll.ports.iter() {
        sys::landlock::allow_port(ruleset.as_fd(), port, access)?;
    }
    Ok(ruleset)
}

fn fail(errno: i32, detail: String) -> SetupFailure {
    SetupFailure {
        step: SetupStep::Landlock,
        errno,
        detail,
    }
}

fn seccomp(plan: &SeccompPlan) -> SeccompLaunch {
    SeccompLaunch {
        filter: plan
            .filter
            .iter()
            .map(|w| libc::sock_filter {
                code: *w as u16,
                jt: (*w >> 16) as u8,
                jf: (*w >> 24) as u8,
                k: (*w >> 32) as u32,
            })
            .collect(),
        notify: plan.notify,
        notify_exec: plan.notify_exec,
        revoke: if plan.notify && plan.handover {
            revoke_filter()
        } else {
            Vec::new()
        },
    }
}

/// Checks `plan` against a kernel of landlock ABI `abi` (`None`: no landlock).
pub(crate) fn landlock(
    plan: &LandlockPlan,
    abi: Option<u32>,
) -> Result<Option<(LandlockLaunch, LandlockEnforced)>, SetupFailure> {
    let abi_n = abi.unwrap_or(0);
    let enforced = LandlockEnforced {
        fs: plan.handled_fs & fs_rights(abi_n),
        net: plan.handled_net & net_rights(abi_n),
        scoped: plan.scoped & scopes(abi_n),
    };
    let wanted = LandlockEnforced {
        fs: plan.handled_fs,
        net: plan.handled_net,
        scoped: plan.scoped,
    };
    if plan.required && enforced != wanted {
        let errno = if abi.is_none() {
            libc::EOPNOTSUPP
        } else {
            libc::ENOTSUP
        };
        return Err(fail(
            errno,
            match abi {
                None => "landlock is not available in this kernel (or disabled at boot)".into(),
                Some(v) => format!(
                    "the kernel's landlock ABI {v} cannot enforce fs {:#x} net {:#x} scopes {:#x}",
                    wanted.fs & !enforced.fs,
                    wanted.net & !enforced.net,
                    wanted.scoped & !enforced.scoped
                ),
            },
        ));
    }
    if enforced == LandlockEnforced::default() {
        return Ok(None);
    }
    let mut paths = Vec::with_capacity(plan.fs_rules.len());
    for r in &plan.fs_rules {
        let access = r.access & enforced.fs;
        if access == 0 {
            continue;
        }
        let path = CString::new(r.path.0.clone()).map_err(|_| {
            fail(
                libc::EINVAL,
                format!(
                    "{:?} contains a NUL byte",
                    String::from_utf8_lossy(&r.path.0)
                ),
            )
        })?;
        paths.push((path, access));
    }
    let ports = plan
        .net_rules
        .iter()
        .filter(|r| r.access & enforced.net != 0)
        .map(|r| (u64::from(r.port), r.access & enforced.net))
        .collect();
    Ok(Some((
        LandlockLaunch {
            attr: sys::landlock::RulesetAttr {
                handled_access_fs: enforced.fs,
                handled_access_net: enforced.net,
                scoped: enforced.scoped,
            },
            paths,
            ports,
        },
        enforced,
    )))
}

/// Prepares the plan's seccomp filter and landlock policy; returns them with what is enforced
/// (landlock ABI and rights).
pub(crate) fn prepare(
    seccomp_plan: Option<&SeccompPlan>,
    landlock_plan: Option<&LandlockPlan>,
) -> Result<(Confinement, Option<u32>, Option<LandlockEnforced>), SetupFailure> {
    let mut c = Confinement::default();
    if let Some(p) = seccomp_plan {
        c.seccomp = Some(Box::leak(Box::new(seccomp(p))));
    }
    let mut abi_used = None;
    let mut enforced = None;
    if let Some(p) = landlock_plan {
        let abi = sys::landlock::abi().ok();
        if let Some((launch, e)) = landlock(p, abi)? {
            c.landlock = Some(Box::leak(Box::new(launch)));
            abi_used = abi;
            enforced = Some(e);
        }
    }
    Ok((c, abi_used, enforced))
}

/// Receives a pending notification from a command's seccomp listener. Returns the violation
/// to report and the notification's id, or `None` when nothing was pending (the notifying task
/// died meanwhile). The caller kills the request, then [`deny`]s the call (in that order: the
/// guest must not run on after its call fails).
pub(crate) fn receive_violation(
    listener: &std::os::fd::OwnedFd,
) -> Option<(hatchery_protocol::Outcome, u64)> {
    use std::os::fd::AsFd;
    let n = sys::seccomp::notif_recv(listener.as_fd()).ok()?;
    Some((
        hatchery_protocol::Outcome::Violation {
            syscall: String::new(),
            nr: i64::from(n.data.nr),
            args: n.data.args,
        },
        n.id,
    ))
}

/// Fails notified call `id` with `EPERM` (harmless if its task is already dead).
pub(crate) fn deny(listener: &std::os::fd::OwnedFd, id: u64) {
    use std::os::fd::AsFd;
    let _ = sys::seccomp::notif_deny(listener.as_fd(), id, libc::EPERM);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchery_protocol::{Bytes, LandlockPathRule};

    fn plan(required: bool) -> LandlockPlan {
        LandlockPlan {
            handled_fs: fs_rights(5),
            handled_net: 0b11,
            scoped: 0b11,
            fs_rules: vec![LandlockPathRule {
                path: Bytes(b"/usr".to_vec()),
                access: 1 << 2 | 1 << 3 | 1 << 15,
            }],
            net_rules: Vec::new(),
            required,
        }
    }

    #[test]
    fn best_effort_drops_what_the_kernel_lacks() {
        let (launch, e) = landlock(&plan(false), Some(3)).unwrap().unwrap();
        assert_eq!(e.fs, fs_rights(3));
        assert_eq!(e.net, 0);
        assert_eq!(e.scoped, 0);
        // The rule loses IOCTL_DEV (ABI 5), which the ruleset does not handle.
        assert_eq!(launch.paths[0].1, 1 << 2 | 1 << 3);
        assert!(landlock(&plan(false), None).unwrap().is_none());
    }

    #[test]
    fn required_fails_with_what_is_missing() {
        let f = landlock(&plan(true), Some(5)).unwrap_err();
        assert_eq!(f.step, SetupStep::Landlock);
        assert!(f.detail.contains("scopes 0x3"), "{}", f.detail);
        assert!(landlock(&plan(true), Some(6)).is_ok());
        assert_eq!(
            landlock(&plan(true), None).unwrap_err().errno,
            libc::EOPNOTSUPP
        );
    }
}
