//! Installing a classic BPF seccomp filter and answering its user notifications, raw (rustix
//! does not have seccomp). Filters are compiled before the fork; the child only installs them.
//!
//! Everything here is allocation-free and async-signal-safe.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, Errno};

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_long = 1 << 3;

/// Installs a classic BPF seccomp filter (the caller sets `no_new_privs` first). With
/// `listener` the filter gets a user-notification listener, whose (close-on-exec) fd is
/// returned. A program longer than the kernel's `sock_fprog` can describe is `EINVAL`.
pub fn install(program: &[libc::sock_filter], listener: bool) -> Result<Option<OwnedFd>, Errno> {
    let len = libc::c_ushort::try_from(program.len()).map_err(|_| libc::EINVAL)?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let flags = if listener {
        SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_long, /* SECCOMP_SET_MODE_FILTER */
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    let ret = check(ret)?;
    // SAFETY: with NEW_LISTENER the kernel returns a new fd that nothing else owns.
    Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(ret as i32) }))
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Arguments.
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Notif {
    /// Cookie for the response.
    pub id: u64,
    /// Calling thread, in the listener's pid namespace.
    pub pid: u32,
    /// Unused.
    pub flags: u32,
    /// The call.
    pub data: SeccompData,
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `SECCOMP_IOCTL_NOTIF_RECV` = `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND` = `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// Receives one pending notification from a seccomp listener (blocks if none is pending).
pub fn notif_recv(listener: BorrowedFd<'_>) -> Result<Notif, Errno> {
    // The kernel insists on a zeroed buffer.
    let mut notif = Notif::default();
    // SAFETY: `notif` is a writable `struct seccomp_notif` of the size the ioctl number encodes;
    // `listener` is open for the call.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_RECV, &mut notif as *mut Notif) };
    check(r as libc::c_long)?;
    Ok(notif)
}

/// Answers notification `id`: the call fails with `errno`.
pub fn notif_deny(listener: BorrowedFd<'_>, id: u64, errno: i32) -> Result<(), Errno> {
    let resp = NotifResp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: `resp` is a `struct seccomp_notif_resp` of the size the ioctl number encodes;
    // `listener` is open for the call.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
    check(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structs have the kernel's sizes, which the ioctl numbers encode.
    #[test]
    fn struct_sizes_match_the_ioctl_numbers() {
        let size = |ioctl: libc::c_ulong| ((ioctl >> 16) & 0x3fff) as usize;
        assert_eq!(std::mem::size_of::<Notif>(), size(NOTIF_RECV));
        assert_eq!(std::mem::size_of::<NotifResp>(), size(NOTIF_SEND));
    }

    #[test]
    fn oversized_program_is_einval_not_truncated() {
        let nop = libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let program = vec![nop; usize::from(u16::MAX) + 2];
        assert_eq!(install(&program, false).unwrap_err(), libc::EINVAL);
    }
}
