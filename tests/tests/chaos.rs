//! The "nothing lost" contract under chaos: mixed requests (every outcome this machine can
//! produce without privileges, plus cancellations) at concurrency 4 while another thread
//! SIGKILLs and SIGSTOPs zygotes and SIGKILLs request processes at random. Every request must get
//! exactly one result (no lost, no duplicate ids), the pool must come back to its minimum, and
//! afterwards the host's fds, threads and children, and the guest processes, are as before.
//!
//! CI runs `HATCHERY_CHAOS_REQUESTS` (default 2,000); the full run is
//! `HATCHERY_CHAOS_REQUESTS=10000 cargo test --release -p hatchery-tests --test chaos`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hatchery::pool::{Request, Sink};
use hatchery::{Outcome, Pool, PoolError};
use hatchery_tests::{child_pids, open_fds, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn requests() -> usize {
    std::env::var("HATCHERY_CHAOS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// A small xorshift generator: the test needs varied, not secure, choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Resident set of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Every process below `root`.
fn descendants(root: i32) -> Vec<i32> {
    let mut v = hatchery_tests::process_tree(root);
    v.remove(0);
    v
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: integer-only syscall.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig)
    };
}

/// One request of kind `k`, and the outcome it has when nothing disturbs it.
fn request(k: u64) -> (Request, Outcome) {
    let wall = Duration::from_secs(5);
    let (r, o) = match k {
        0 => (Request::exec("/bin/true"), Outcome::Exited(0)),
        1 => (
            Request::exec("/bin/sh").args(["-c", "exit 3"]),
            Outcome::Exited(3),
        ),
        2 => (
            Request::exec("/bin/sh").args(["-c", "kill -9 $$"]),
            Outcome::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false,
            },
        ),
        3 => (
            Request::exec("/bin/sleep")
                .arg("5")
                .wall_time(Duration::from_millis(30)),
            Outcome::TimedOut,
        ),
        4 => (
            Request::exec("/usr/bin/head")
                .args(["-c", "200000", "/dev/zero"])
                .stdout(Sink::Capture(1000)),
            Outcome::OutputExceeded,
        ),
        5 => (
            Request::exec("/nonexistent/program"),
            Outcome::SetupFailed(hatchery_protocol::SetupFailure {
                step: hatchery_protocol::SetupStep::FindProgram,
                errno: 0,
                detail: String::new(),
            }),
        ),
        _ => (
            Request::exec("/usr/bin/unshare").args(["-U", "/bin/true"]),
            Outcome::Violation {
                syscall: "unshare".into(),
                nr: 0,
                args: [0; 6],
            },
        ),
    };
    // Requests that set their own (shorter) limit keep it.
    if matches!(o, Outcome::TimedOut) {
        (r, o)
    } else {
        (r.wall_time(wall), o)
    }
}

/// Whether `got` is what kind `expected` gives, allowing for the chaos: a request process the
/// chaos thread killed ends with SIGKILL.
fn plausible(got: &Outcome, expected: &Outcome) -> bool {
    let killed = matches!(got, Outcome::Signaled { signal, .. } if *signal == libc::SIGKILL);
    killed
        || match (got, expected) {
            (Outcome::SetupFailed(_), Outcome::SetupFailed(_)) => true,
            (Outcome::Violation { syscall: a, .. }, Outcome::Violation { syscall: b, .. }) => {
                a == b
            }
            (a, b) => a == b,
        }
}

