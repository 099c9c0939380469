//! `attack NAME [ARG]`: attempts one attack from inside a sandbox, for the adversarial suite
//! (`tests/tests/adversarial.rs`).
//!
//! Exit codes: the errno with which the kernel refused the attempt; 0 when the attempt had no
//! effect in a way the attack checks itself (nothing found, nothing leaked); 100 when the attack
//! SUCCEEDED (an escape: the test fails). Attacks on denied system calls never return: the
//! sandbox kills them (a reported violation or SIGSYS).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Write;

const ESCAPED: i32 = 100;

/// `hatchery_protocol::LISTENER_SEND_FLAGS`; the adversarial suite checks that they are equal.
pub const HANDOVER_FLAGS: u64 = 0x4000 | 0x40 | 0x80 | 0x400 | 0x1000;

/// A raw system call; `Err(errno)` on failure.
fn sys(nr: libc::c_long, a: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: raw system calls with integer arguments (or pointers the caller keeps alive); the
    // point of this program is to try calls the sandbox must refuse.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        Ok(r)
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn ptr<T>(p: *const T) -> u64 {
    p as u64
}

/// Exit with the errno of `r`, or `ESCAPED` if it succeeded.
fn refused(r: Result<i64, i32>) -> ! {
    match r {
        Ok(_) => exit(ESCAPED),
        Err(e) => exit(e),
    }
}

fn open(path: &str, flags: i32) -> Result<i64, i32> {
    let p = c(path);
    sys(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            ptr(p.as_ptr()),
            flags as u64,
            0o644,
            0,
            0,
        ],
    )
}

fn abstract_addr(name: &str) -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
}

/// Ends the process with `_exit`: this program forks, and a forked child must not run the
/// parent's exit handlers (nothing here buffers output that is not flushed explicitly).
fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process at once; always sound.
    unsafe { libc::_exit(code) }
}

