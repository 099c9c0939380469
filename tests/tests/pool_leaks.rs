//! After 1,000 mixed requests (successes, failures, timeouts, cancellations, output overflows),
//! the host's open fds, children and zombies are back to where they started. One test per
//! binary: fd and child counts are process-wide.

use std::time::Duration;

use hatchery::pool::Sink;
use hatchery::{Pool, Request};
use hatchery_tests::{child_pids, open_fds, require, user_namespaces_work};

#[test]
fn thousand_mixed_requests_leak_nothing() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    // Load the shim (one sealed memfd, kept for the life of the process) before measuring.
    hatchery::shim_binary::get().unwrap();
    let fds_before = open_fds();
    let children_before = child_pids();
    {
        let p = Pool::builder()
            .min_zygotes(2)
            .max_zygotes(2)
            .recycle_after(Some(150))
            .build()
            .unwrap();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        let req = match i % 10 {
                            0 => Request::exec("/bin/false"),
                            1 => Request::exec("/bin/sh").args(["-c", "kill -KILL $$"]),
                            2 => Request::exec("/bin/sleep")
                                .arg("5")
                                .wall_time(Duration::from_millis(5)),
                            3 => Request::exec("no-such-program"),
                            4 => Request::exec("/bin/sh")
                                .args(["-c", "head -c 10000 /dev/zero"])
                                .stdout(Sink::Capture(100)),
                            5 => {
                                // Cancelled right after dispatch.
                                drop(p.submit(Request::exec("/bin/sleep").arg("5")).unwrap());
                                continue;
                            }
                            _ => Request::exec("/bin/cat")
                                .stdin_bytes(format!("{t}:{i}").into_bytes()),
                        };
                        let r = p.run(req).expect("request");
                        if i % 10 >= 6 {
                            assert_eq!(
                                String::from_utf8_lossy(&r.stdout),
                                format!("{t}:{i}"),
                                "request {t}:{i} ended with {r:?}"
                            );
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let m = p.metrics();
        assert!(m.requests() >= 900, "{m:?}");
        // Recycling happened (the last retirements may still be under way in the background).
        assert!(
            m.retired + m.zygotes.draining as u64 >= 4,
            "recycling: {m:?}"
        );
    }
    if open_fds() != fds_before {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            eprintln!("{:?} -> {:?}", e.file_name(), std::fs::read_link(e.path()));
        }
    }
    assert_eq!(open_fds(), fds_before, "fds leaked");
    assert_eq!(child_pids(), children_before, "children or zombies left");
}
