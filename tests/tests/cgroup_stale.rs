//! A cgroup directory that an earlier process with this pid left behind (a host killed with
//! SIGKILL cannot remove its cgroups, and a restarted server often gets its old pid back) does
//! not stop a pool from starting. One test per binary: it plants directories named after this
//! process.

use hatchery::Pool;
use hatchery_tests::{cgroup_parents, require, user_namespaces_work};

#[test]
fn stale_cgroups_of_an_earlier_process_with_this_pid_do_not_stop_a_pool() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    let parents = cgroup_parents();
    if parents.is_empty() {
        eprintln!("limits are rlimits here: no cgroups");
        return;
    }
    // What an earlier process with this pid would have left, under the names it used.
    let mut planted = Vec::new();
    for p in &parents {
        for n in 0..8 {
            let d = p.join(format!("hatchery-{}-{n}", std::process::id()));
            if std::fs::create_dir(&d).is_ok() {
                planted.push(d);
            }
        }
    }
    let built = Pool::builder().min_zygotes(1).max_zygotes(1).build();
    for d in &planted {
        let _ = std::fs::remove_dir(d);
    }
    let p = built.expect("a pool starts beside stale cgroups");
    let r = p
        .run(hatchery::Request::exec("/bin/true"))
        .expect("a request");
    assert!(r.success(), "{r:?}");
}
