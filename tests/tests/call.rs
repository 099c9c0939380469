//! End-to-end tests of call mode: exports, typed calls, failures, panics, timeouts, Fresh and
//! Reuse isolation.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::pool::{CallError, CallRequest};
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
        .call_helper(helper("call-helper"))
        .isolation(isolation)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .expect("call-mode pool")
}

#[derive(serde::Serialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Sum {
    sum: i64,
}

#[test]
fn exports_and_typed_calls() {
    if !ready() {
        return;
    }
    let p = pool(Isolation::Fresh);
    assert_eq!(p.call("echo", b"hello").unwrap().output, b"hello");
    assert_eq!(p.call("upper", b"abc").unwrap().output, b"ABC");
    let s: Sum = p.call_typed("add", &Add { a: 40, b: 2 }).unwrap();
    assert_eq!(s, Sum { sum: 42 });
    // Preloading ran once, in the warm helper, before the calls.
    let a = p.call("preloaded", b"").unwrap().output;
    let b = p.call("preloaded", b"").unwrap().output;
    assert_eq!(a, b);
    // Large inputs travel as stdin.
    let r = p
        .call_request(CallRequest::new("stdin", Vec::new()).stdin_bytes(vec![7u8; 1 << 20]))
        .unwrap();
    assert_eq!(r.output, b"1048576");
}

#[test]
fn typed_errors_for_every_failure() {
    if !ready() {
        return;
    }
    // With Reuse, every case after the first goes straight to the worker.
    for iso in [Isolation::Fresh, Isolation::Reuse { max_requests: 100 }] {
        let p = pool(iso);
        assert_eq!(p.call("echo", b"first").unwrap().output, b"first");
        assert!(matches!(p.call("nope", b""), Err(CallError::UnknownExport(n)) if n == "nope"));
        assert!(
            matches!(p.call("fail", b""), Err(CallError::Failed(m)) if m == "refused on purpose")
        );
        assert!(
            matches!(p.call("panic", b""), Err(CallError::Panicked(m)) if m.contains("boom in export"))
        );
        let bad: Result<Sum, _> = p.call_typed("add", &"not a struct");
        assert!(matches!(bad, Err(CallError::Decode(_))), "{bad:?}");
        let big = p.call_request(
            CallRequest::new("big", b"5000".to_vec()).stdout(hatchery::pool::Sink::Capture(1000)),
        );
        assert!(matches!(big, Err(CallError::OutputTooLarge)), "{big:?}");
        assert!(matches!(
            p.call("crash", b""),
            Err(CallError::Ended(Outcome::Signaled { .. }))
        ));
        let huge = p.call("echo", &vec![0u8; hatchery::pool::MAX_INLINE_ARG + 1]);
        assert!(matches!(
            huge,
            Err(CallError::Pool(hatchery::PoolError::InvalidRequest { .. }))
        ));
        // The pool is still healthy.
        assert_eq!(p.call("echo", b"ok").unwrap().output, b"ok", "{iso:?}");
    }
}

#[test]
fn timeouts_inside_an_export_kill_the_call_and_the_pool_heals() {
    if !ready() {
        return;
    }
    // With Reuse, the first call goes through the helper's PID 1 and sets up the direct
    // channel; the later ones go straight to the worker: both paths time out.
    for iso in [Isolation::Fresh, Isolation::Reuse { max_requests: 100 }] {
        let p = pool(iso);
        for _ in 0..3 {
            let t = Instant::now();
            let r = p.call_request(
                CallRequest::new("sleep", b"10000".to_vec()).wall_time(Duration::from_millis(200)),
            );
            assert!(
                matches!(r, Err(CallError::Ended(Outcome::TimedOut))),
                "{iso:?}: {r:?}"
            );
            assert!(t.elapsed() < Duration::from_secs(5));
            assert_eq!(
                p.call("echo", b"after").unwrap().output,
                b"after",
                "{iso:?}"
            );
        }
    }
}

