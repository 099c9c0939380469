//! Cgroups that killed processes left (a host killed with SIGKILL cannot remove its cgroups) are
//! removed by the next process's first cgroup: only empty `hatchery-<pid>-…` directories older
//! than a minute whose process is gone. One test per binary: the sweep runs once per process.

use std::time::{Duration, SystemTime};

use hatchery::Container;
use hatchery_tests::{cgroup_parents, require, user_namespaces_work};

#[test]
fn the_first_cgroup_of_a_process_removes_the_empty_ones_gone_processes_left() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    let parents = cgroup_parents();
    if parents.is_empty() {
        eprintln!("limits are rlimits for this unprivileged user: no cgroups to sweep");
        return;
    }
    // A pid no process holds now.
    let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    let a_minute_ago = SystemTime::now() - Duration::from_secs(61);
    let mut stale = Vec::new();
    let mut fresh = Vec::new();
    for p in &parents {
        let old = p.join(format!("hatchery-{gone}-5afe5afe-0"));
        // Made a moment ago: a process (in another pid namespace, say) is setting it up.
        let new = p.join(format!("hatchery-{gone}-5afe5afe-1"));
        // Old, but pid 1 is alive and started before it was made: its owner's.
        let alive = p.join("hatchery-1-5afe5afe-2");
        for (dir, made) in [
            (&old, Some(two_hours_ago)),
            (&new, None),
            (&alive, Some(a_minute_ago)),
        ] {
            std::fs::create_dir(dir).unwrap();
            if let Some(t) = made {
                std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
            }
        }
        stale.push(old);
        fresh.push(new);
        fresh.push(alive);
    }
    let mut c = Container::new();
    c.rootfs("/")
        .unwrap()
        .cgroup_memory(256 << 20)
        .cgroup_pids_limit(64);
    let status = c.command("/bin/true").status();
    let left: Vec<_> = stale.iter().filter(|d| d.exists()).cloned().collect();
    let kept: Vec<_> = fresh.iter().filter(|d| d.exists()).cloned().collect();
    for d in stale.iter().chain(&fresh) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(status.expect("one-shot").success());
    assert!(left.is_empty(), "stale cgroups left: {left:?}");
    assert_eq!(
        kept.len(),
        fresh.len(),
        "a cgroup made a moment ago was removed"
    );
}