#[test]
fn every_request_gets_exactly_one_result_under_chaos() {
    if !ready() {
        return;
    }
    // Load the shim (one sealed memfd, kept for the life of the process) before measuring.
    hatchery::shim_binary::get().unwrap();
    let fds_before = open_fds();
    let rss_before = rss_kib();
    let threads_before = threads();
    let children_before = child_pids().len();
    let total = requests();
    let min = 2;
    let pool = Pool::builder()
        .min_zygotes(min)
        .max_zygotes(4)
        .acquire_timeout(Duration::from_secs(60))
        .health_check(Duration::from_millis(100), Duration::from_millis(500))
        .build()
        .expect("pool");
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let pool = pool.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut stopped: Vec<(i32, Instant)> = Vec::new();
            let mut acts = 0u64;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
                stopped.retain(|(pid, at)| {
                    let keep = at.elapsed() < Duration::from_millis(300);
                    if !keep {
                        signal(*pid, libc::SIGCONT);
                    }
                    keep
                });
                let zygotes = pool.zygote_pids();
                if zygotes.is_empty() {
                    continue;
                }
                let z = zygotes[rng.below(zygotes.len() as u64) as usize];
                acts += 1;
                match rng.below(10) {
                    0 => signal(z, libc::SIGKILL),
                    1 => {
                        signal(z, libc::SIGSTOP);
                        stopped.push((z, Instant::now()));
                    }
                    _ => {
                        let procs = descendants(z);
                        if !procs.is_empty() {
                            signal(procs[rng.below(procs.len() as u64) as usize], libc::SIGKILL);
                        }
                    }
                }
            }
            for (pid, _) in stopped {
                signal(pid, libc::SIGCONT);
            }
            acts
        })
    };
    let ids = Arc::new(Mutex::new(Vec::<u64>::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let pool = pool.clone();
        let ids = ids.clone();
        let next = next.clone();
        workers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (w + 1));
            let (mut results, mut cancelled, mut lost) = (0usize, 0usize, 0usize);
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let (req, expected) = request(rng.below(7));
                let cancel = rng.below(10) == 0;
                let ticket = match pool.submit(req) {
                    Ok(t) => t,
                    Err(PoolError::ZygoteLost { .. } | PoolError::ProtocolViolation { .. }) => {
                        lost += 1;
                        continue;
                    }
                    Err(e) => panic!("submit: {e:?}"),
                };
                ids.lock().unwrap().push(ticket.id());
                if cancel {
                    // Dropped at a random point of its life: the request is killed.
                    if rng.below(2) == 0 {
                        std::thread::sleep(Duration::from_micros(rng.below(3000)));
                    }
                    drop(ticket);
                    cancelled += 1;
                    continue;
                }
                match ticket.wait() {
                    Ok(r) => {
                        assert!(
                            plausible(&r.outcome, &expected),
                            "got {:?}, expected {expected:?}",
                            r.outcome
                        );
                        results += 1;
                    }
                    Err(PoolError::ZygoteLost { .. } | PoolError::ProtocolViolation { .. }) => {
                        lost += 1
                    }
                    Err(e) => panic!("wait: {e:?}"),
                }
            }
            (results, cancelled, lost)
        }));
    }
    let mut sums = (0, 0, 0);
    for w in workers {
        let (r, c, l) = w.join().expect("worker");
        sums = (sums.0 + r, sums.1 + c, sums.2 + l);
    }
    stop.store(true, Ordering::SeqCst);
    let acts = chaos.join().expect("chaos thread");
    eprintln!(
        "chaos: {total} requests: {} results, {} cancelled, {} zygote lost; {acts} chaos acts",
        sums.0, sums.1, sums.2
    );
    // Exactly one result per request: every request was counted once, ids are unique.
    assert_eq!(sums.0 + sums.1 + sums.2, total);
    let ids = ids.lock().unwrap();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate request ids");
    // Capacity comes back to the minimum (bounded wait on the pool's own state).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = pool.metrics();
        if m.zygotes.warm >= min {
            break;
        }
        assert!(Instant::now() < deadline, "capacity not restored: {m:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And it still serves. A zygote the chaos killed in its last moments may still be counted
    // warm until the pool notices; a request on it is `ZygoteLost` (never a wrong result), and
    // the pool replaces it: a few attempts must succeed.
    let mut served = None;
    for _ in 0..5 {
        match pool.run(Request::exec("/bin/true").wall_time(Duration::from_secs(5))) {
            Ok(r) => {
                served = Some(r);
                break;
            }
            Err(PoolError::ZygoteLost { .. }) => continue,
            Err(e) => panic!("after the chaos: {e:?}"),
        }
    }
    let r = served.expect("the pool serves again after the chaos");
    assert_eq!(r.outcome, Outcome::Exited(0));
    let zygotes = pool.zygote_pids();
    pool.shutdown(Duration::from_secs(2));
    drop(pool);
    for z in zygotes {
        assert!(
            !std::path::Path::new(&format!("/proc/{z}")).exists()
                || std::fs::read_to_string(format!("/proc/{z}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "zygote {z} outlived the pool"
        );
    }
    assert_eq!(
        child_pids().len(),
        children_before,
        "children or zombies left"
    );
    assert_eq!(open_fds(), fds_before, "host fds leaked");
    // The maintenance thread is gone with the pool; the chaos and worker threads were joined.
    assert!(threads() <= threads_before, "threads left");
    // The host's memory stays in a band (allocator caches aside): nothing grows per request.
    let rss = rss_kib();
    assert!(
        rss < rss_before + 64 * 1024,
        "RSS {rss_before} -> {rss} KiB"
    );
}
