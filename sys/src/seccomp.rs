//! Installing a classic BPF seccomp filter and answering its user notifications, raw (rustix
//! does not have seccomp). Filters are compiled before the fork; the child only installs them.
//!
//! Everything here is allocation-free and async-signal-safe, but for [`read_c_string`], which a
//! supervisor uses on notifications (never between fork and exec).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, Errno};

/// This crate's version: a filter compiled with the help of [`evaluate`] (the host's dispatch
/// and its check) depends on it, so a cache of compiled filters keys by it.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `AUDIT_ARCH_*` of the native architecture (x86-64 and aarch64; `None` elsewhere).
pub fn native_audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xC000_003E)
    } else if cfg!(target_arch = "aarch64") {
        Some(0xC000_00B7)
    } else {
        None
    }
}

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

/// Answers notification `id`: the call runs as if no filter had notified it
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Only for calls the policy itself allows: the kernel
/// runs the call with the caller's (possibly changed) arguments.
pub fn notif_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    let resp = NotifResp {
        id,
        val: 0,
        error: 0,
        flags: 1, // SECCOMP_USER_NOTIF_FLAG_CONTINUE
    };
    // SAFETY: as in `notif_deny`.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
    check(r as libc::c_long).map(drop)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` in process `pid`'s memory
/// (`process_vm_readv`, page by page so an unmapped page after the string does not fail the
/// read). Returns the bytes before the NUL, and whether the string was longer than `max`.
pub fn read_c_string(pid: libc::pid_t, addr: u64, max: usize) -> Result<(Vec<u8>, bool), Errno> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let chunk = ((PAGE - at % PAGE) as usize).min(max - out.len());
        let mut buf = vec![0u8; chunk];
        let n = read_memory(pid, at, &mut buf)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok((out, false));
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Ok((out, true))
}

/// Reads `buf.len()` bytes (or fewer, at the end of a mapping) at `addr` in process `pid`.
pub fn read_memory(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; the remote range is only read
    // by the kernel, which checks it against the other process's mappings.
    let r = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// What [`evaluate_traced`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluated {
    /// The program's `SECCOMP_RET_*` value.
    pub ret: u32,
    /// The path taken loaded an argument or the instruction pointer: the result may differ for
    /// the same call number and architecture. When false, it holds for every argument.
    pub reads_args: bool,
}

/// Runs a packed classic BPF seccomp program (`code | jt << 16 | jf << 24 | k << 32`) on
/// `data`, as the kernel does; an instruction the kernel's seccomp checker would refuse, or a
/// jump out of the program, returns `SECCOMP_RET_KILL_PROCESS` (so a mistake here can only
/// refuse more).
pub fn evaluate(program: &[u64], data: &SeccompData) -> u32 {
    evaluate_traced(program, data).ret
}

/// [`evaluate`], also telling whether the result depends on more than the call's number and
/// architecture.
pub fn evaluate_traced(program: &[u64], data: &SeccompData) -> Evaluated {
    const KILL: u32 = 0x8000_0000;
    let mut bytes = [0u8; 64];
    bytes[0..4].copy_from_slice(&data.nr.to_ne_bytes());
    bytes[4..8].copy_from_slice(&data.arch.to_ne_bytes());
    bytes[8..16].copy_from_slice(&data.instruction_pointer.to_ne_bytes());
    for (i, a) in data.args.iter().enumerate() {
        bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut reads_args = false;
    let done = |ret: u32, reads_args: bool| Evaluated { ret, reads_args };
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    while let Some(&w) = program.get(pc) {
        let code = (w & 0xffff) as u16;
        let jt = ((w >> 16) & 0xff) as usize;
        let jf = ((w >> 24) & 0xff) as usize;
        let k = (w >> 32) as u32;
        pc += 1;
        let src = if code & 0x08 != 0 { x } else { k };
        match code & 0x07 {
            0x00 => match code {
                0x20 => {
                    let at = k as usize;
                    if at % 4 != 0 || at + 4 > 64 {
                        return done(KILL, reads_args);
                    }
                    reads_args |= at >= 8;
                    a = u32::from_ne_bytes([
                        bytes[at],
                        bytes[at + 1],
                        bytes[at + 2],
                        bytes[at + 3],
                    ]);
                }
                0x00 => a = k,
                0x60 if k < 16 => a = mem[k as usize],
                0x80 => a = 64,
                _ => return done(KILL, reads_args),
            },
            0x01 => match code {
                0x01 => x = k,
                0x61 if k < 16 => x = mem[k as usize],
                0x81 => x = 64,
                _ => return done(KILL, reads_args),
            },
            0x02 if k < 16 => mem[k as usize] = a,
            0x03 if k < 16 => mem[k as usize] = x,
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 if src != 0 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 if src != 0 => a % src,
                    0xa0 => a ^ src,
                    _ => return done(KILL, reads_args),
                }
            }
            0x05 => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return done(KILL, reads_args),
                };
                pc += if taken { jt } else { jf };
            }
            0x06 => {
                return match code {
                    0x06 => done(k, reads_args),
                    0x16 => done(a, reads_args),
                    _ => done(KILL, reads_args),
                };
            }
            0x07 => match code {
                0x07 => x = a,
                0x87 => a = x,
                _ => return done(KILL, reads_args),
            },
            _ => return done(KILL, reads_args),
        }
    }
    done(KILL, reads_args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
        u64::from(code) | u64::from(jt) << 16 | u64::from(jf) << 24 | u64::from(k) << 32
    }

    #[test]
    fn evaluates_like_the_kernel() {
        const RET_ERRNO: u32 = 0x0005_0000;
        const RET_ALLOW: u32 = 0x7fff_0000;
        const RET_KILL_PROCESS: u32 = 0x8000_0000;
        // ld nr; jeq 39 ? errno(1) : allow
        let p = [
            bpf(0x20, 0, 0, 0),
            bpf(0x15, 0, 1, 39),
            bpf(0x06, 0, 0, RET_ERRNO | 1),
            bpf(0x06, 0, 0, RET_ALLOW),
        ];
        let mut d = SeccompData {
            nr: 39,
            ..SeccompData::default()
        };
        assert_eq!(evaluate(&p, &d), RET_ERRNO | 1);
        d.nr = 40;
        assert_eq!(evaluate(&p, &d), RET_ALLOW);
        assert!(!evaluate_traced(&p, &d).reads_args);
        // Falling off the end, a bad load, an unknown opcode: kill.
        assert_eq!(evaluate(&p[..2], &d), RET_KILL_PROCESS);
        assert_eq!(evaluate(&[bpf(0x20, 0, 0, 62)], &d), RET_KILL_PROCESS);
        assert_eq!(evaluate(&[bpf(0xc7, 0, 0, 0)], &d), RET_KILL_PROCESS);
        // jset on an argument's low word, scratch memory, ret A.
        let p = [
            bpf(0x20, 0, 0, 16),
            bpf(0x02, 0, 0, 3),
            bpf(0x60, 0, 0, 3),
            bpf(0x45, 0, 1, 0x10),
            bpf(0x16, 0, 0, 0),
            bpf(0x06, 0, 0, RET_ALLOW),
        ];
        d.args[0] = 0x10;
        assert_eq!(evaluate(&p, &d), 0x10);
        d.args[0] = 0x20;
        assert_eq!(
            evaluate_traced(&p, &d),
            Evaluated {
                ret: RET_ALLOW,
                reads_args: true
            }
        );
        // The instruction pointer counts as an argument.
        assert!(evaluate_traced(&[bpf(0x20, 0, 0, 8), bpf(0x06, 0, 0, 0)], &d).reads_args);
    }

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
