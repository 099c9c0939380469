//! Shims started ahead (`host/src/spare.rs`): a thread that runs one-shot containers one after
//! another gets the next one's shim started while the last builds its root. The next container
//! must be what a shim started at its own spawn would give: the thread's and the process's state
//! of that moment (working directory, umask, limits, seccomp filters), never another thread's, and
//! nothing may outlive `settle()`. These tests change process-wide state: they take turns.

use std::sync::{Mutex, MutexGuard, OnceLock};

use hatchery::{Container, Output};
use hatchery_tests::{child_pids, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `script` with `sh` and returns its output, and whether its shim was started ahead.
fn sh(c: &Container, script: &str) -> (Output, bool) {
    let child = c
        .command("/bin/sh")
        .args(["-c", script])
        .stdin(hatchery::Stdio::Null)
        .stdout(hatchery::Stdio::Piped)
        .stderr(hatchery::Stdio::Piped)
        .spawn()
        .expect("spawn");
    let ahead = child
        .setup_timings()
        .iter()
        .any(|(step, _)| step.contains("started ahead"));
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{script}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out, ahead)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_next_container_of_a_thread_takes_its_shim_started_ahead_and_no_other_thread_does() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = hatchery::pool::default_profile();
    let (_, first) = sh(&c, "echo one > /tmp/mark");
    let (out, second) = sh(&c, "test -e /tmp/mark && echo seen || echo fresh");
    assert!(
        !first,
        "the first container of a thread had a shim started ahead"
    );
    assert!(
        second,
        "the second container of a thread started its own shim"
    );
    assert_eq!(text(&out), "fresh", "a container saw the last one's /tmp");
    // Another thread never takes this thread's spare: its first container starts its own.
    let other = std::thread::scope(|s| s.spawn(|| sh(&c, "true").1).join().unwrap());
    assert!(!other, "a thread took another thread's shim");
    // That thread's spare ended with it; this thread's still waits.
    assert!(sh(&c, "true").1, "this thread's spare was lost");
}

#[test]
fn a_changed_working_directory_umask_or_limit_or_a_new_seccomp_filter_is_not_missed() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let home = std::env::current_dir().unwrap();
    let tmp = std::env::temp_dir().join(format!("hatchery-spare-{}", std::process::id()));
    for name in ["x", "y"] {
        std::fs::create_dir_all(tmp.join(name).join("d")).unwrap();
        std::fs::write(tmp.join(name).join("d").join("which"), name).unwrap();
        // Readable for the container's users (an unprivileged host maps only itself).
        for p in [tmp.clone(), tmp.join(name), tmp.join(name).join("d")] {
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(&p, mode).unwrap();
        }
    }
    let mut c = hatchery::pool::default_profile();
    // A relative bind source resolves against the working directory of the spawn.
    c.bindmount_ro("d", "/d");
    std::env::set_current_dir(tmp.join("x")).unwrap();
    sh(&c, "true");
    let (out, ahead) = sh(&c, "cat /d/which");
    assert!(ahead, "no shim was started ahead");
    assert_eq!(text(&out), "x");
    std::env::set_current_dir(tmp.join("y")).unwrap();
    let (out, ahead) = sh(&c, "cat /d/which");
    std::env::set_current_dir(&home).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(
        text(&out),
        "y",
        "a bind resolved against the last working directory"
    );
    assert!(
        !ahead,
        "a shim started in another working directory was taken"
    );
    drop(c);

    let c = hatchery::pool::default_profile();
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    sh(&c, "true");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let (out, _) = sh(&c, "umask");
    nix::sys::stat::umask(old);
    assert_eq!(
        text(&out),
        "0077",
        "the container has the umask of a past spawn"
    );

    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK).unwrap();
    sh(&c, "true");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_STACK, 4 << 20, hard)
        .unwrap();
    let (out, _) = sh(&c, "ulimit -s");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_STACK, soft, hard).unwrap();
    assert_eq!(
        text(&out),
        "4096",
        "the container has the limits of a past spawn"
    );

    // A thread that installs a seccomp filter after its last container: the next one is under it.
    let under_filter = std::thread::scope(|s| {
        s.spawn(|| {
            sh(&c, "true");
            allow_all_filter();
            let (out, ahead) = sh(&c, "grep Seccomp_filters /proc/self/status");
            (text(&out), ahead)
        })
        .join()
        .unwrap()
    });
    assert!(
        !under_filter.1,
        "a shim started before the thread's filter was taken"
    );
    let filters: u32 = under_filter
        .0
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The container's own filters are on top of the thread's one.
    assert!(filters >= 2, "{}", under_filter.0);
}

/// Installs a seccomp filter that allows everything on the calling thread.
#[allow(unsafe_code)]
fn allow_all_filter() {
    let mut allow = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_mut_ptr(),
    };
    // SAFETY: a plain prctl call.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(nnp, 0);
    // SAFETY: `prog` points at a valid one-instruction program for the duration of the call.
    let installed = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(installed, 0);
}

#[test]
fn settle_ends_the_shims_started_ahead_and_a_killed_one_is_replaced() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = hatchery::pool::default_profile();
    hatchery::reaper::settle();
    let before = child_pids();
    sh(&c, "true");
    // Once the container is reaped, what is left is its spare.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let spare = loop {
        let now: Vec<i32> = child_pids()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if now.len() == 1 || std::time::Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(spare.len(), 1, "expected one spare shim: {spare:?}");
    // A spare that died is not taken: the next container starts its own shim and runs. (One
    // killed while it is being taken fails that spawn with `ShimLost`, as any shim killed at its
    // start does.)
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spare[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while std::fs::read_to_string(format!("/proc/{}/stat", spare[0])).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (out, ahead) = sh(&c, "echo ran");
    assert_eq!(text(&out), "ran");
    assert!(!ahead, "a dead spare was taken");
    hatchery::reaper::settle();
    let left: Vec<i32> = child_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.is_empty(), "settle() left processes: {left:?}");
    // Turned off, no shim is started ahead.
    hatchery::reaper::start_shims_ahead(false);
    sh(&c, "true");
    let (_, ahead) = sh(&c, "true");
    hatchery::reaper::start_shims_ahead(true);
    assert!(!ahead, "a shim was started ahead while turned off");
}
