//! The adversarial suite: each case runs `attack NAME` (tests/src/bin/attack.rs), a tiny program
//! that attempts one attack, in the default profile, in one-shot mode and in a pool, and asserts
//! the exact result: the errno the kernel refused it with, a reported seccomp violation, a
//! typed outcome. The pool must keep serving after every case, and the host's open fds,
//! children and zombies must be unchanged at the end. `scripts/test.sh` runs it as root and as
//! an unprivileged user.

use std::io::{BufRead, BufReader};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hatchery::pool::Sink;
use hatchery::{Container, Outcome, Pool, Request};
use hatchery_tests::{bin_dir, require, user_namespaces_work};

const ATTACK: &str = "/hatchery-bin/attack";
/// The attack succeeded (see attack.rs).
const ESCAPED: i32 = 100;

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn profile() -> Container {
    let mut c = hatchery::pool::default_profile();
    c.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    c
}

/// What a case must end with.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Refused with this errno (the attack exits with it).
    Errno(i32),
    /// Refused with one of these errnos (where modes differ in how they refuse).
    Errnos(&'static [i32]),
    /// The attack found nothing to exploit and exits 0.
    Clean,
    /// Killed and reported as a violation of this system call.
    Violation(&'static str),
    /// Exactly this outcome.
    Outcome(Outcome),
}

fn check(mode: &str, attack: &str, outcome: &Outcome, expect: &Expect) {
    let ok = match (expect, outcome) {
        (Expect::Errno(e), Outcome::Exited(code)) => code == e,
        (Expect::Errnos(es), Outcome::Exited(code)) => es.contains(code),
        (Expect::Clean, Outcome::Exited(0)) => true,
        (Expect::Violation(name), Outcome::Violation { syscall, .. }) => syscall == name,
        (Expect::Outcome(o), got) => o == got,
        _ => false,
    };
    assert!(
        ok,
        "{mode}: attack {attack}: expected {expect:?}, got {outcome:?}{}",
        if *outcome == Outcome::Exited(ESCAPED) {
            " (THE ATTACK SUCCEEDED)"
        } else {
            ""
        }
    );
}

/// One pool for the suite's sequential cases: one zygote, so every case runs where the
/// previous one did.
fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(
            Pool::builder()
                .profile(profile())
                .min_zygotes(1)
                .max_zygotes(1)
                .build()
                .expect("pool"),
        )
    })
}

fn run_pool(attack: &str, arg: &str, wall: Duration) -> Outcome {
    let p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let r = p
        .run(Request::exec(ATTACK).args([attack, arg]).wall_time(wall))
        .unwrap_or_else(|e| panic!("pool: attack {attack}: host error {e}"));
    // The zygote still serves.
    let next = p
        .run(Request::exec("/bin/true"))
        .expect("pool after attack");
    assert_eq!(next.outcome, Outcome::Exited(0), "pool after {attack}");
    r.outcome
}

fn run_oneshot(c: &Container, attack: &str, arg: &str, wall: Duration) -> Outcome {
    c.command(ATTACK)
        .args([attack, arg])
        .wait_timeout(wall)
        .status()
        .unwrap_or_else(|e| panic!("one-shot: attack {attack}: host error {e}"))
        .outcome
}

/// Runs `attack` in both modes and checks both results.
fn both(attack: &str, expect: Expect) {
    both_with(attack, "", Duration::from_secs(10), expect)
}

fn both_with(attack: &str, arg: &str, wall: Duration, expect: Expect) {
    if !ready() {
        return;
    }
    let got = run_oneshot(&profile(), attack, arg, wall);
    check("one-shot", attack, &got, &expect);
    let got = run_pool(attack, arg, wall);
    check("pool", attack, &got, &expect);
}

macro_rules! cases {
    ($($name:ident: $attack:literal => $expect:expr;)*) => {
        $(
            #[test]
            fn $name() {
                both($attack, $expect);
            }
        )*
    };
}

