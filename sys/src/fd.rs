//! The fd table: duplicating, placing and closing fds, writing a report, passing an fd over a
//! unix socket.
//!
//! Everything here is allocation-free and async-signal-safe.
//!
//! ```text
//!  before exec:  0 1 2 (stdio)   3.. (named targets)   max_target+1.. (sources, reports)
//!                dup2_keep(source, target) for each    close_range(max_target+1, ..)
//! ```
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::io::FdFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::{errno, last_errno, Errno};

/// Duplicates `fd` to the lowest free number at or above `min`, close-on-exec
/// (`F_DUPFD_CLOEXEC`).
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, min).map_err(errno)
}

/// Marks `fd` close-on-exec.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC).map_err(errno)
}

/// `dup2(old, new)`, leaving `new` open across exec; when `old` is `new` itself, clears its
/// close-on-exec flag instead (which `dup2` would not).
///
/// # Safety
///
/// Number `new` is replaced: nothing else in the process may own or borrow it (an `OwnedFd`,
/// a `File`, a `BorrowedFd`), or that owner would act on `old`'s file from then on. The new
/// fd belongs to nobody: it is meant for the program about to be exec'd.
pub unsafe fn dup2_keep(old: BorrowedFd<'_>, new: RawFd) -> Result<(), Errno> {
    if old.as_raw_fd() == new {
        return rustix::io::fcntl_setfd(old, FdFlags::empty()).map_err(errno);
    }
    // rustix's dup2 wants `new` as an `OwnedFd`, which a free number (or one owned by whoever
    // runs after exec) is not.
    // SAFETY: `old` is open for the call; replacing `new` is the caller's contract above.
    let ret = unsafe { libc::dup2(old.as_raw_fd(), new) };
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// What [`close_range`] does with each fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseRange {
    /// Close it now.
    Close,
    /// Mark it close-on-exec (`CLOSE_RANGE_CLOEXEC`).
    CloseOnExec,
}

/// `close_range(first, last, flags)`. On kernels without it (< 5.9; `ENOSYS`, or `EINVAL` for
/// an unknown flag) it falls back to one `close` (or `fcntl`) per number from `first` to
/// `last.min(fallback_max)`, ignoring numbers that are not open.
///
/// Without this, every fd the process happened to hold (a library's socket, an inherited
/// descriptor) would leak into the program it execs: the caller's fd table is an allow-list.
///
/// # Safety
///
/// Every fd in `first..=last` must be the caller's to close (with [`CloseRange::Close`]: no
/// `OwnedFd`, `File` or borrow refers to one of them afterwards) or to drop at exec (with
/// [`CloseRange::CloseOnExec`]: nothing relies on one of them surviving an exec).
pub unsafe fn close_range(
    first: u32,
    last: u32,
    how: CloseRange,
    fallback_max: u32,
) -> Result<(), Errno> {
    const CLOSE_RANGE_CLOEXEC: libc::c_long = 1 << 2;
    let flags = match how {
        CloseRange::Close => 0,
        CloseRange::CloseOnExec => CLOSE_RANGE_CLOEXEC,
    };
    // SAFETY: integer-only syscall; what it closes is the caller's contract above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_long,
            last as libc::c_long,
            flags,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let e = last_errno();
    if e != libc::ENOSYS && e != libc::EINVAL {
        return Err(e);
    }
    let end = last.min(fallback_max);
    let mut fd = first;
    while fd <= end {
        match how {
            // SAFETY: integer-only fcntl on a number in the caller's range; EBADF (a hole) is
            // ignored.
            CloseRange::CloseOnExec => unsafe {
                libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC);
            },
            // SAFETY: closing a number in the caller's range; EBADF (a hole) is ignored.
            CloseRange::Close => unsafe {
                libc::close(fd as RawFd);
            },
        }
        if fd == u32::MAX {
            break;
        }
        fd += 1;
    }
    Ok(())
}

/// Writes all of `buf` to `fd`, retrying on `EINTR`; errors are ignored (for a child that
/// reports its failure and then `_exit`s).
pub fn write_all_ignoring_errors(fd: BorrowedFd<'_>, buf: &[u8]) {
    let mut off = 0;
    while off < buf.len() {
        match rustix::io::write(fd, &buf[off..]) {
            Ok(0) => return,
            Ok(n) => off += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Sends `fd` with an 8-byte message over a unix socket (one `sendmsg` with `SCM_RIGHTS`,
/// retried on `EINTR`), the control buffer on the stack. `flags` are the `MSG_*` bits passed to
/// `sendmsg` unchanged (a seccomp filter may allow exactly those).
pub fn send_fd(
    sock: BorrowedFd<'_>,
    msg: &[u8; 8],
    fd: BorrowedFd<'_>,
    flags: i32,
) -> Result<(), Errno> {
    let fds = [fd];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(libc::ENOBUFS);
    }
    let iov = [IoSlice::new(msg)];
    let flags = SendFlags::from_bits_retain(flags as u32);
    loop {
        match rustix::net::sendmsg(sock, &iov, &mut control, flags) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Receives one message into `buf` and at most one fd with it (`SCM_RIGHTS`, close-on-exec);
/// any further fd the sender attached is closed. Returns the message length (0: the peer closed)
/// and the fd. `EINTR` is returned, not retried. The control buffer is on the stack.
pub fn recv_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let got = rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
        .map_err(errno)?;
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for received in fds {
                // The first is kept; dropping the others closes them.
                fd.get_or_insert(received);
            }
        }
    }
    Ok((got.bytes, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        rustix::io::fcntl_getfd(fd)
            .unwrap()
            .contains(FdFlags::CLOEXEC)
    }

    #[test]
    fn dup_above_is_high_and_cloexec() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let high = dup_above(f.as_fd(), 500).unwrap();
        assert!(high.as_raw_fd() >= 500);
        assert!(cloexec(high.as_fd()));
    }

    #[test]
    fn dup2_keep_onto_itself_clears_cloexec() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(cloexec(f.as_fd()));
        // SAFETY: `f` is this test's own fd; it stays owned by `f`.
        unsafe { dup2_keep(f.as_fd(), f.as_raw_fd()) }.unwrap();
        assert!(!cloexec(f.as_fd()));
    }

    #[test]
    fn close_range_cloexec_marks_a_range_this_test_owns() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let a = dup_above(f.as_fd(), 700).unwrap();
        // SAFETY: `a` is this test's own fd.
        unsafe { dup2_keep(a.as_fd(), a.as_raw_fd()) }.unwrap();
        assert!(!cloexec(a.as_fd()));
        let n = a.as_raw_fd() as u32;
        // SAFETY: only `a`'s number is in the range, and it is this test's.
        unsafe { close_range(n, n, CloseRange::CloseOnExec, n) }.unwrap();
        assert!(cloexec(a.as_fd()));
    }

    #[test]
    fn write_all_and_send_fd() {
        let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        write_all_ignoring_errors(w.as_fd(), b"report!!");
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"report!!");

        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send_fd(a.as_fd(), b"listener", f.as_fd(), 0).unwrap();
        let mut buf = [0u8; 8];
        let (n, fd) = recv_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!((n, &buf), (8, b"listener"));
        assert!(cloexec(fd.unwrap().as_fd()));
        a.send(b"no fd").unwrap();
        let (n, fd) = recv_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!((n, &buf[..5], fd.is_none()), (5, &b"no fd"[..], true));
    }
}
