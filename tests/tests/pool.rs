//! End-to-end tests of the zygote pool (exec mode).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::pool::{Input, Sink};
use hatchery::{Outcome, Pool, PoolError, Request};
use hatchery_tests::{bin_dir, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn profile() -> hatchery::Container {
    let mut c = hatchery::pool::default_profile();
    c.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    c
}

fn pool() -> Pool {
    Pool::builder()
        .profile(profile())
        .min_zygotes(1)
        .max_zygotes(2)
        .build()
        .expect("pool")
}

fn sh(script: &str) -> Request {
    Request::exec("/bin/sh").args(["-c", script])
}

#[test]
fn runs_commands_with_captured_output() {
    if !ready() {
        return;
    }
    let p = pool();
    let r = p.run(sh("echo out; echo err >&2; exit 3")).unwrap();
    assert_eq!(r.outcome, Outcome::Exited(3));
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let r = p
        .run(Request::exec("cat").stdin_bytes(b"sealed input".to_vec()))
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout, b"sealed input");
    eprintln!("timings {:?}", r.timings);
}
