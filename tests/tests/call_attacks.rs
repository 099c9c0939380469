//! Call mode under attack: a helper whose exports were compromised by their input
//! (`tests/src/bin/call-attack.rs`, one attack per export) must not reach any other call, the
//! trusted supervisor (PID 1) or the host, in Fresh and in Reuse isolation.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::pool::{CallError, CallRequest, Sink};
use hatchery::{Isolation, Outcome, Pool};
use hatchery_tests::{helper, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn pool(isolation: Isolation) -> Pool {
    Pool::builder()
        .call_helper(helper("call-attack"))
        .isolation(isolation)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .expect("call-mode pool")
}

const REUSE: Isolation = Isolation::Reuse { max_requests: 100 };

fn text(p: &Pool, export: &str, arg: &[u8]) -> String {
    let out = p
        .call_request(CallRequest::new(export, arg.to_vec()).wall_time(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{export}: {e:?}"));
    String::from_utf8_lossy(&out.output).into_owned()
}

/// Ends the current reuse worker (a failed call recycles it). With a deadline: a process an
/// attack planted in the worker may have taken this call off the worker's channel (calls of one
/// worker share it by design), and then only the deadline ends it.
fn recycle_worker(p: &Pool) {
    let r = p.call_request(CallRequest::new("fail", Vec::new()).wall_time(Duration::from_secs(2)));
    assert!(
        matches!(
            r,
            Err(CallError::Failed(_) | CallError::Ended(Outcome::TimedOut))
        ),
        "{r:?}"
    );
}

#[test]
fn a_planted_process_never_sees_a_later_call() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        assert!(text(&p, "plant", b"").starts_with("planted"));
        if iso != Isolation::Fresh {
            recycle_worker(&p);
        }
        for i in 0..6 {
            let arg = format!("victim {i}");
            assert_eq!(text(&p, "echo", arg.as_bytes()), arg, "{iso:?}");
        }
    }
}

#[test]
fn no_call_data_reaches_the_next_calls_memory() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        // 80 KB, with a marker no other call contains.
        let marker = format!("MARKER-{}-{:?}", std::process::id(), Instant::now());
        let mut arg = vec![b'.'; 80 << 10];
        arg[40 << 10..(40 << 10) + marker.len()].copy_from_slice(marker.as_bytes());
        assert_eq!(text(&p, "echo", &arg).len(), arg.len());
        if iso != Isolation::Fresh {
            recycle_worker(&p);
        }
        let reversed: Vec<u8> = marker.bytes().rev().collect();
        assert_eq!(text(&p, "scan", &reversed), "0", "{iso:?}: marker found");
    }
}

#[test]
fn tmp_shm_sysv_and_mqueue_residue_is_gone_for_the_next_call() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        assert_eq!(text(&p, "residue", b""), "", "{iso:?}");
        if iso != Isolation::Fresh {
            recycle_worker(&p);
        }
        assert_eq!(text(&p, "residue", b""), "", "{iso:?}: residue found");
    }
}

#[test]
fn an_output_flood_is_output_too_large_and_bounded() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let r =
            p.call_request(CallRequest::new("flood", Vec::new()).stdout(Sink::Capture(1 << 20)));
        assert!(
            matches!(r, Err(CallError::OutputTooLarge)),
            "{iso:?}: {r:?}"
        );
        assert_eq!(text(&p, "echo", b"after"), "after");
    }
}

#[test]
fn pid_1_is_out_of_reach() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let r = text(&p, "pid1", b"");
        assert!(!r.contains("mem=0"), "{iso:?}: /proc/1/mem opened: {r}");
        assert!(!r.contains("prlimit=0"), "{iso:?}: prlimit on PID 1: {r}");
        let f = p.features().expect("features");
        assert!(f.seccomp, "the supervisor reports the seccomp filter");
    }
}

#[test]
fn a_calls_fd_table_is_exactly_its_own() {
    if !ready() {
        return;
    }
    let p = pool(Isolation::Fresh);
    let a = text(&p, "fds", b"");
    let b = text(&p, "fds", b"");
    assert_eq!(a, b, "fd tables differ between calls");
    // stdin, stdout, stderr and the call's channel: nothing inherited.
    assert_eq!(a.split_whitespace().count(), 4, "{a}");
}

