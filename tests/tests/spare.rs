//! Shims started ahead (`host/src/spare.rs`): a thread that runs one-shot containers one after
//! another gets the next one's shim started while the last builds its root. The next container
//! must be what a shim started at its own spawn would give: the thread's and the process's state
//! of that moment (working directory, umask, limits, seccomp filters), never another thread's, and
//! nothing may outlive `settle()`. These tests change process-wide state: they take turns.

use std::sync::{Mutex, MutexGuard, OnceLock};

use hatchery::{Container, Namespace, Output};
use hatchery_tests::{child_pids, is_root, require, user_namespaces_work};

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

/// Runs `script` with `sh`: its output, and whether its shim was started ahead.
fn run_sh(c: &Container, script: &str) -> (Output, bool) {
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
    (child.wait_with_output().expect("wait"), ahead)
}

/// [`run_sh`] for a script that must succeed.
fn sh(c: &Container, script: &str) -> (Output, bool) {
    let (out, ahead) = run_sh(c, script);
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

/// [`run_sh`] for a script that may fail: its stdout and stderr together.
fn try_sh(c: &Container, script: &str) -> (String, bool) {
    let (out, ahead) = run_sh(c, script);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (all, ahead)
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

    // A thread that installs another seccomp filter after its last container (it had one, and
    // no_new_privs, already: only the count of filters differs): the next one is under it.
    let filters = |out: &str| -> u32 {
        out.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (before, after, ahead) = std::thread::scope(|s| {
        s.spawn(|| {
            allow_all_filter();
            let (out, _) = sh(&c, "grep Seccomp_filters /proc/self/status");
            allow_all_filter();
            let (again, ahead) = sh(&c, "grep Seccomp_filters /proc/self/status");
            (text(&out), text(&again), ahead)
        })
        .join()
        .unwrap()
    });
    assert!(
        !ahead,
        "a shim started before the thread's second filter was taken"
    );
    // The container's own filters are on top of the thread's.
    assert_eq!(
        filters(&after),
        filters(&before) + 1,
        "{before} then {after}"
    );
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

fn run(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}");
}

// Found by a review attack (each failed before its check): the host's mount table, the thread's
// namespaces and cgroup, and a fork.

/// The host mounts a per-request tmpfs at a fixed path, runs a container that binds it, unmounts
/// it and mounts the next request's there. The spare of the second container was cloned (its
/// mount namespace copied) while the first ran: it still has the first request's tmpfs.
#[test]
fn a_mount_the_host_replaced_after_the_last_container_is_not_seen_by_the_next() {
    if !ready() || !is_root() {
        return;
    }
    let _turn = one_at_a_time();
    let dir = format!("/tmp/hatchery-review-job-{}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = hatchery::pool::default_profile();
    c.bindmount_ro(&dir, "/job");
    // Request A.
    run("mount", &["-t", "tmpfs", "-o", "mode=755", "tmpfs", &dir]);
    std::fs::write(format!("{dir}/secret"), "tenant-A").unwrap();
    let (a, _) = try_sh(&c, "cat /job/secret");
    run("umount", &[&dir]);
    // Request B.
    run("mount", &["-t", "tmpfs", "-o", "mode=755", "tmpfs", &dir]);
    std::fs::write(format!("{dir}/secret"), "tenant-B").unwrap();
    let (b, ahead) = try_sh(&c, "cat /job/secret");
    run("umount", &[&dir]);
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(a, "tenant-A");
    assert_eq!(
        b, "tenant-B",
        "request B read request A's tmpfs (shim started ahead: {ahead})"
    );
}

/// A thread that moves into another network namespace (setns/unshare: per thread) between two
/// containers that share its network: the second must be in the thread's namespace of its spawn.
#[test]
fn a_container_sharing_the_network_gets_the_threads_namespace_of_its_spawn() {
    if !ready() || !is_root() {
        return;
    }
    let _turn = one_at_a_time();
    let (inside, want, ahead) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = hatchery::pool::default_profile();
            c.share(Namespace::Network);
            try_sh(&c, "true");
            // The thread enters a new, empty network namespace (a tenant's, say).
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let want = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
            let (out, ahead) = try_sh(&c, "readlink /proc/self/ns/net");
            (out, want.to_string_lossy().to_string(), ahead)
            // (The thread exits: its namespace goes with it.)
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        inside, want,
        "the container is in the network namespace the thread left (started ahead: {ahead})"
    );
}

/// A thread moved into another cgroup (v1 `tasks`: per thread; v2 `cgroup.threads` or the
/// process) between two containers without limits of their own: the second must be born where
/// the thread is at its spawn (its pids/memory limits), not where it was.
#[test]
fn a_container_without_limits_is_born_in_the_threads_cgroup_of_its_spawn() {
    if !ready() || !is_root() {
        return;
    }
    let _turn = one_at_a_time();
    let pids = "/sys/fs/cgroup/pids";
    if !std::path::Path::new(&format!("{pids}/tasks")).exists() {
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let cg = format!("{pids}/hatchery-review-{}", std::process::id());
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(format!("{cg}/pids.max"), "64").unwrap();
    let (before, after, ahead) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = Container::new();
            hatchery::pool::add_system_dirs(&mut c);
            let (a, _) = try_sh(&c, "grep pids /proc/self/cgroup");
            // This thread only (v1 tasks) into the limited cgroup.
            std::fs::write(format!("{cg}/tasks"), nix::unistd::gettid().to_string()).unwrap();
            let (b, ahead) = try_sh(&c, "grep pids /proc/self/cgroup");
            // Back to the root before the thread exits.
            std::fs::write(format!("{pids}/tasks"), nix::unistd::gettid().to_string()).unwrap();
            (a, b, ahead)
        })
        .join()
        .unwrap()
    });
    hatchery::reaper::settle();
    let _ = std::fs::remove_dir(&cg);
    let name = cg.trim_start_matches(pids);
    assert!(!before.contains(name), "{before}");
    assert!(
        after.contains(name),
        "the container escaped the thread's cgroup {name}: {after} (started ahead: {ahead})"
    );
}