// File-system escape.
cases! {
    host_secret_is_absent: "read-host-secret" => Expect::Errno(libc::ENOENT);
    host_home_is_absent: "read-host-home" => Expect::Errno(libc::ENOENT);
    read_only_bind_cannot_be_written: "write-ro-bind" => Expect::Errno(libc::EROFS);
    placed_files_are_read_only: "write-placed-file" => Expect::Errno(libc::EROFS);
    remount_read_write_is_a_violation: "remount-rw" => Expect::Violation("mount");
    mount_is_a_violation: "mount-tmpfs" => Expect::Violation("mount");
    umount_is_a_violation: "umount" => Expect::Violation("umount2");
    chroot_is_a_violation: "chroot" => Expect::Violation("chroot");
    pivot_root_is_a_violation: "pivot-root" => Expect::Violation("pivot_root");
    open_by_handle_is_a_violation: "open-by-handle" => Expect::Violation("open_by_handle_at");
    new_mount_api_is_a_violation: "fsopen" => Expect::Violation("fsopen");
    proc_sys_cannot_be_written: "proc-sys-write" => Expect::Errno(libc::EACCES);
    sysrq_trigger_is_absent: "proc-sysrq" => Expect::Errno(libc::ENOENT);
    own_exe_cannot_be_written: "proc-self-exe-write" => Expect::Errno(libc::EACCES);
    // A one-shot's PID 1 is shown but not readable; a zygote's /proc (hidepid=invisible) hides it.
    init_exe_cannot_be_opened: "proc-init-exe" => Expect::Errnos(&[libc::EACCES, libc::ENOENT]);
    raw_devices_are_absent: "raw-device" => Expect::Errno(libc::ENOENT);
    mknod_is_refused: "mknod" => Expect::Errno(libc::EPERM);
    capabilities_cannot_be_regained: "gain-caps" => Expect::Errno(libc::EPERM);
    no_host_fds_leak: "leaked-fds" => Expect::Clean;
    cwd_cannot_leave_the_root: "cwd-escape" => Expect::Errno(libc::ENOENT);
    symlinks_cannot_leave_the_root: "symlink-escape" => Expect::Errno(libc::ENOENT);
    setuid_copies_gain_nothing: "exec-from-tmp-setuid" => Expect::Clean;
}

// Kernel attack surface.
cases! {
    unshare_is_a_violation: "unshare-user" => Expect::Violation("unshare");
    setns_is_a_violation: "setns" => Expect::Violation("setns");
    clone_with_namespaces_is_a_violation: "clone-newns" => Expect::Violation("clone");
    clone3_is_enosys: "clone3" => Expect::Errno(libc::ENOSYS);
    ptrace_traceme_is_a_violation: "ptrace-traceme" => Expect::Violation("ptrace");
    ptrace_of_init_is_a_violation: "ptrace-init" => Expect::Violation("ptrace");
    process_vm_readv_is_a_violation: "process-vm-readv" => Expect::Violation("process_vm_readv");
    bpf_is_a_violation: "bpf" => Expect::Violation("bpf");
    perf_event_open_is_a_violation: "perf-event-open" => Expect::Violation("perf_event_open");
    userfaultfd_is_a_violation: "userfaultfd" => Expect::Violation("userfaultfd");
    io_uring_is_enosys: "io-uring" => Expect::Errno(libc::ENOSYS);
    keyctl_is_a_violation: "keyctl" => Expect::Violation("keyctl");
    add_key_is_a_violation: "add-key" => Expect::Violation("add_key");
    kexec_is_a_violation: "kexec-load" => Expect::Violation("kexec_load");
    module_loading_is_a_violation: "init-module" => Expect::Violation("init_module");
    personality_changes_are_refused: "personality" => Expect::Errno(libc::ENOSYS);
    tiocsti_with_high_bits_is_a_violation: "tiocsti" => Expect::Violation("ioctl");
    tioclinux_is_a_violation: "tioclinux" => Expect::Violation("ioctl");
    vsock_sockets_are_refused: "socket-vsock" => Expect::Errno(libc::EAFNOSUPPORT);
    af_alg_sockets_are_refused: "socket-alg" => Expect::Errno(libc::EAFNOSUPPORT);
    packet_sockets_are_refused: "socket-packet" => Expect::Errno(libc::EAFNOSUPPORT);
    socket_families_compare_all_bits: "socket-vsock-high-bits" => Expect::Errno(libc::EAFNOSUPPORT);
    socketpair_is_unix_only: "socketpair-vsock" => Expect::Errno(libc::EAFNOSUPPORT);
    netlink_is_route_only: "netlink-audit" => Expect::Errno(libc::EPROTONOSUPPORT);
    unix_inet_and_route_netlink_still_work: "socket-allowed-families" => Expect::Clean;
    x32_abi_kills: "x32-syscall" => Expect::Outcome(Outcome::Signaled { signal: libc::SIGSYS, core_dumped: false });
    i386_abi_kills: "i386-syscall" => Expect::Outcome(Outcome::Signaled { signal: libc::SIGSYS, core_dumped: false });
}