#[test]
fn named_fd_targets_never_clobber_the_sandboxs_own_fds() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        assert_eq!(text(&p, "echo", b"warm"), "warm");
        let mut req = CallRequest::new("named", Vec::new()).wall_time(Duration::from_secs(5));
        for t in 3..=20 {
            let f = std::fs::File::open("/dev/null").unwrap();
            req = req.fd(&format!("f{t}"), f, t);
        }
        let out = p.call_request(req).expect("named fds 3..=20");
        assert_eq!(out.output, b"18", "{iso:?}");
        assert_eq!(text(&p, "echo", b"next"), "next", "{iso:?}");
    }
}

#[test]
fn a_notifying_policy_reports_the_violation_by_name_in_call_mode() {
    use hatchery::seccomp::{Action, Filter};
    if !ready() {
        return;
    }
    let mut profile = hatchery::pool::default_profile();
    let mut f = Filter::new(Action::Allow);
    f.add_rule(Action::Notify, "uname");
    profile.seccomp_filter(f);
    for iso in [Isolation::Fresh, REUSE] {
        let p = Pool::builder()
            .profile(profile.clone())
            .call_helper(helper("call-attack"))
            .isolation(iso)
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .expect("call-mode pool");
        assert_eq!(text(&p, "echo", b"before"), "before");
        let r = p.call("uname", b"");
        assert!(
            matches!(&r, Err(CallError::Ended(hatchery::Outcome::Violation { syscall, .. })) if syscall == "uname"),
            "{iso:?}: {r:?}"
        );
        assert!(p.features().expect("features").seccomp_notify);
        assert_eq!(text(&p, "echo", b"after"), "after", "{iso:?}");
    }
}

#[test]
fn killing_the_host_takes_every_container_process_with_it() {
    if !ready() {
        return;
    }
    for iso in ["fresh", "reuse"] {
        let child = std::process::Command::new(helper("call-host"))
            .arg(helper("call-attack"))
            .arg(iso)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("call-host");
        // Killed whatever happens below, so a failure never leaves it holding the test's pipes.
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut host = KillOnDrop(child);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(host.0.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let zygote: i32 = line.trim().parse().expect("zygote pid");
        let procs = hatchery_tests::process_tree(zygote);
        // Fresh: the supervisor and the helper zygote (the planted process died with its call;
        // the next call's process may not be forked yet). Reuse: also the worker and the process
        // it planted, alive until the worker is retired.
        let least = if iso == "fresh" { 2 } else { 4 };
        assert!(procs.len() >= least, "{iso}: {procs:?}");
        let pidfds: Vec<OwnedFd> = procs
            .iter()
            .filter_map(|&p| {
                // SAFETY: pidfd_open takes a pid and flags.
                #[allow(unsafe_code)]
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
                // SAFETY: a new pidfd owned by nobody else.
                #[allow(unsafe_code)]
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            })
            .collect();
        drop(host);
        let deadline = Instant::now() + Duration::from_secs(1);
        for fd in &pidfds {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            #[allow(unsafe_code)]
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
            assert_eq!(
                n, 1,
                "{iso}: a container process outlived the host by 1 s: {procs:?}"
            );
        }
    }
}

#[test]
fn a_call_cannot_change_the_scheduling_of_the_zygote_or_pid_1() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let r = text(&p, "probe", b"");
        // Every change to a sysctl or to the scheduling of PID 1 or the helper zygote fails.
        let changed: Vec<&str> = r
            .split_whitespace()
            .filter(|w| !w.starts_with("uid=") && w.ends_with("=0"))
            .collect();
        assert!(changed.is_empty(), "{iso:?}: {r}");
        assert!(!r.contains("writable="), "{iso:?}: {r}");
    }
}

#[test]
fn fds_left_in_flight_hold_nothing_for_the_next_call() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        assert_eq!(text(&p, "inflight", b""), "", "{iso:?}");
        if iso != Isolation::Fresh {
            recycle_worker(&p);
        }
        assert_eq!(text(&p, "inflight", b""), "", "{iso:?}: held over");
    }
}

