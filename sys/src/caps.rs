//! Capabilities, securebits and `no_new_privs` of the calling thread.
//!
//! Allocation-free and async-signal-safe, except [`last_cap`], which reads `/proc`.
//!
//! These are raw system calls on the calling thread only (no glibc "setxid" broadcast to the
//! other threads): use them in a single-threaded process or in a child about to exec. They are
//! safe functions: they can take privileges away or keep them across exec, but no memory or fd
//! invariant of the process depends on its credentials.

use rustix::thread::{CapabilitiesSecureBits, CapabilitySet, CapabilitySets};

use crate::{errno, Errno};

/// One capability number as a set, `EINVAL` past the 64 bits the kernel ABI has.
fn one(cap: u32) -> Result<CapabilitySet, Errno> {
    1u64.checked_shl(cap)
        .map(CapabilitySet::from_bits_retain)
        .ok_or(libc::EINVAL)
}

/// Sets the effective, permitted and inheritable sets of the calling thread to `mask` each
/// (`capset`, ABI v3: bit `n` is capability `n`).
pub fn capset_all(mask: u64) -> Result<(), Errno> {
    let set = CapabilitySet::from_bits_retain(mask);
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: set,
        },
    )
    .map_err(errno)
}

/// Raises every capability up to `last_cap` into the ambient set (they must be permitted and
/// inheritable), so they survive `execve` whatever the uid.
pub fn raise_ambient(last_cap: u32) -> Result<(), Errno> {
    for cap in 0..=last_cap {
        rustix::thread::configure_capability_in_ambient_set(one(cap)?, true).map_err(errno)?;
    }
    Ok(())
}

/// Empties the bounding set (capabilities the kernel does not know, `EINVAL`, are skipped). It
/// only limits what an exec can gain, so the shim does this once, after building the container,
/// and keeps its own effective capabilities for its work; every child inherits the empty set.
pub fn drop_bounding_set(last_cap: u32) -> Result<(), Errno> {
    drop_bounding_set_except(last_cap, 0)
}

/// [`drop_bounding_set`], keeping the capabilities of `keep` (bit `n` is capability `n`).
pub fn drop_bounding_set_except(last_cap: u32, keep: u64) -> Result<(), Errno> {
    for cap in (0..=last_cap).filter(|c| keep & 1u64.checked_shl(*c).unwrap_or(0) == 0) {
        match rustix::thread::remove_capability_from_bounding_set(one(cap)?) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INVAL => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

/// First half of dropping every capability for good (the bounding set is already empty, see
/// [`drop_bounding_set`]): ambient set cleared, securebits locked so that uid 0 gains nothing at
/// exec and changing uids keeps the remaining capabilities (so `setresuid` still works after
/// this). Finish with `capset_all(0)` once the ids are set.
pub fn lock_capabilities() -> Result<(), Errno> {
    rustix::thread::clear_ambient_capability_set().map_err(errno)?;
    rustix::thread::set_capabilities_secure_bits(LOCKED_SECUREBITS).map_err(errno)
}

/// [`lock_capabilities`], except that capabilities may still be raised into the ambient set
/// (see [`raise_ambient_mask`]): for a command that keeps some on purpose.
pub fn lock_capabilities_but_ambient() -> Result<(), Errno> {
    rustix::thread::clear_ambient_capability_set().map_err(errno)?;
    rustix::thread::set_capabilities_secure_bits(
        LOCKED_SECUREBITS
            .difference(CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE)
            .difference(CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED),
    )
    .map_err(errno)
}

/// Raises the capabilities of `mask` (bit `n` is capability `n`; they must be permitted and
/// inheritable) into the ambient set, so they survive `execve` of an ordinary program.
pub fn raise_ambient_mask(mask: u64) -> Result<(), Errno> {
    for cap in 0..64 {
        if mask & (1u64 << cap) != 0 {
            rustix::thread::configure_capability_in_ambient_set(one(cap)?, true).map_err(errno)?;
        }
    }
    Ok(())
}

/// `CAP_SYS_ADMIN` as a mask, the one capability hakurei's `Privileged` keeps.
pub const CAP_SYS_ADMIN_MASK: u64 = 1 << 21;

/// What [`lock_capabilities`] sets: no root magic (`NOROOT`), no capability changes on uid
/// changes (`NO_SETUID_FIXUP`), no ambient raise, each locked; `KEEP_CAPS` itself stays clear
/// (`NO_SETUID_FIXUP` already keeps them) but locked.
const LOCKED_SECUREBITS: CapabilitiesSecureBits = CapabilitiesSecureBits::NO_ROOT
    .union(CapabilitiesSecureBits::NO_ROOT_LOCKED)
    .union(CapabilitiesSecureBits::NO_SETUID_FIXUP)
    .union(CapabilitiesSecureBits::NO_SETUID_FIXUP_LOCKED)
    .union(CapabilitiesSecureBits::KEEP_CAPS_LOCKED)
    .union(CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE)
    .union(CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED);

/// Sets `no_new_privs`: no exec from here on (by this thread or its descendants) can gain a
/// privilege, and it allows an unprivileged seccomp filter. Cannot be undone.
pub fn set_no_new_privs() -> Result<(), Errno> {
    rustix::thread::set_no_new_privs(true).map_err(errno)
}

/// The highest capability number the running kernel knows (40 if `/proc` does not say).
///
/// **Allocates** (reads `/proc/sys/kernel/cap_last_cap`): call it before a fork.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn securebits_are_the_locked_set() {
        // The raw value the shim has always set (SECBIT_* as the kernel numbers them).
        assert_eq!(
            LOCKED_SECUREBITS.bits(),
            0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
        );
    }

    #[test]
    fn capability_numbers_past_64_are_einval() {
        assert_eq!(one(0).unwrap().bits(), 1);
        assert_eq!(one(40).unwrap().bits(), 1 << 40);
        assert_eq!(one(64).unwrap_err(), libc::EINVAL);
    }

    #[test]
    fn last_cap_is_plausible() {
        let n = last_cap();
        assert!((30..64).contains(&n), "{n}");
    }
}
