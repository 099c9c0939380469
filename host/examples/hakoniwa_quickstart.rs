//! hakoniwa's quickstart (the crate's front-page example), unchanged but for the crate name:
//! a container with the host's system directories and a tmpfs on `/tmp` runs `echo hello`.
//!
//! Run: `cargo run -p hatchery --example hakoniwa_quickstart` (prints `hello`).

use hatchery::Container;

fn main() {
    let output = Container::new() // Create Container with new namespaces via unshare
        .rootfs("/")
        .unwrap() // Mount necessary directories, e.g. `/bin`
        .tmpfsmount("/tmp") // Mount new tmpfs on `/tmp`
        .command("/bin/echo") // Create Command
        .arg("hello") // Configure Command
        .output() // Execute
        .expect("failed to execute process within container");

    let hello = output.stdout;
    assert_eq!(hello, b"hello\n");
    print!("{}", String::from_utf8_lossy(&hello));
}