// Other requests, the zygote, the host.
cases! {
    init_cannot_be_signalled: "kill-init" => Expect::Errno(libc::EPERM);
    kill_all_reaches_nobody: "kill-all" => Expect::Errno(libc::ESRCH);
    tcp_bind_is_refused: "tcp-bind" => Expect::Errno(libc::EACCES);
    tcp_connect_is_refused: "tcp-connect" => Expect::Errno(libc::EACCES);
    core_dumps_are_off: "core-dump" => Expect::Outcome(Outcome::Signaled { signal: libc::SIGABRT, core_dumped: false });
    zombies_are_reaped: "zombies" => Expect::Clean;
}

// Resource exhaustion.
cases! {
    fork_bombs_hit_the_pids_limit: "fork-bomb" => Expect::Errno(libc::EAGAIN);
    thread_bombs_hit_the_pids_limit: "thread-bomb" => Expect::Errno(libc::EAGAIN);
    fd_exhaustion_hits_nofile: "fd-exhaust" => Expect::Errno(libc::EMFILE);
}

#[test]
fn the_host_process_cannot_be_signalled() {
    // The host's pids do not exist in the container's pid namespace (and pid 1, the shim, is
    // protected by the landlock scope: see init_cannot_be_signalled).
    both_with(
        "kill-pid",
        &std::process::id().to_string(),
        Duration::from_secs(10),
        Expect::Errno(libc::ESRCH),
    );
}

#[test]
fn time_and_signal_games_end_in_timeouts() {
    for attack in [
        "cpu-spin",
        "sleep-forever",
        "sigstop-self",
        "ignore-sigterm",
    ] {
        both_with(
            attack,
            "",
            Duration::from_millis(300),
            Expect::Outcome(Outcome::TimedOut),
        );
    }
}

#[test]
fn memory_hogs_hit_the_memory_limit() {
    if !ready() {
        return;
    }
    let mut c = profile();
    c.cgroup_memory(96 << 20);
    let expect = match hatchery::cgroup::mechanism() {
        // Without a cgroup the limit is RLIMIT_AS: allocation fails.
        hatchery::cgroup::Mechanism::Rlimits => Expect::Errno(libc::ENOMEM),
        _ => Expect::Outcome(Outcome::MemoryExceeded),
    };
    let got = run_oneshot(&c, "memory-hog", "", Duration::from_secs(20));
    check("one-shot", "memory-hog", &got, &expect);
    let p = Pool::builder()
        .profile(c)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap();
    let r = p
        .run(Request::exec(ATTACK).arg("memory-hog"))
        .expect("pool");
    check("pool", "memory-hog", &r.outcome, &expect);
    assert!(p.run(Request::exec("/bin/true")).unwrap().success());
}

