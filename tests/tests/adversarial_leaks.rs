//! The host after the adversarial suite: alone in its own binary, so that nothing else in the
//! process opens fds or starts children meanwhile.

use std::time::Duration;

use hatchery::{Pool, Request};
use hatchery_tests::{bin_dir, child_pids, open_fds, require, user_namespaces_work};

const ATTACK: &str = "/hatchery-bin/attack";

/// After a round of attacks in a pool and in one-shot containers, the host has the same open
/// fds, children and zombies as before.
#[test]
fn host_is_unchanged_after_a_round_of_attacks() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    let mut profile = hatchery::pool::default_profile();
    profile.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    // Warm up: the shim's sealed copy and other process-wide caches are created once.
    let _ = profile.command("/bin/true").status();
    let fds = open_fds();
    let children = child_pids();
    {
        let p = Pool::builder()
            .profile(profile.clone())
            .min_zygotes(1)
            .max_zygotes(2)
            .build()
            .unwrap();
        for attack in [
            "fork-bomb",
            "zombies",
            "kill-all",
            "mount-tmpfs",
            "x32-syscall",
            "sigstop-self",
            "tmp-plant",
            "core-dump",
            "leaked-fds",
        ] {
            let _ = p.run(
                Request::exec(ATTACK)
                    .arg(attack)
                    .wall_time(Duration::from_millis(500)),
            );
            let _ = profile
                .command(ATTACK)
                .arg(attack)
                .wait_timeout(Duration::from_millis(500))
                .output();
        }
        p.shutdown(Duration::from_secs(5));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (open_fds() > fds || child_pids().len() > children.len())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open_fds() <= fds, "fds: {} then {}", fds, open_fds());
    assert!(
        child_pids().len() <= children.len(),
        "children left: {:?}",
        child_pids()
    );
}
