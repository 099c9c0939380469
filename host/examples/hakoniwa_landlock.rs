//! hakoniwa's landlock example (`Ruleset::allow_path`, restrict first, then allow), run:
//! the file system restricted to the container's mounts plus the rules given, TCP connect
//! restricted to port 443.
//!
//! Run: `cargo run -p hatchery --example hakoniwa_landlock` (prints the command's output).

use std::str::FromStr;

use hatchery::landlock::*;
use hatchery::Container;

fn main() {
    let mut ruleset = Ruleset::default();
    ruleset.restrict(Resource::FS, CompatMode::Enforce);
    ruleset.allow_path("/bin", FsAccess::from_str("r-x").unwrap());
    ruleset.allow_path("/usr", FsAccess::from_str("r-x").unwrap());
    ruleset.restrict(Resource::NET_TCP_CONNECT, CompatMode::Relax);
    ruleset.allow_tcp_connect(443);

    let output = Container::new()
        .rootfs("/")
        .unwrap()
        .landlock_ruleset(ruleset)
        .command("/bin/sh")
        .args(["-c", "cat /etc/hostname > /dev/null 2>&1; echo landlocked"])
        .output()
        .expect("failed to execute process within container");
    assert!(output.status.success(), "{:?}", output);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
