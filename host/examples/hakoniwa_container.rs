//! hakoniwa's `Container` example: bind the system directories by hand, then run a command.
//! On a merged-/usr host `/bin`, `/lib` and `/lib64` are links into `/usr`; binding them binds
//! what they point to, at the path given.
//!
//! Run: `cargo run -p hatchery --example hakoniwa_container` (prints `hello`).

use hatchery::Container;

fn main() {
    let mut container = Container::new();
    container
        .bindmount_ro("/bin", "/bin")
        .bindmount_ro("/lib", "/lib")
        .bindmount_ro("/lib64", "/lib64")
        .bindmount_ro("/usr", "/usr");

    // And now, we can execute Command in the container.
    let mut command = container.command("/bin/echo");
    let output = command
        .arg("hello")
        .output()
        .expect("failed to execute process within container");
    assert!(output.status.success(), "{:?}", output);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