#[test]
fn tmpfs_and_output_floods_are_capped() {
    if !ready() {
        return;
    }
    let p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let r = p
        .run(
            Request::exec(ATTACK)
                .arg("tmpfs-fill")
                .tmp_size(1 << 20)
                .stdout(Sink::Capture(64 << 20)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::Exited(libc::ENOSPC));
    let r = p
        .run(
            Request::exec(ATTACK)
                .arg("output-flood")
                .stdout(Sink::Capture(1 << 20)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::OutputExceeded);
    assert!(r.stdout.len() <= 1 << 20);
    let got = run_oneshot(&profile(), "tmpfs-fill", "", Duration::from_secs(10));
    // One-shot /tmp is the profile's 64 MiB tmpfs.
    check("one-shot", "tmpfs-fill", &got, &Expect::Errno(libc::ENOSPC));
}

#[test]
fn nothing_is_left_for_the_next_request() {
    if !ready() {
        return;
    }
    for (plant, find) in [
        ("tmp-plant", "tmp-find"),
        ("sysv-shm-create", "sysv-shm-find"),
        ("posix-shm-create", "posix-shm-find"),
        ("sysv-msg-create", "sysv-msg-find"),
        ("sysv-sem-create", "sysv-sem-find"),
        // (POSIX message queues: `mq_open` is refused under this profile's landlock domain, EACCES;
        // the call-mode residue test covers them.)
        ("tmp-chmod", "tmp-mode-find"),
        ("process-plant", "process-find"),
    ] {
        let got = run_pool(plant, "", Duration::from_secs(10));
        assert_eq!(got, Outcome::Exited(0), "{plant}");
        let got = run_pool(find, "", Duration::from_secs(10));
        check("pool", find, &got, &Expect::Errno(libc::ENOENT));
        let c = profile();
        assert_eq!(
            run_oneshot(&c, plant, "", Duration::from_secs(10)),
            Outcome::Exited(0)
        );
        check(
            "one-shot",
            find,
            &run_oneshot(&c, find, "", Duration::from_secs(10)),
            &Expect::Errno(libc::ENOENT),
        );
    }
}

/// A profile that shares the host's IPC namespace still gives pool requests one of their own,
/// the very first request of a zygote included: it never finds the host's SysV objects.
#[test]
fn a_pool_request_never_sees_the_hosts_ipc_objects() {
    if !ready() {
        return;
    }
    // The key the attack's sysv-shm-find looks for, made on the host by the attack itself (a
    // request that shares this namespace finds it: EACCES or success, never ENOENT).
    let made = std::process::Command::new(bin_dir().join("attack"))
        .arg("sysv-shm-create")
        .status()
        .expect("attack on the host");
    assert!(made.success(), "sysv-shm-create on the host");
    let mut c = profile();
    c.share(hatchery::Namespace::Ipc);
    for _ in 0..2 {
        // A new pool: its zygote's first request.
        let p = Pool::builder()
            .profile(c.clone())
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .expect("pool");
        let r = p
            .run(Request::exec(ATTACK).args(["sysv-shm-find", ""]))
            .expect("request");
        check(
            "pool",
            "sysv-shm-find",
            &r.outcome,
            &Expect::Errno(libc::ENOENT),
        );
    }
    let _ = std::process::Command::new("ipcrm")
        .args(["-M", "0x48544348"])
        .status();
}

#[test]
fn concurrent_requests_cannot_reach_each_others_abstract_sockets() {
    if !ready() {
        return;
    }
    // Two requests at once in one zygote: each in a network namespace of its own (where abstract
    // sockets live) and a landlock domain of its own (whose scope refuses other domains' abstract
    // sockets): the connection finds no listener.
    let p = Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .max_concurrent_per_zygote(2)
        .build()
        .unwrap();
    let name = format!("hatchery-attack-{}", std::process::id());
    let (r, w) = nix::unistd::pipe().unwrap();
    let listener = p
        .submit(
            Request::exec(ATTACK)
                .args(["abstract-listen", &name])
                .stdout(Sink::Fd(w))
                .wall_time(Duration::from_secs(20)),
        )
        .unwrap();
    let mut line = String::new();
    BufReader::new(std::fs::File::from(r))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    let r = p
        .run(Request::exec(ATTACK).args(["abstract-connect", &name]))
        .unwrap();
    assert_eq!(r.outcome, Outcome::Exited(libc::ECONNREFUSED));
    drop(listener); // cancels it
}

#[test]
fn confinement_is_reported() {
    if !ready() {
        return;
    }
    let p = pool().lock().unwrap_or_else(|e| e.into_inner());
    p.run(Request::exec("/bin/true")).unwrap();
    let f = p.features().expect("features after a zygote started");
    assert!(f.seccomp && f.seccomp_notify && f.no_new_privs, "{f:?}");
    let want_abi: Option<u32> = std::env::var("HATCHERY_LANDLOCK_ABI")
        .ok()
        .and_then(|v| v.parse().ok());
    match (want_abi, f.landlock_abi) {
        (Some(want), got) => assert!(
            got.is_some_and(|g| g >= want),
            "landlock ABI {got:?}, expected at least {want} (HATCHERY_LANDLOCK_ABI)"
        ),
        (None, None) => {
            require(false, "landlock unavailable");
        }
        (None, Some(_)) => {}
    }
    if f.landlock_abi.is_some_and(|a| a >= 6) {
        let e = f.landlock.expect("landlock details");
        assert_eq!((e.net, e.scoped), (0b11, 0b11));
    }
}

/// Setup steps that fail for real (bad mount source, landlock rule on a missing path, missing
/// program, bad working directory, unknown user) fail with a typed error naming the step, and
/// the command, which would leave a mark in a writable directory, never runs.
#[test]
fn failed_setup_steps_never_run_the_command() {
    if !ready() {
        return;
    }
    let marks = std::env::temp_dir().join(format!("hatchery-marks-{}", std::process::id()));
    std::fs::create_dir_all(&marks).unwrap();
    let marks_s = marks.to_string_lossy().into_owned();
    let base = || {
        let mut c = profile();
        c.bindmount_rw(&marks_s, "/marks");
        c
    };
    type Break = Box<dyn Fn(&mut Container)>;
    let cases: Vec<(&str, hatchery::SetupStep, Break)> = vec![
        (
            "bind",
            hatchery::SetupStep::BindMount,
            Box::new(|c| {
                c.bindmount_ro("/nonexistent-hatchery-source", "/x");
            }),
        ),
        (
            "landlock",
            hatchery::SetupStep::Landlock,
            Box::new(|c| {
                let mut r = hatchery::landlock::Ruleset::new();
                r.restrict_all(hatchery::landlock::CompatMode::Enforce)
                    .add_fs_rule("/no/such/path", hatchery::landlock::FsAccess::R);
                c.landlock_ruleset(r);
            }),
        ),
        (
            "user",
            hatchery::SetupStep::ResolveUser,
            Box::new(|c| {
                c.user("no-such-user", None, &[]);
            }),
        ),
    ];
    for (what, step, breaker) in cases {
        let mut c = base();
        breaker(&mut c);
        let mark = format!("/marks/{what}");
        let err = c
            .command("/bin/sh")
            .args(["-c", &format!("echo ran > {mark}")])
            .status()
            .expect_err(what);
        match err {
            hatchery::Error::Setup { step: s, .. } => assert_eq!(s, step, "{what}"),
            other => panic!("{what}: expected a setup error, got {other}"),
        }
        // The same container as a pool: the zygote never becomes ready, or the request fails.
        let pool = Pool::builder()
            .profile(c)
            .min_zygotes(0)
            .max_zygotes(1)
            .build();
        let spawn_failed = |e: &hatchery::PoolError| match e {
            hatchery::PoolError::Spawn(e) => {
                matches!(**e, hatchery::Error::Setup { step: s, .. } if s == step)
            }
            _ => false,
        };
        match pool {
            Err(e) => assert!(spawn_failed(&e), "{what}: {e}"),
            Ok(p) => match p.run(sh_mark(&mark)) {
                Ok(r) => assert!(
                    matches!(&r.outcome, Outcome::SetupFailed(f) if f.step == step),
                    "{what}: {r:?}"
                ),
                Err(e) => assert!(spawn_failed(&e), "{what}: {e}"),
            },
        }
        assert!(!marks.join(what).exists(), "{what}: the command ran");
    }
    // Request-level failures: missing program, bad working directory.
    let c = base();
    let p = Pool::builder()
        .profile(c.clone())
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap();
    let r = p.run(Request::exec("/no/such/program")).unwrap();
    assert!(
        matches!(&r.outcome, Outcome::SetupFailed(f) if f.step == hatchery::SetupStep::Exec || f.step == hatchery::SetupStep::FindProgram),
        "{r:?}"
    );
    let r = p
        .run(sh_mark("/marks/cwd").current_dir("/no/such/dir"))
        .unwrap();
    assert!(
        matches!(&r.outcome, Outcome::SetupFailed(f) if f.step == hatchery::SetupStep::Chdir),
        "{r:?}"
    );
    assert!(!marks.join("cwd").exists());
    let _ = std::fs::remove_dir_all(&marks);
}

fn sh_mark(mark: &str) -> Request {
    Request::exec("/bin/sh").args(["-c", &format!("echo ran > {mark}")])
}

#[test]
fn a_policy_that_notifies_execve_reports_it() {
    use hatchery::seccomp::{Action, Filter};
    if !ready() {
        return;
    }
    // The command's own execve is the first call its filter sees: the supervisor must report it
    // (not wait for an exec that never completes), in every launch path.
    let mut c = profile();
    let mut f = Filter::new(Action::Allow);
    f.add_rule(Action::Notify, "execve");
    c.seccomp_filter(f);
    let wall = Duration::from_secs(20);
    let expect = Expect::Violation("execve");
    check(
        "one-shot",
        "execve",
        &c.command("/bin/true")
            .wait_timeout(wall)
            .status()
            .unwrap()
            .outcome,
        &expect,
    );
    for concurrent in [1, 2] {
        let p = Pool::builder()
            .profile(c.clone())
            .min_zygotes(1)
            .max_zygotes(1)
            .max_concurrent_per_zygote(concurrent)
            .build()
            .unwrap();
        let mode = format!("pool, {concurrent} per zygote");
        for _ in 0..2 {
            let r = p.run(Request::exec("/bin/true").wall_time(wall)).unwrap();
            check(&mode, "execve", &r.outcome, &expect);
        }
    }
}

#[test]
fn strict_denies_the_listener_hand_over_form_of_sendmsg() {
    use hatchery::seccomp::Profile;
    if !ready() {
        return;
    }
    assert_eq!(
        hatchery_protocol::LISTENER_SEND_FLAGS,
        0x4000 | 0x40 | 0x80 | 0x400 | 0x1000,
        "attack.rs HANDOVER_FLAGS"
    );
    // The shim hands each command's notification listener over with one sendmsg between
    // installing the filter and exec, then revokes that form with a second filter: the command
    // must not inherit the allowance (EPERM), any other sendmsg is strict's violation, and the
    // hand-over still works (mount is reported). Installing a further, restricting filter
    // is what stays allowed.
    let mut c = profile();
    c.seccomp_filter(Profile::Strict.filter().unwrap());
    let wall = Duration::from_secs(10);
    let p = Pool::builder()
        .profile(c.clone())
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap();
    for (attack, expect) in [
        ("sendmsg-handover-form", Expect::Errno(libc::EPERM)),
        ("sendmsg", Expect::Violation("sendmsg")),
        ("mount-tmpfs", Expect::Violation("mount")),
        ("seccomp-self-restrict", Expect::Clean),
    ] {
        let got = run_oneshot(&c, attack, "", wall);
        check("one-shot, strict", attack, &got, &expect);
        let r = p
            .run(Request::exec(ATTACK).args([attack]).wall_time(wall))
            .unwrap();
        check("pool, strict", attack, &r.outcome, &expect);
    }
}

/// A writer that ignores SIGXFSZ and goes on after EFBIG, exiting with `code`.
fn efbig_writer(code: i32) -> Request {
    Request::exec("/bin/sh").args([
        "-c",
        &format!("trap '' XFSZ; head -c 8M /dev/zero; exit {code}"),
    ])
}

#[test]
fn reaching_an_output_cap_is_never_a_truncated_success() {
    if !ready() {
        return;
    }
    let p = pool().lock().unwrap_or_else(|e| e.into_inner());
    for code in [0, 1] {
        // Captured stdout.
        let r = p
            .run(efbig_writer(code).stdout(Sink::Capture(4 << 20)))
            .unwrap();
        assert_eq!(r.outcome, Outcome::OutputExceeded, "capture, exit {code}");
        assert_eq!(r.stdout.len(), 4 << 20);
        // stdout into a file, capped by the stderr capture's limit (as `hatchery map` does).
        let file = tempfile_in_tmp(&format!("efbig-{code}"));
        let r = p
            .run(
                efbig_writer(code)
                    .stdout(Sink::Fd(file.try_clone().unwrap().into()))
                    .stderr(Sink::Capture(4 << 20)),
            )
            .unwrap();
        assert_eq!(r.outcome, Outcome::OutputExceeded, "file sink, exit {code}");
    }
    // Exactly the cap is not an overflow.
    let r = p
        .run(
            Request::exec("/bin/sh")
                .args(["-c", "head -c 4M /dev/zero"])
                .stdout(Sink::Capture(4 << 20)),
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::Exited(0));
    assert_eq!(r.stdout.len(), 4 << 20);
}

fn tempfile_in_tmp(name: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("hatchery-{}-{name}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    f
}
