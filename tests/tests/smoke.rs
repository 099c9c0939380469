use hatchery::Container;

#[test]
fn smoke() {
    let mut c = Container::new();
    c.rootfs("/").devfsmount("/dev").tmpfsmount("/tmp");
    let out = c
        .command("/bin/sh")
        .args([
            "-c",
            "echo hello; id; ls /; cat /proc/self/uid_map; ls -la /dev",
        ])
        .output();
    match out {
        Ok(o) => {
            println!("status {:?}", o.status);
            println!("stdout {}", String::from_utf8_lossy(&o.stdout));
            println!("stderr {}", String::from_utf8_lossy(&o.stderr));
        }
        Err(e) => panic!("{e} / {:?}", e),
    }
}