#[test]
fn fresh_calls_share_no_state() {
    if !ready() {
        return;
    }
    let p = pool(Isolation::Fresh);
    for _ in 0..3 {
        assert_eq!(
            p.call("count", b"").unwrap().output,
            b"1",
            "memory leaked between calls"
        );
        assert_eq!(
            p.call("tmp", b"").unwrap().output,
            b"clean",
            "files leaked between calls"
        );
    }
}

#[test]
fn reuse_keeps_state_within_one_worker_and_recycles() {
    if !ready() {
        return;
    }
    let p = pool(Isolation::Reuse { max_requests: 3 });
    let counts: Vec<String> = (0..7)
        .map(|_| String::from_utf8(p.call("count", b"").unwrap().output).unwrap())
        .collect();
    assert_eq!(
        counts,
        ["1", "2", "3", "1", "2", "3", "1"],
        "recycled after 3 calls"
    );
    // A fault recycles the worker: state starts over.
    let p = pool(Isolation::Reuse { max_requests: 100 });
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
    assert_eq!(p.call("count", b"").unwrap().output, b"2");
    assert!(matches!(p.call("fail", b""), Err(CallError::Failed(_))));
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
    assert!(matches!(p.call("panic", b""), Err(CallError::Panicked(_))));
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
    assert!(matches!(p.call("crash", b""), Err(CallError::Ended(_))));
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
    // On demand: recycle() replaces the zygotes and their workers.
    assert_eq!(p.call("count", b"").unwrap().output, b"2");
    p.recycle();
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
}

#[test]
fn async_calls() {
    if !ready() {
        return;
    }
    let rt = hatchery_tests::runtime();
    let p = pool(Isolation::Fresh);
    rt.block_on(async {
        assert_eq!(
            p.call_async("echo", b"async").await.unwrap().output,
            b"async"
        );
        let s: Sum = p
            .call_typed_async("add", &Add { a: 1, b: 2 })
            .await
            .unwrap();
        assert_eq!(s.sum, 3);
    });
}

#[test]
fn reuse_needs_a_helper() {
    let r = Pool::builder()
        .isolation(Isolation::Reuse { max_requests: 5 })
        .build();
    assert!(matches!(r, Err(hatchery::PoolError::InvalidConfig { .. })));
}

#[test]
fn the_gunzip_example_helper_does_real_work() {
    if !ready() {
        return;
    }
    let helper = hatchery_tests::bin_dir().join("examples/gunzip_helper");
    assert!(helper.is_file(), "build examples first ({helper:?})");
    let original: Vec<u8> = b"hatchery call mode, decompressing with flate2\n".repeat(500);
    let mut gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut gz.stdin.take().unwrap(), &original).unwrap();
    let compressed = gz.wait_with_output().unwrap().stdout;
    for iso in [Isolation::Fresh, Isolation::Reuse { max_requests: 10 }] {
        let p = Pool::builder()
            .call_helper(&helper)
            .isolation(iso)
            .min_zygotes(1)
            .max_zygotes(1)
            .build()
            .unwrap();
        assert_eq!(
            p.call("gunzip", &compressed).unwrap().output,
            original,
            "{iso:?}"
        );
        let via_stdin = p
            .call_request(
                CallRequest::new("gunzip_stdin", Vec::new()).stdin_bytes(compressed.clone()),
            )
            .unwrap();
        assert_eq!(via_stdin.output, original);
        assert!(
            matches!(p.call("gunzip", b"garbage"), Err(CallError::Failed(m)) if m.contains("gzip"))
        );
    }
}

#[test]
fn cancelling_a_reused_call_kills_its_worker_and_the_next_call_gets_a_new_one() {
    if !ready() {
        return;
    }
    let p = pool(Isolation::Reuse { max_requests: 100 });
    assert_eq!(p.call("count", b"").unwrap().output, b"1");
    assert_eq!(p.call("count", b"").unwrap().output, b"2");
    for i in 0..6 {
        let t = p
            .submit(CallRequest::new("sleep", b"10000".to_vec()))
            .unwrap();
        // Dropped while it runs, or before the worker even announced it to the helper's PID 1.
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(t);
        let started = Instant::now();
        // A new worker: state starts over, and the slept call is not waited for.
        assert_eq!(p.call("count", b"").unwrap().output, b"1");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
