//! hakoniwa's seccomp example (`scmp_argcmp!`, the crate's doc test) and a filter built from
//! it: `personality(0xffffffff)` (a query) is allowed, `mkdir` fails with `EPERM`.
//!
//! Run: `cargo run -p hatchery --example hakoniwa_seccomp` (prints `mkdir refused`).

use hatchery::{scmp_argcmp, seccomp::*, Container};

fn main() {
    assert_eq!(
        scmp_argcmp!(arg0 != 123),
        ArgCmp::new(0, ArgCmpOp::Ne, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg1 < 123),
        ArgCmp::new(1, ArgCmpOp::Lt, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg2 <= 123),
        ArgCmp::new(2, ArgCmpOp::Le, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg3 == 123),
        ArgCmp::new(3, ArgCmpOp::Eq, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg4 > 123),
        ArgCmp::new(4, ArgCmpOp::Gt, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg5 >= 123),
        ArgCmp::new(5, ArgCmpOp::Ge, 123, 0),
    );
    assert_eq!(
        scmp_argcmp!(arg0 & 0b0010 == 123),
        ArgCmp::new(0, ArgCmpOp::MaskedEq, 0b0010, 123),
    );

    let mut filter = Filter::new(Action::Allow);
    filter
        .add_arch(Arch::Native)
        .add_rule(Action::Errno(libc::EPERM), "mkdir")
        .add_rule(Action::Errno(libc::EPERM), "mkdirat")
        .add_rule_conditional(
            Action::Allow,
            "personality",
            &[scmp_argcmp!(arg0 == 0xffff_ffff)],
        );
    let output = Container::new()
        .rootfs("/")
        .unwrap()
        .tmpfsmount("/tmp")
        .seccomp_filter(filter)
        .command("/bin/sh")
        .args(["-c", "mkdir /tmp/x 2>/dev/null || echo mkdir refused"])
        .output()
        .expect("failed to execute process within container");
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
