//! `execve`, `execveat` of an fd, `_exit`, and the argument arrays they take.
//!
//! [`CStringArray::new`] allocates (build it before the fork); everything else is
//! allocation-free and async-signal-safe.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{last_errno, Errno};

/// A null-terminated array of pointers to NUL-terminated strings (`argv`, `envp`), with the
/// strings it points to.
#[derive(Debug)]
pub struct CStringArray {
    // The pointers point into these strings' heap buffers, which do not move when the vector
    // does; the vector is never changed after `new`.
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStringArray {
    /// Builds the array. **Allocates**: call it before the fork.
    pub fn new(strings: impl IntoIterator<Item = CString>) -> CStringArray {
        let strings: Vec<CString> = strings.into_iter().collect();
        let mut ptrs: Vec<*const libc::c_char> = Vec::with_capacity(strings.len() + 1);
        ptrs.extend(strings.iter().map(|s| s.as_ptr()));
        ptrs.push(std::ptr::null());
        CStringArray {
            _strings: strings,
            ptrs,
        }
    }

    /// The array, for `execve`: valid while `self` is. Allocation-free.
    pub fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }

    /// Number of strings (the terminating null not counted).
    pub fn len(&self) -> usize {
        self.ptrs.len() - 1
    }

    /// Whether there are no strings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `execve(path, argv, envp)`; only returns, with the errno, on failure.
pub fn execve(path: &CStr, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are null-terminated arrays of pointers
    // to NUL-terminated strings they own, alive for the call (CStringArray's invariant).
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    last_errno()
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: executes the file behind `fd` (a sealed
/// memfd, say). Only returns, with the errno, on failure.
pub fn fexecve(fd: BorrowedFd<'_>, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: as in `execve`; `fd` is open for the call and the empty path is a static
    // NUL-terminated string.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_long,
        )
    };
    last_errno()
}

/// `_exit(code)`: leaves at once, without running destructors, atexit handlers or flushing
/// stdio.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe, takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_is_null_terminated_and_points_at_the_strings() {
        let a = CStringArray::new([c"a".to_owned(), c"bc".to_owned()]);
        assert_eq!(a.len(), 2);
        let ptrs = a.ptrs.clone();
        assert!(ptrs[2].is_null());
        // SAFETY: the first two pointers point at the strings `a` owns, alive here.
        let first = unsafe { CStr::from_ptr(ptrs[0]) };
        // SAFETY: as above.
        let second = unsafe { CStr::from_ptr(ptrs[1]) };
        assert_eq!((first, second), (c"a", c"bc"));
        assert!(CStringArray::new([]).is_empty());
    }

    #[test]
    fn failed_exec_returns_the_errno() {
        let none = CStringArray::new([]);
        assert_eq!(execve(c"/nonexistent/hatchery", &none, &none), libc::ENOENT);
    }
}