/// A program that ran a container and then forks (a pre-forking server that ran a warm-up
/// container): parent and child both hold the parent's spare, under the same thread number. The
/// child must not take a shim that is not its own, nor the parent one the child took.
#[test]
#[allow(unsafe_code)]
fn a_forked_process_does_not_take_its_parents_spare() {
    if !ready() {
        return;
    }
    let _turn = one_at_a_time();
    let c = hatchery::pool::default_profile();
    try_sh(&c, "true");
    // SAFETY: the child runs containers and exits (test only).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // The child's containers are its own to wait for: settle() must not wait for its
            // parent's (it has no reaper thread of its parent's); a hang ends with SIGALRM.
            // SAFETY: a plain system call.
            unsafe { libc::alarm(20) };
            let (out, ahead) = try_sh(&c, "echo child");
            let (again, _) = try_sh(&c, "echo child");
            hatchery::reaper::settle();
            let code = if ahead || again != "child" {
                42
            } else if out == "child" {
                0
            } else {
                1
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            let parent = c
                .command("/bin/sh")
                .args(["-c", "echo parent"])
                .stdin(hatchery::Stdio::Null)
                .stdout(hatchery::Stdio::Piped)
                .stderr(hatchery::Stdio::Piped)
                .spawn()
                .and_then(|ch| ch.wait_with_output());
            let parent = parent.map(|o| text(&o));
            assert_eq!(
                st,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "42: the forked child took its parent's spare; parent then got {parent:?}"
            );
            assert_eq!(parent.unwrap(), "parent");
        }
    }
}

/// Found by a second review attack: the working directory moves from a writable view of a directory to a read-only
/// bind mount of the same directory (same device and inode, another mount). A relative bind
/// source of the next container must resolve in the read-only view, as it does for a shim
/// started at that spawn; a spare cloned in the writable view resolves it there.
#[test]
fn a_working_directory_moved_to_a_read_only_view_of_the_same_directory_is_not_missed() {
    if !ready() || !is_root() {
        return;
    }
    let _turn = one_at_a_time();
    // Control: with no shim started ahead, the write is refused (the bind is read-only).
    hatchery::reaper::start_shims_ahead(false);
    let (content, out, ahead) = cwd_view_attack("off");
    hatchery::reaper::start_shims_ahead(true);
    assert!(!ahead);
    assert_eq!(content, "original", "control: {out}");
    eprintln!("spares off: {out:?}");
    let (content, out, ahead) = cwd_view_attack("on");
    assert_eq!(
        content, "original",
        "a container wrote through the read-only view's bind: {out} (started ahead: {ahead})"
    );
}

fn cwd_view_attack(tag: &str) -> (String, String, bool) {
    let home = std::env::current_dir().unwrap();
    let base = format!("/tmp/hatchery-review2-cwd-{}-{tag}", std::process::id());
    for d in ["data/d", "rw", "ro"] {
        std::fs::create_dir_all(format!("{base}/{d}")).unwrap();
    }
    for p in [&base, &format!("{base}/data"), &format!("{base}/data/d")] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    std::fs::write(format!("{base}/data/d/f"), "original").unwrap();
    std::fs::set_permissions(
        format!("{base}/data/d/f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    run(
        "mount",
        &["--bind", &format!("{base}/data"), &format!("{base}/rw")],
    );
    run(
        "mount",
        &["--bind", &format!("{base}/data"), &format!("{base}/ro")],
    );
    run("mount", &["-o", "remount,bind,ro", &format!("{base}/ro")]);
    let mut c = hatchery::pool::default_profile();
    c.bindmount_rw("d", "/d");
    // Last request: in the writable view (its spare is cloned there).
    std::env::set_current_dir(format!("{base}/rw")).unwrap();
    let (_, _) = try_sh(&c, "true");
    // This request: only the read-only view.
    std::env::set_current_dir(format!("{base}/ro")).unwrap();
    let (out, ahead) = try_sh(&c, "echo pwned > /d/f && echo wrote; cat /d/f");
    std::env::set_current_dir(&home).unwrap();
    let content = std::fs::read_to_string(format!("{base}/data/d/f")).unwrap();
    hatchery::reaper::settle();
    let _ = std::process::Command::new("umount")
        .arg(format!("{base}/ro"))
        .status();
    let _ = std::process::Command::new("umount")
        .arg(format!("{base}/rw"))
        .status();
    let _ = std::fs::remove_dir_all(&base);
    (content, out, ahead)
}
