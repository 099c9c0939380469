//! Cgroups that killed processes left (a host killed with SIGKILL cannot remove its cgroups) are
//! removed by the next process's first cgroup: only empty `hatchery-<pid>-…` directories older
//! than a minute whose process is gone. One test per binary: the sweep runs once per process.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hatchery::cgroup::Mechanism;
use hatchery::Container;
use hatchery_tests::{require, user_namespaces_work};

/// Where this process's cgroups go, per hierarchy.
fn parents() -> Vec<PathBuf> {
    match hatchery::cgroup::mechanism() {
        Mechanism::CgroupV2(p) => vec![p.clone()],
        Mechanism::CgroupV1 => ["memory", "pids"]
            .iter()
            .filter_map(|c| {
                let own = std::fs::read_to_string("/proc/self/cgroup")
                    .ok()?
                    .lines()
                    .find_map(|l| {
                        let mut f = l.splitn(3, ':');
                        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
                        ctl.split(',').any(|x| x == *c).then(|| path.to_string())
                    })?;
                Some(
                    PathBuf::from("/sys/fs/cgroup")
                        .join(c)
                        .join(own.trim_start_matches('/')),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_first_cgroup_of_a_process_removes_the_empty_ones_gone_processes_left() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    let parents = parents();
    if parents.is_empty() {
        eprintln!("limits are rlimits here: no cgroups");
        return;
    }
    // A pid no process holds now.
    let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    let mut stale = Vec::new();
    let mut fresh = Vec::new();
    for p in &parents {
        let old = p.join(format!("hatchery-{gone}-5afe5afe-0"));
        let new = p.join(format!("hatchery-{gone}-5afe5afe-1"));
        std::fs::create_dir(&old).unwrap();
        std::fs::create_dir(&new).unwrap();
        std::fs::File::open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        stale.push(old);
        fresh.push(new);
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
