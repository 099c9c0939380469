//! Landlock rulesets, raw (rustix does not have landlock). The shim builds a ruleset in its
//! fork boundary, after the request's private mounts exist, so these are plain system calls on
//! data prepared before the fork.
//!
//! Everything here is allocation-free and async-signal-safe.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, Errno};

/// `struct landlock_ruleset_attr` (ABI 6: fs, net, scoped).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesetAttr {
    /// Handled `LANDLOCK_ACCESS_FS_*`.
    pub handled_access_fs: u64,
    /// Handled `LANDLOCK_ACCESS_NET_*`.
    pub handled_access_net: u64,
    /// `LANDLOCK_SCOPE_*`.
    pub scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// The kernel's landlock ABI version (`Err` when landlock is absent or disabled).
pub fn abi() -> Result<u32, Errno> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0 only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            1u32, /* LANDLOCK_CREATE_RULESET_VERSION */
        )
    };
    check(r).map(|v| v as u32)
}

/// Creates a ruleset (close-on-exec). The kernel accepts the ABI 6 struct from older ABIs as
/// long as the fields it does not know are zero, which the caller ensures.
pub fn create_ruleset(attr: &RulesetAttr) -> Result<OwnedFd, Errno> {
    // SAFETY: `attr` is a live struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    let fd = check(r)? as i32;
    // SAFETY: the kernel just returned `fd`, a new open fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Allows `access` beneath the file or directory open at `parent`.
pub fn allow_path(
    ruleset: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    access: u64,
) -> Result<(), Errno> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent.as_raw_fd(),
    };
    // SAFETY: `attr` is a live `struct landlock_path_beneath_attr`; both fds are open for the
    // call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            1u32, /* LANDLOCK_RULE_PATH_BENEATH */
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    check(r).map(drop)
}

/// Allows `access` on TCP `port`.
pub fn allow_port(ruleset: BorrowedFd<'_>, port: u64, access: u64) -> Result<(), Errno> {
    let attr = NetPortAttr {
        allowed_access: access,
        port,
    };
    // SAFETY: `attr` is a live `struct landlock_net_port_attr`; `ruleset` is open for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            2u32, /* LANDLOCK_RULE_NET_PORT */
            &attr as *const NetPortAttr,
            0u32,
        )
    };
    check(r).map(drop)
}

/// Restricts the calling thread (and what it execs and forks) to `ruleset`. Needs
/// `no_new_privs` (or `CAP_SYS_ADMIN`).
pub fn restrict_self(ruleset: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: integer-only syscall; `ruleset` is open for the call.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    check(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Builds (never enforces) a ruleset with one rule of each kind, where the kernel has them.
    #[test]
    fn ruleset_accepts_rules() {
        let Ok(abi) = abi() else {
            assert!(
                std::env::var_os("HATCHERY_TESTS_MUST_RUN").is_none(),
                "landlock is not available and HATCHERY_TESTS_MUST_RUN is set"
            );
            eprintln!("SKIP landlock is not available");
            return;
        };
        assert!(abi >= 1);
        let ruleset = create_ruleset(&RulesetAttr {
            handled_access_fs: 1, // EXECUTE
            ..RulesetAttr::default()
        })
        .unwrap();
        let usr = std::fs::File::open("/usr").unwrap();
        allow_path(ruleset.as_fd(), usr.as_fd(), 1).unwrap();
        if abi >= 4 {
            let net = create_ruleset(&RulesetAttr {
                handled_access_net: 0b10, // CONNECT_TCP
                ..RulesetAttr::default()
            })
            .unwrap();
            allow_port(net.as_fd(), 443, 0b10).unwrap();
        }
    }
}