fn text_as(p: &Pool, export: &str, arg: &[u8], tenant: &str) -> String {
    let out = p
        .call_request(
            CallRequest::new(export, arg.to_vec())
                .tenant(tenant)
                .wall_time(Duration::from_secs(5)),
        )
        .unwrap_or_else(|e| panic!("{export}: {e:?}"));
    String::from_utf8_lossy(&out.output).into_owned()
}

/// Fresh forks the next call's process while a call runs. The running call tries every route
/// to it (and to the zygote and PID 1) that is not covered by the fork boundary's own tests:
/// signals by pid, tgkill, pidfd and SIGIO (`F_SETOWN` + `F_SETSIG` SIGSTOP), `pidfd_getfd` of
/// its channel, `/proc/<pid>/{mem,environ,fd,fdinfo}`, and the `/proc` files that change its OOM
/// score, autogroup niceness, timer slack, core filter or name (`process_vm_readv` is not
/// tried: the default policy kills it). Every one fails, the next calls answer (none was
/// stopped), and what they inherit is unchanged.
#[test]
fn the_next_calls_process_is_out_of_reach_of_the_running_call() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let before = text(&p, "selfstate", b"");
        eprintln!("{iso:?}: {before}");
        let r = text(&p, "neighbours", b"");
        eprintln!("{iso:?}: {r}");
        let worked: Vec<&str> = r
            .split_whitespace()
            .filter(|w| !w.starts_with("siblings=") && w.ends_with("=0"))
            .collect();
        assert!(worked.is_empty(), "{iso:?}: {worked:?}");
        if iso != Isolation::Fresh {
            recycle_worker(&p);
        }
        for i in 0..3 {
            let arg = format!("after {i}");
            assert_eq!(text(&p, "echo", arg.as_bytes()), arg, "{iso:?}");
            assert_eq!(text(&p, "selfstate", b""), before, "{iso:?}: call {i}");
        }
    }
}

/// A call's descendants let go of every socket (so the cleanup's wait for unix sockets does
/// not wait for them) and keep creating files in `/tmp` and `/dev/shm` while the call ends
/// (half of them at `SCHED_IDLE`, so they are often preempted inside a system call and finish it
/// late). By the time the next call (Fresh), or the next tenant's worker (Reuse), starts they
/// are all dead: none of their files is there, and none appears while it watches.
#[test]
fn a_dying_calls_descendants_never_reach_the_next_call() {
    if !ready() {
        return;
    }
    for iso in [REUSE, Isolation::Fresh] {
        let p = pool(iso);
        let mut left = Vec::new();
        for i in 0..25 {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            let started = text_as(&p, "late", b"16", &a);
            assert!(started.starts_with("started"), "{started}");
            let s = text_as(&p, "scratch", b"twice", &b);
            if s != "before[] new[]" {
                left.push(format!("round {i}: {started}: {s}"));
            }
        }
        assert!(
            left.is_empty(),
            "{iso:?}: {} of 25 rounds: {left:#?}",
            left.len()
        );
    }
}

/// A helper that preloads shared writable memory (`MAP_SHARED`) would share it with every call
/// process forked from it: one call's data would be there for the next. Such a helper is
/// refused at start (a typed setup failure naming the mapping), as one with threads is.
#[test]
fn shared_memory_preloaded_by_the_helper_never_carries_a_call_to_the_next() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let refused = |e: &dyn std::fmt::Debug| {
            let msg = format!("{e:?}");
            assert!(msg.contains("shared writable memory"), "{iso:?}: {msg}");
        };
        let p = match Pool::builder()
            .call_helper(helper("call-shared"))
            .isolation(iso)
            .min_zygotes(1)
            .max_zygotes(1)
            .acquire_timeout(Duration::from_secs(5))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                refused(&e);
                continue;
            }
        };
        let put = p.call_request(
            CallRequest::new("put", b"secret of the first caller".to_vec()).tenant("first"),
        );
        match put {
            Err(CallError::Pool(e)) => {
                refused(&e);
                continue;
            }
            Ok(_) => {}
            Err(e) => panic!("{iso:?}: {e:?}"),
        }
        let got = p
            .call_request(CallRequest::new("get", Vec::new()).tenant("second"))
            .expect("get");
        assert!(
            !String::from_utf8_lossy(&got.output).contains("secret"),
            "{iso:?}: the second call read {:?}",
            String::from_utf8_lossy(&got.output)
        );
    }
}

