//! No cgroup directory outlives the pool (or the one-shot container) it was made for: after a
//! round of pools with cgroup limits, with requests that leave processes behind and use memory,
//! nothing named after this process is left in any hierarchy. One test per binary: it looks for
//! every cgroup this process created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hatchery::cgroup::Mechanism;
use hatchery::{Pool, Request};
use hatchery_tests::{require, user_namespaces_work};

/// Directories named `hatchery-<our pid>-*` beneath `dir` (cgroup trees are shallow here).
fn ours(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let prefix = format!("hatchery-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(path);
        } else if depth > 0 {
            ours(&path, depth - 1, out);
        }
    }
}

#[test]
fn no_cgroup_is_left_after_pools_shut_down() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    if *hatchery::cgroup::mechanism() == Mechanism::Rlimits {
        // No cgroup is ever created (an unprivileged user without delegation): nothing to leak.
        eprintln!("limits are rlimits here: no cgroups to check");
        return;
    }
    for round in 0..4 {
        let p = Pool::builder()
            .min_zygotes(2)
            .max_zygotes(2)
            .build()
            .unwrap();
        for i in 0..6 {
            let req = match i % 3 {
                // Leaves a process behind (killed by the zygote after the request).
                0 => Request::exec("/bin/sh").args(["-c", "sleep 30 & echo started"]),
                1 => Request::exec("/bin/sh").args(["-c", "head -c 64M /dev/zero | tail -c 1"]),
                _ => Request::exec("/bin/true"),
            };
            let r = p.run(req.wall_time(Duration::from_secs(10))).unwrap();
            assert!(r.success(), "round {round}: {r:?}");
        }
        // Requests still running when the pool goes: their processes are in the cgroups.
        let in_flight = p.submit(Request::exec("/bin/sleep").arg("30")).unwrap();
        let in_flight2 = p
            .submit(Request::exec("/bin/sh").args(["-c", "sleep 30 & sleep 30"]))
            .unwrap();
        if round % 2 == 0 {
            p.shutdown(Duration::from_millis(10));
        }
        drop(p);
        drop((in_flight, in_flight2));
        // A one-shot container with a cgroup limit too.
        let mut c = hatchery::pool::default_profile();
        c.cgroup_pids_limit(64);
        let s = c.command("/bin/true").status().unwrap();
        assert!(s.success(), "{s:?}");
    }
    // One-shot containers are torn down in the background after their status.
    hatchery::reaper::settle();
    let mut left = Vec::new();
    ours(Path::new("/sys/fs/cgroup"), 4, &mut left);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}