fn fork_now() -> i32 {
    // SAFETY: this program is single-threaded; the child only calls async-signal-safe code.
    unsafe { libc::fork() }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("");
    let arg = args.get(2).cloned().unwrap_or_default();
    match name {
        // ---- file-system escape ----
        "read-host-secret" => refused(open("/etc/shadow", libc::O_RDONLY)),
        "read-host-home" => refused(open("/root/.bashrc", libc::O_RDONLY)),
        "write-ro-bind" => refused(open("/usr/hatchery-attack", libc::O_CREAT | libc::O_WRONLY)),
        "write-placed-file" => refused(open("/etc/passwd", libc::O_WRONLY)),
        "remount-rw" => {
            let t = c("/usr");
            refused(sys(
                libc::SYS_mount,
                [
                    0,
                    ptr(t.as_ptr()),
                    0,
                    libc::MS_REMOUNT | libc::MS_BIND,
                    0,
                    0,
                ],
            ))
        }
        "mount-tmpfs" => {
            let (s, t) = (c("tmpfs"), c("/tmp"));
            refused(sys(
                libc::SYS_mount,
                [ptr(s.as_ptr()), ptr(t.as_ptr()), ptr(s.as_ptr()), 0, 0, 0],
            ))
        }
        "umount" => {
            let t = c("/proc");
            refused(sys(
                libc::SYS_umount2,
                [ptr(t.as_ptr()), libc::MNT_DETACH as u64, 0, 0, 0, 0],
            ))
        }
        "chroot" => {
            let t = c("/tmp");
            refused(sys(libc::SYS_chroot, [ptr(t.as_ptr()), 0, 0, 0, 0, 0]))
        }
        "pivot-root" => {
            let (a, b) = (c("/tmp"), c("/tmp"));
            refused(sys(
                libc::SYS_pivot_root,
                [ptr(a.as_ptr()), ptr(b.as_ptr()), 0, 0, 0, 0],
            ))
        }
        "open-by-handle" => {
            let mut handle = [0u8; 136];
            handle[0..4].copy_from_slice(&128u32.to_ne_bytes());
            refused(sys(
                libc::SYS_open_by_handle_at,
                [
                    libc::AT_FDCWD as u64,
                    ptr(handle.as_ptr()),
                    libc::O_RDONLY as u64,
                    0,
                    0,
                    0,
                ],
            ))
        }
        "fsopen" => {
            let t = c("tmpfs");
            refused(sys(libc::SYS_fsopen, [ptr(t.as_ptr()), 0, 0, 0, 0, 0]))
        }
        "proc-sys-write" => refused(open("/proc/sys/kernel/hostname", libc::O_WRONLY)),
        "proc-sysrq" => refused(open("/proc/sysrq-trigger", libc::O_WRONLY)),
        "proc-self-exe-write" => refused(open("/proc/self/exe", libc::O_WRONLY)),
        "proc-init-exe" => refused(open("/proc/1/exe", libc::O_RDONLY)),
        "raw-device" => refused(open("/dev/sda", libc::O_RDONLY)),
        "mknod" => {
            let p = c("/tmp/attack-null");
            let dev = libc::makedev(1, 3);
            refused(sys(
                libc::SYS_mknodat,
                [
                    libc::AT_FDCWD as u64,
                    ptr(p.as_ptr()),
                    (libc::S_IFCHR | 0o666) as u64,
                    dev,
                    0,
                    0,
                ],
            ))
        }
        "gain-caps" => {
            // capset: every capability in the effective set.
            #[repr(C)]
            struct Header(u32, i32);
            #[repr(C)]
            struct Data(u32, u32, u32);
            let h = Header(0x2008_0522, 0);
            let d = [Data(u32::MAX, u32::MAX, 0), Data(u32::MAX, u32::MAX, 0)];
            refused(sys(
                libc::SYS_capset,
                [ptr(&h), ptr(d.as_ptr()), 0, 0, 0, 0],
            ))
        }
        "leaked-fds" => {
            // Anything open beyond stdio is a leak.
            let leaked = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                        .filter(|fd| *fd > 2)
                        .count()
                })
                .unwrap_or(0);
            // One is the directory being read.
            exit(if leaked > 1 { ESCAPED } else { 0 })
        }
        "cwd-escape" => {
            for _ in 0..8 {
                let _ = std::env::set_current_dir("..");
            }
            refused(open("etc/shadow", libc::O_RDONLY))
        }
        "symlink-escape" => {
            let _ = std::os::unix::fs::symlink("/etc/shadow", "/tmp/attack-link");
            refused(open("/tmp/attack-link", libc::O_RDONLY))
        }
        "exec-from-tmp-setuid" => {
            // A setuid copy of a shell in the writable /tmp: nosuid and no_new_privs keep it
            // from raising anything; the copy's euid stays ours.
            let _ = std::fs::copy("/bin/sh", "/tmp/attack-sh");
            let p = c("/tmp/attack-sh");
            let _ = sys(libc::SYS_chmod, [ptr(p.as_ptr()), 0o4755, 0, 0, 0, 0]);
            let uid = sys(libc::SYS_getuid, [0; 6]);
            let euid = sys(libc::SYS_geteuid, [0; 6]);
            let nnp = sys(
                libc::SYS_prctl,
                [libc::PR_GET_NO_NEW_PRIVS as u64, 0, 0, 0, 0, 0],
            );
            exit(if uid == euid && nnp == Ok(1) {
                0
            } else {
                ESCAPED
            })
        }

        // ---- kernel attack surface ----
        "unshare-user" => refused(sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        )),
        "setns" => {
            let fd = open("/proc/self/ns/net", libc::O_RDONLY).unwrap_or(-1);
            refused(sys(libc::SYS_setns, [fd as u64, 0, 0, 0, 0, 0]))
        }
        "clone-newns" => refused(sys(
            libc::SYS_clone,
            [(libc::CLONE_NEWNS | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        )),
        "clone-newuser" => refused(sys(
            libc::SYS_clone,
            [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        )),
        "clone3" => {
            let args = [0u64; 11];
            refused(sys(libc::SYS_clone3, [ptr(args.as_ptr()), 88, 0, 0, 0, 0]))
        }
        "ptrace-traceme" => refused(sys(
            libc::SYS_ptrace,
            [libc::PTRACE_TRACEME as u64, 0, 0, 0, 0, 0],
        )),
        "ptrace-init" => refused(sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as u64, 1, 0, 0, 0, 0],
        )),
        "process-vm-readv" => {
            let mut buf = [0u8; 8];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: 8,
            };
            let remote = libc::iovec {
                iov_base: 0x1000 as *mut libc::c_void,
                iov_len: 8,
            };
            refused(sys(
                libc::SYS_process_vm_readv,
                [1, ptr(&local), 1, ptr(&remote), 1, 0],
            ))
        }
        "bpf" => refused(sys(libc::SYS_bpf, [0, 0, 0, 0, 0, 0])),
        "perf-event-open" => {
            let attr = [0u64; 16];
            refused(sys(
                libc::SYS_perf_event_open,
                [ptr(attr.as_ptr()), 0, u64::MAX, u64::MAX, 0, 0],
            ))
        }
        "userfaultfd" => refused(sys(libc::SYS_userfaultfd, [0, 0, 0, 0, 0, 0])),
        "io-uring" => {
            let params = [0u8; 120];
            refused(sys(
                libc::SYS_io_uring_setup,
                [8, ptr(params.as_ptr()), 0, 0, 0, 0],
            ))
        }
        "keyctl" => refused(sys(libc::SYS_keyctl, [0, 0, 0, 0, 0, 0])),
        "add-key" => {
            let (t, d) = (c("user"), c("attack"));
            refused(sys(
                libc::SYS_add_key,
                [ptr(t.as_ptr()), ptr(d.as_ptr()), 0, 0, (-2i64) as u64, 0],
            ))
        }
        "kexec-load" => refused(sys(libc::SYS_kexec_load, [0, 0, 0, 0, 0, 0])),
        "init-module" => refused(sys(libc::SYS_init_module, [0, 0, 0, 0, 0, 0])),
        "personality" => refused(sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0])),
        "tiocsti" => {
            // High bits set: the kernel only looks at the low 32, and so must the filter.
            let ch = b'x';
            refused(sys(
                libc::SYS_ioctl,
                [0, 0xdead_beef_0000_5412, ptr(&ch), 0, 0, 0],
            ))
        }
        "tioclinux" => {
            let sub = 0u8;
            refused(sys(libc::SYS_ioctl, [0, 0x541C, ptr(&sub), 0, 0, 0]))
        }
        "x32-syscall" => refused(sys(0x4000_0000 | libc::SYS_getpid, [0; 6])),
        "i386-syscall" => {
            #[cfg(target_arch = "x86_64")]
            {
                let ret: i64;
                // SAFETY: `int 0x80` enters the i386 system-call ABI with eax = 20 (getpid); it
                // clobbers nothing else we rely on. The sandbox must kill us before it returns.
                unsafe {
                    std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
                }
                refused(if ret < 0 { Err(-ret as i32) } else { Ok(ret) })
            }
            #[cfg(not(target_arch = "x86_64"))]
            exit(0)
        }

        // ---- other requests, the zygote and the host ----
        // Address families a helper never needs (AF_VSOCK reaches the hypervisor, AF_ALG the
        // kernel's crypto API); ARG, when given, is a raw domain value (high bits included).
        "socket-vsock" => refused(sys(
            libc::SYS_socket,
            [libc::AF_VSOCK as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        )),
        "socket-alg" => refused(sys(
            libc::SYS_socket,
            [libc::AF_ALG as u64, libc::SOCK_SEQPACKET as u64, 0, 0, 0, 0],
        )),
        "socket-packet" => refused(sys(
            libc::SYS_socket,
            [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0],
        )),
        "socket-vsock-high-bits" => refused(sys(
            libc::SYS_socket,
            [
                1 << 32 | libc::AF_VSOCK as u64,
                libc::SOCK_STREAM as u64,
                0,
                0,
                0,
                0,
            ],
        )),
        "socketpair-vsock" => {
            let mut sv = [0i32; 2];
            refused(sys(
                libc::SYS_socketpair,
                [
                    libc::AF_VSOCK as u64,
                    libc::SOCK_STREAM as u64,
                    0,
                    ptr(sv.as_mut_ptr()),
                    0,
                    0,
                ],
            ))
        }
        "netlink-audit" => refused(sys(
            libc::SYS_socket,
            [
                libc::AF_NETLINK as u64,
                libc::SOCK_RAW as u64,
                libc::NETLINK_AUDIT as u64,
                0,
                0,
                0,
            ],
        )),
        // The families helpers use still work: exits 0, or with the errno of the first refusal.
        "socket-allowed-families" => {
            for (domain, ty, proto) in [
                (libc::AF_UNIX, libc::SOCK_STREAM, 0),
                (libc::AF_UNIX, libc::SOCK_DGRAM, 0),
                (libc::AF_INET, libc::SOCK_STREAM, 0),
                (libc::AF_INET, libc::SOCK_DGRAM, 0),
                (libc::AF_INET6, libc::SOCK_STREAM, 0),
                (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            ] {
                let fd = match sys(
                    libc::SYS_socket,
                    [
                        domain as u64,
                        (ty | libc::SOCK_CLOEXEC) as u64,
                        proto as u64,
                        0,
                        0,
                        0,
                    ],
                ) {
                    Ok(fd) => fd,
                    Err(e) => exit(e),
                };
                let _ = sys(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0]);
            }
            let mut sv = [0i32; 2];
            if let Err(e) = sys(
                libc::SYS_socketpair,
                [
                    libc::AF_UNIX as u64,
                    libc::SOCK_STREAM as u64,
                    0,
                    ptr(sv.as_mut_ptr()),
                    0,
                    0,
                ],
            ) {
                exit(e)
            }
            // if_nameindex (and getaddrinfo with AI_ADDRCONFIG) ask the kernel over NETLINK_ROUTE.
            // SAFETY: no arguments; the result is freed below.
            let names = unsafe { libc::if_nameindex() };
            if names.is_null() {
                exit(std::io::Error::last_os_error().raw_os_error().unwrap_or(1))
            }
            // SAFETY: a non-null result of if_nameindex, freed once.
            unsafe { libc::if_freenameindex(names) };
            exit(0)
        }
        // The exact form of the shim's seccomp listener hand-over (sendmsg with
        // hatchery_protocol::LISTENER_SEND_FLAGS), on stdout: a policy that denies sendmsg must
        // deny this one too.
        "sendmsg-handover-form" => {
            // SAFETY: an all-zero msghdr (no name, no data, no control) is valid.
            let msg: libc::msghdr = unsafe { std::mem::zeroed() };
            refused(sys(
                libc::SYS_sendmsg,
                [1, ptr(&msg), HANDOVER_FLAGS, 0, 0, 0],
            ))
        }
        // Any other sendmsg on stdout.
        "sendmsg" => {
            // SAFETY: an all-zero msghdr (no name, no data, no control) is valid.
            let msg: libc::msghdr = unsafe { std::mem::zeroed() };
            refused(sys(
                libc::SYS_sendmsg,
                [1, ptr(&msg), libc::MSG_NOSIGNAL as u64, 0, 0, 0],
            ))
        }
        // Installing a filter without flags (what the hand-over leaves allowed): ARG is the
        // errno the filter makes getppid fail with, which the attack checks.
        "seccomp-self-restrict" => {
            let filter = [
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_getppid as u32,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x0005_0000 | libc::EXDEV as u32,
                },
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                },
            ];
            let prog = libc::sock_fprog {
                len: 4,
                filter: filter.as_ptr() as *mut _,
            };
            if let Err(e) = sys(libc::SYS_seccomp, [1, 0, ptr(&prog), 0, 0, 0]) {
                exit(e)
            }
            match sys(libc::SYS_getppid, [0; 6]) {
                Err(libc::EXDEV) => exit(0),
                _ => exit(ESCAPED),
            }
        }
        "kill-init" => refused(sys(libc::SYS_kill, [1, libc::SIGKILL as u64, 0, 0, 0, 0])),
        "kill-all" => {
            let r = sys(
                libc::SYS_kill,
                [(-1i64) as u64, libc::SIGKILL as u64, 0, 0, 0, 0],
            );
            // Nobody else may be reachable: either refused or nobody found.
            match r {
                Err(e) => exit(e),
                Ok(_) => exit(ESCAPED),
            }
        }
        "kill-pid" => {
            let pid: i64 = arg.parse().unwrap_or(1);
            refused(sys(libc::SYS_kill, [pid as u64, 0, 0, 0, 0, 0]))
        }
        "abstract-listen" => {
            let l = std::os::unix::net::UnixListener::bind_addr(&abstract_addr(&arg))
                .expect("bind abstract");
            println!("listening");
            let _ = std::io::stdout().flush();
            let _ = l.accept();
            exit(ESCAPED)
        }
        "abstract-connect" => {
            match std::os::unix::net::UnixStream::connect_addr(&abstract_addr(&arg)) {
                Ok(_) => exit(ESCAPED),
                Err(e) => exit(e.raw_os_error().unwrap_or(-1)),
            }
        }
        "tcp-bind" => match std::net::TcpListener::bind("127.0.0.1:8080") {
            Ok(_) => exit(ESCAPED),
            Err(e) => exit(e.raw_os_error().unwrap_or(-1)),
        },
        "tcp-connect" => match std::net::TcpStream::connect("127.0.0.1:22") {
            Ok(_) => exit(ESCAPED),
            Err(e) => exit(e.raw_os_error().unwrap_or(-1)),
        },
        // Another party holding a `/proc` fd (ARG = `FD:landlock` or `FD:nobody`) that a request
        // sent out: a sandbox (a landlock domain of its own that handles reading files and
        // directories, with no rule) or another user (uid and gid 65534, root only). It prints
        // the command line of every process the fd shows it, and nothing when it cannot list.
        "cmdlines-as" => {
            let (fd, who) = arg.split_once(':').unwrap_or((&arg, ""));
            let entered = if who == "nobody" {
                sys(libc::SYS_setgid, [65534, 0, 0, 0, 0, 0])
                    .and_then(|_| sys(libc::SYS_setuid, [65534, 0, 0, 0, 0, 0]))
            } else {
                // LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR
                let attr: u64 = (1 << 2) | (1 << 3);
                sys(
                    libc::SYS_prctl,
                    [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
                )
                .and_then(|_| sys(444, [ptr(&attr), 8, 0, 0, 0, 0]))
                .and_then(|rs| sys(446, [rs as u64, 0, 0, 0, 0, 0]))
            };
            if let Err(e) = entered {
                exit(e)
            }
            let dir = format!("/proc/self/fd/{fd}");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(line) = std::fs::read(format!("{dir}/{name}/cmdline")) {
                    println!(
                        "{name}: {}",
                        String::from_utf8_lossy(&line).replace('\0', " ")
                    );
                }
            }
            exit(0)
        }
        // An unnamed file in the directory ARG, never linked, closed at exit: 0 once made.
        "tmpfile-in" => exit(match open(&arg, libc::O_TMPFILE | libc::O_RDWR) {
            Ok(_) => 0,
            Err(e) => e,
        }),
        // The directory ARG, opened, sent over the unix socket on fd 3 (SCM_RIGHTS): 0 once
        // sent. `send-watch` sends an inotify instance watching ARG for new entries instead.
        "send-dir-fd" | "send-watch" => {
            let dir = if name == "send-dir-fd" {
                match open(&arg, libc::O_RDONLY | libc::O_DIRECTORY) {
                    Ok(fd) => fd as i32,
                    Err(e) => exit(e),
                }
            } else {
                let fd = match sys(
                    libc::SYS_inotify_init1,
                    [libc::IN_NONBLOCK as u64, 0, 0, 0, 0, 0],
                ) {
                    Ok(fd) => fd,
                    Err(e) => exit(e),
                };
                let path = c(&arg);
                if let Err(e) = sys(
                    libc::SYS_inotify_add_watch,
                    [
                        fd as u64,
                        ptr(path.as_ptr()),
                        libc::IN_CREATE as u64,
                        0,
                        0,
                        0,
                    ],
                ) {
                    exit(e)
                }
                fd as i32
            };
            // One byte with one SCM_RIGHTS fd; the control message built by hand (x86_64:
            // an 8-byte length, level, type, then the fd; CMSG_SPACE(4) = 24).
            let mut byte = [b'd'];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut control = [0u64; 3];
            control[0] = 20; // CMSG_LEN(4)
            control[1] =
                (libc::SOL_SOCKET as u32 as u64) | ((libc::SCM_RIGHTS as u32 as u64) << 32);
            control[2] = dir as u32 as u64;
            // SAFETY: an all-zero msghdr (no name, no data, no control) is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = 24;
            exit(
                match sys(
                    libc::SYS_sendmsg,
                    [3, ptr(&msg), libc::MSG_NOSIGNAL as u64, 0, 0, 0],
                ) {
                    Ok(1) => 0,
                    Ok(_) => libc::EIO,
                    Err(e) => e,
                },
            )
        }
        "sysv-shm-create" => {
            // SAFETY: plain shmget with an integer key.
            let id = unsafe { libc::shmget(0x4854_4348, 4096, libc::IPC_CREAT | 0o600) };
            exit(if id >= 0 { 0 } else { 1 })
        }
        "sysv-shm-find" => {
            // SAFETY: plain shmget with an integer key.
            let id = unsafe { libc::shmget(0x4854_4348, 0, 0) };
            refused(if id >= 0 {
                Ok(0)
            } else {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
            })
        }
        "sysv-msg-create" => exit(
            sys(
                libc::SYS_msgget,
                [0x4854_4349, (libc::IPC_CREAT | 0o600) as u64, 0, 0, 0, 0],
            )
            .map_or(1, |_| 0),
        ),
        "sysv-msg-find" => refused(sys(libc::SYS_msgget, [0x4854_4349, 0, 0, 0, 0, 0])),
        "sysv-sem-create" => exit(
            sys(
                libc::SYS_semget,
                [0x4854_434a, 1, (libc::IPC_CREAT | 0o600) as u64, 0, 0, 0],
            )
            .map_or(1, |_| 0),
        ),
        "sysv-sem-find" => refused(sys(libc::SYS_semget, [0x4854_434a, 0, 0, 0, 0, 0])),
        "mqueue-create" => {
            let name = c("/hatchery-attack");
            // SAFETY: NUL-terminated name; default attributes.
            let q = unsafe {
                libc::mq_open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_RDWR,
                    0o600,
                    std::ptr::null_mut::<libc::mq_attr>(),
                )
            };
            exit(if q >= 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
            })
        }
        "mqueue-find" => {
            let name = c("/hatchery-attack");
            // SAFETY: NUL-terminated name.
            let q = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDONLY) };
            refused(if q >= 0 {
                Ok(0)
            } else {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
            })
        }
        "tmp-chmod" => {
            use std::os::unix::fs::PermissionsExt;
            let ok = ["/tmp", "/dev/shm"].iter().all(|d| {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).is_ok()
            });
            exit(if ok { 0 } else { 1 })
        }
        // ENOENT when both are still world-writable with the sticky bit, as fresh ones are.
        "tmp-mode-find" => {
            use std::os::unix::fs::PermissionsExt;
            let fresh = ["/tmp", "/dev/shm"].iter().all(|d| {
                std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o1777)
            });
            exit(if fresh { libc::ENOENT } else { ESCAPED })
        }
        "process-plant" => {
            // A detached child that outlives this request, unless the sandbox kills it.
            match fork_now() {
                0 => {
                    // SAFETY: setsid takes no arguments.
                    unsafe { libc::setsid() };
                    std::thread::sleep(std::time::Duration::from_secs(30));
                    exit(0)
                }
                _ => exit(0),
            }
        }
        // ENOENT when no process but this one and PID 1 is visible.
        "process-find" => {
            let me = std::process::id().to_string();
            let others = std::fs::read_dir("/proc")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                        .filter(|n| n != "1" && *n != me)
                        .count()
                })
                .unwrap_or(usize::MAX);
            exit(if others == 0 { libc::ENOENT } else { ESCAPED })
        }
        "posix-shm-create" => {
            let ok = std::fs::write("/dev/shm/hatchery-attack", b"secret").is_ok();
            exit(if ok { 0 } else { 1 })
        }
        "posix-shm-find" => refused(open("/dev/shm/hatchery-attack", libc::O_RDONLY)),
        "tmp-plant" => {
            let ok = std::fs::write("/tmp/hatchery-planted", b"for the next request").is_ok();
            exit(if ok { 0 } else { 1 })
        }
        "tmp-find" => refused(open("/tmp/hatchery-planted", libc::O_RDONLY)),

        // ---- resource exhaustion ----
        "fork-bomb" => loop {
            match fork_now() {
                0 => {
                    // SAFETY: pause takes no arguments.
                    unsafe { libc::pause() };
                    exit(0)
                }
                -1 => exit(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)),
                _ => {}
            }
        },
        "thread-bomb" => loop {
            if let Err(e) = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(std::thread::park)
            {
                exit(e.raw_os_error().unwrap_or(-1))
            }
        },
        "memory-hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut v: Vec<u8> = Vec::new();
                if v.try_reserve_exact(16 << 20).is_err() {
                    exit(libc::ENOMEM)
                }
                v.resize(16 << 20, 1);
                hoard.push(v);
            }
        }
        "fd-exhaust" => loop {
            if let Err(e) = open("/dev/null", libc::O_RDONLY) {
                exit(e)
            }
        },
        "tmpfs-fill" => {
            let mut f = std::fs::File::create("/tmp/fill").expect("create");
            let chunk = vec![7u8; 1 << 16];
            loop {
                if let Err(e) = f.write_all(&chunk) {
                    exit(e.raw_os_error().unwrap_or(-1))
                }
            }
        }
        "output-flood" => {
            let chunk = vec![b'y'; 1 << 16];
            let mut out = std::io::stdout().lock();
            loop {
                if out.write_all(&chunk).is_err() {
                    exit(1)
                }
            }
        }
        "cpu-spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        "sleep-forever" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "sigstop-self" => {
            let _ = sys(libc::SYS_kill, [0, libc::SIGSTOP as u64, 0, 0, 0, 0]);
            exit(0)
        }
        "ignore-sigterm" => {
            // SAFETY: ignoring a signal installs no handler code.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "core-dump" => std::process::abort(),
        "zombies" => {
            for _ in 0..200 {
                if fork_now() == 0 {
                    // SAFETY: _exit in the child of a single-threaded process.
                    unsafe { libc::_exit(0) };
                }
            }
            exit(0)
        }
        other => {
            eprintln!("unknown attack {other:?}");
            exit(99)
        }
    }
}