/// With the file-system part of landlock loosened (a profile may: the mounts still confine
/// it), POSIX message queues are reachable, and one left by a call must not be there for the
/// next (they live in the container's IPC namespace, which every call shares).
#[test]
fn a_posix_message_queue_never_reaches_the_next_call_without_landlocks_fs_rules() {
    use hatchery::landlock::{CompatMode, Resource, Ruleset};
    if !ready() {
        return;
    }
    let mut profile = hatchery::pool::default_profile();
    let mut rules = Ruleset::new();
    rules.restrict(Resource::Scope, CompatMode::BestEffort);
    profile.landlock_ruleset(rules);
    for iso in [Isolation::Fresh, REUSE] {
        let p = Pool::builder()
            .profile(profile.clone())
            .call_helper(helper("call-attack"))
            .isolation(iso)
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .expect("call-mode pool");
        let state = text(&p, "selfstate", b"");
        assert!(
            state.contains("mq-open=0"),
            "{iso:?}: mq_open fails here: {state}"
        );
        assert_eq!(text_as(&p, "residue", b"", "first"), "", "{iso:?}");
        assert_eq!(
            text_as(&p, "residue", b"", "second"),
            "",
            "{iso:?}: residue found"
        );
    }
}

/// A directory chain two thousand levels deep (made level by level, so no path is long) in
/// `/tmp` and `/dev/shm` is removed like anything else: a recursive removal that needs an fd per
/// level would run out of them and leave the chain for the next call (Fresh) or the next
/// tenant's worker (Reuse).
#[test]
fn a_deep_directory_chain_is_wiped_too() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        // Deeper than the supervisor's RLIMIT_NOFILE (1024 by default).
        let made = text_as(&p, "deep", b"2000", "first");
        assert!(made.starts_with("2000,"), "{iso:?}: made {made}");
        assert_eq!(text_as(&p, "scratch", b"", "second"), "", "{iso:?}");
    }
}

/// An export that ignores `EFBIG` and answers Ok after its output reached the cap: with stdout
/// going to a file (`Sink::Fd`), the file is truncated at the cap, and that is never a success,
/// in Reuse as in Fresh.
#[test]
fn a_flood_into_a_file_sink_is_never_a_truncated_success() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let path =
            std::env::temp_dir().join(format!("hatchery-flood-{}-{iso:?}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let r = p.call_request(
            CallRequest::new("flood", Vec::new())
                .stdout(Sink::Fd(file.into()))
                .stderr(Sink::Capture(1 << 20))
                .wall_time(Duration::from_secs(10)),
        );
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(r, Err(CallError::OutputTooLarge)),
            "{iso:?}: {r:?} with a file of {len} bytes"
        );
    }
}

/// A call process that answers for itself with an error message far beyond `MAX_CALL_MESSAGE`
/// (and beyond what the host accepts on a reply socket): in Fresh the trusted supervisor relays
/// answers, so the call's error arrives cut to `MAX_CALL_MESSAGE` and the container is not
/// blamed (no protocol violation, no replacement). In Reuse the worker answers the host itself:
/// its container may be replaced, and the next call is answered either way.
#[test]
fn an_oversized_answer_is_cut_not_a_protocol_violation_of_the_supervisor() {
    if !ready() {
        return;
    }
    for iso in [Isolation::Fresh, REUSE] {
        let p = pool(iso);
        let before = p.metrics().restarts;
        let r = p.call_request(
            CallRequest::new("bigfail", b"100000".to_vec()).wall_time(Duration::from_secs(5)),
        );
        if iso == Isolation::Fresh {
            match &r {
                Err(CallError::Failed(m)) => {
                    assert!(
                        m.len() <= hatchery_protocol::MAX_CALL_MESSAGE,
                        "{}",
                        m.len()
                    )
                }
                other => panic!("{iso:?}: {other:?}"),
            }
            assert_eq!(
                p.metrics().restarts,
                before,
                "{iso:?}: the zygote was replaced"
            );
        }
        assert_eq!(text(&p, "echo", b"next"), "next", "{iso:?}");
    }
}
