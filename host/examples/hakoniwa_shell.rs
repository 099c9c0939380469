//! hakoniwa's README example, "almost `hakoniwa run -- sh`": `/bin/sh` in a container with the
//! host's system directories, stdio inherited. It reads commands from stdin (a terminal or a
//! pipe) and this program exits with the shell's code.
//!
//! Run: `echo 'echo hi; exit 3' | cargo run -p hatchery --example hakoniwa_shell` (prints `hi`,
//! exits 3).

use hatchery::Container;

fn main() {
    let status = Container::new() // Create Container with new namespaces via unshare
        .rootfs("/")
        .unwrap() // Mount necessary directories, e.g. `/bin`
        // .devfsmount("/dev")     // Mount `devfs` on `/dev`, it contains a minimal set of device files, like `/dev/null`
        // .tmpfsmount("/tmp")     // Mount `tmpfs` on `/tmp`
        // .setrlimit(..)          // Set resource limits
        // .cgroups_resources(..)  // Set cgroups resources
        // .landlock_ruleset(..)   // Set landlock ruleset
        // .seccomp_filter(..)     // Set seccomp filter
        .command("/bin/sh") // Create Command
        .status() // Execute
        .expect("failed to execute process within container");
    std::process::exit(status.code);
}
