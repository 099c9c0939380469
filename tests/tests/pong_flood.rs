//! A zygote that floods the host with Pongs nobody asked for is replaced, and the host spends
//! little CPU on it. One test in its own binary: the hostile shim is chosen through
//! `HATCHERY_SHIM`, which the host reads once per process.

use std::time::{Duration, Instant};

use hatchery::Pool;
use hatchery_tests::{helper, require, user_namespaces_work};

fn cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid out-buffer.
    #[allow(unsafe_code)]
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the live struct.
    #[allow(unsafe_code)]
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut ru)
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
}

#[test]
fn an_unsolicited_pong_flood_gets_the_zygote_replaced_with_bounded_host_cpu() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    std::env::set_var("HATCHERY_SHIM", helper("evil-shim"));
    let pool = Pool::builder()
        .min_zygotes(1)
        .max_zygotes(1)
        .health_check(Duration::from_millis(100), Duration::from_millis(500))
        .build()
        .expect("pool (the evil shim completes the handshake)");
    let first = pool.zygote_pids();
    let cpu0 = cpu();
    let t0 = Instant::now();
    // Bounded wait for the pool's own reaction (it replaces the flooding zygote).
    while pool.metrics().restarts == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        pool.metrics().restarts >= 1,
        "the flooding zygote was never replaced"
    );
    assert!(
        first.iter().all(|p| !pool.zygote_pids().contains(p)),
        "the first zygote is still in the pool"
    );
    // Keep the pool under the flood for 2 s (each replacement floods again at once).
    while t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let used = cpu() - cpu0;
    let wall = t0.elapsed();
    let restarts = pool.metrics().restarts;
    eprintln!("host CPU under the flood: {used:?} in {wall:?}, {restarts} replacements");
    // Before the fix: 2.3 s of CPU in 4 s. Generous bound: replacing zygotes costs CPU too.
    assert!(used < wall.mul_f64(0.6), "host CPU {used:?} in {wall:?}");
    drop(pool);
}
