//! Issue #12: container setup never follows a symbolic link out of the sandbox, never changes
//! the host's file system through a read-only rootdir, and every writable tmpfs a request can
//! reach (`/tmp`, `/dev/shm`, `--tmpfs`) has a size limit. Each test builds its own decoy
//! directories under a temp dir and checks afterwards that they are unchanged (contents and
//! modes). They run as root and as an unprivileged user (see `scripts/test.sh`).

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use hatchery::{Container, Error, Pool, Request, SetupStep};
use hatchery_tests::{bin_dir, hatchery, require, text, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

/// A fresh directory under the temp dir, mode `mode`.
/// A pool of exactly one zygote of `profile`.
fn one_zygote(profile: hatchery::Container) -> Pool {
    Pool::builder()
        .profile(profile)
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .expect("pool")
}

/// A one-zygote pool of the default profile with `data` bound writable at `bind` and a private
/// tmpfs at `tmpfs` beneath it.
fn tmpfs_under_writable_bind(data: &Path, bind: &str, tmpfs: &str) -> Pool {
    let mut profile = hatchery::pool::default_profile();
    profile.bindmount_rw(&s(data), bind).tmpfsmount(tmpfs);
    one_zygote(profile)
}

/// Runs `plant` (which must succeed), then `look` twice: neither later request may print
/// "secret".
fn plant_then_look(p: &Pool, plant: &str, look: &str) {
    let r = p
        .run(Request::exec("/bin/sh").args(["-c", plant]))
        .expect("request");
    assert!(r.success(), "{r:?} {}", text(&r.stderr));
    for _ in 0..2 {
        let r = p
            .run(Request::exec("/bin/sh").args(["-c", look]))
            .expect("request");
        assert!(
            !text(&r.stdout).contains("secret"),
            "the next request read the previous one's tmpfs: {r:?}"
        );
    }
}

fn tempdir(tag: &str, mode: u32) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hatchery-confined-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, PermissionsExt::from_mode(mode)).unwrap();
    d
}

/// Everything under `dir` (itself included), never following links: (relative path, mode,
/// contents or link target).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    fn walk(base: &Path, p: &Path, out: &mut Vec<(PathBuf, u32, Vec<u8>)>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_path_buf();
        let ft = m.file_type();
        let data = if ft.is_symlink() {
            std::fs::read_link(p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if ft.is_file() {
            std::fs::read(p).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push((rel, m.mode(), data));
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for n in names {
                walk(base, &n, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// A decoy directory holding one file.
fn decoy(tag: &str, mode: u32) -> PathBuf {
    let d = tempdir(tag, 0o755);
    std::fs::write(d.join("f"), "decoy\n").unwrap();
    std::fs::set_permissions(&d, PermissionsExt::from_mode(mode)).unwrap();
    d
}

/// A rootdir that can run `/bin/sh` once the host's `/usr` is bound on its (empty) `usr`: the
/// host's `/bin /lib*` links, and a `keep` file.
fn rootdir(tag: &str) -> PathBuf {
    let rd = tempdir(tag, 0o755);
    std::fs::create_dir(rd.join("usr")).unwrap();
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        if let Ok(target) = std::fs::read_link(&host) {
            std::os::unix::fs::symlink(target, rd.join(name)).unwrap();
        }
    }
    std::fs::write(rd.join("keep"), "keep\n").unwrap();
    rd
}

/// The container of `rootdir`: `rd` read-only (or writable) with the host's `/usr` bound in.
fn rootdir_container(rd: &Path, writable: bool) -> Container {
    let mut c = Container::new();
    if writable {
        c.rootdir_rw(rd);
    } else {
        c.rootdir(rd);
    }
    c.bindmount_ro("/usr", "/usr");
    c
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn assert_setup_eloop(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(125),
        "{what}: stdout={} stderr={}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(&std::io::Error::from_raw_os_error(libc::ELOOP).to_string()),
        "{what}: not refused for a symbolic link: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_read_only_rootdir_gets_nothing_created_in_it() {
    if !ready() {
        return;
    }
    let rd = rootdir("ro-create");
    let before = snapshot(&rd);
    let r = s(&rd);
    let out = hatchery(&[
        "run",
        "--rootdir",
        &r,
        "-b",
        "/usr:/usr",
        "--devfs",
        "/dev",
        "--tmpfs",
        "/scratch",
        "--dir",
        "/created:777",
        "--symlink",
        "/keep:/keep-link",
        "--",
        "/bin/sh",
        "-c",
        "test -d /created && test -d /proc/1 && test -d /scratch && test -c /dev/null && cat /keep-link",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "keep\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(&rd), before, "the read-only rootdir changed");
    std::fs::remove_dir_all(&rd).ok();
}

#[test]
fn symlinks_in_a_rootdir_never_redirect_setup() {
    if !ready() {
        return;
    }
    let target = decoy("rd-target", 0o755);
    let target_before = snapshot(&target);
    let rd = rootdir("rd-links");
    // A writable rootdir gets its mount points made in it: give it one.
    std::fs::create_dir(rd.join("proc")).unwrap();
    std::os::unix::fs::symlink(&target, rd.join("etc")).unwrap();
    std::os::unix::fs::symlink(&target, rd.join("mnt")).unwrap();
    let rd_before = snapshot(&rd);
    let r = s(&rd);
    let rw = format!("{r}:rw");
    for (root, extra) in [
        (&r, vec!["--dir", "/etc/sub"]),
        (&r, vec!["--dir", "/mnt:777"]),
        (&r, vec!["--tmpfs", "/etc/t"]),
        (&r, vec!["--symlink", "/x:/etc/l"]),
        (&r, vec!["-b", "/usr/share:/etc/b"]),
        (&r, vec!["--devfs", "/etc/dev"]),
        (&rw, vec!["--dir", "/etc/sub"]),
        (&rw, vec!["--dir", "/mnt:777"]),
        (&rw, vec!["-b", "/usr/share:/mnt/b"]),
    ] {
        let mut args = vec!["run", "--rootdir", root.as_str(), "-b", "/usr:/usr"];
        args.extend(extra.iter().copied());
        args.extend(["--", "/bin/true"]);
        let out = hatchery(&args);
        assert_setup_eloop(&out, &format!("{args:?}"));
        assert_eq!(
            snapshot(&target),
            target_before,
            "{args:?} changed the decoy"
        );
        assert_eq!(snapshot(&rd), rd_before, "{args:?} changed the rootdir");
    }
    // The library's file(): a typed failure naming the step, ELOOP and the path.
    let mut c = rootdir_container(&rd, false);
    c.file("/etc/config", "planted\n");
    match c.command("/bin/true").status() {
        Err(Error::Setup {
            step: SetupStep::WriteFile,
            errno,
            detail,
        }) => {
            assert_eq!(errno, libc::ELOOP, "{detail}");
            assert!(detail.contains("/etc/config"), "{detail}");
        }
        other => panic!("file() through a link: {other:?}"),
    }
    assert_eq!(snapshot(&target), target_before, "file() changed the decoy");
    std::fs::remove_dir_all(&rd).ok();
    std::fs::remove_dir_all(&target).ok();
}

#[test]
fn file_onto_a_read_only_rootdir_leaves_the_host_file_alone() {
    if !ready() {
        return;
    }
    let rd = rootdir("ro-file");
    std::fs::create_dir(rd.join("etc")).unwrap();
    let config = rd.join("etc/config");
    std::fs::write(&config, "original\n").unwrap();
    std::fs::set_permissions(&config, PermissionsExt::from_mode(0o444)).unwrap();
    let before = snapshot(&rd);
    let mut c = rootdir_container(&rd, false);
    c.file("/etc/config", "replaced\n");
    let out = c
        .command("/bin/sh")
        .args(["-c", "cat /etc/config; stat -c %a /etc/config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "replaced\n644\n");
    assert_eq!(snapshot(&rd), before, "the host file changed");
    assert_eq!(
        std::fs::metadata(&config).unwrap().mode() & 0o7777,
        0o444,
        "mode of the host file changed"
    );
    std::fs::remove_dir_all(&rd).ok();
}

#[test]
fn guest_planted_symlinks_in_a_bind_never_redirect_setup() {
    if !ready() {
        return;
    }
    let work = tempdir("work", 0o777);
    let outside = decoy("outside", 0o777);
    let secret = decoy("secret", 0o700);
    let (outside_before, secret_before) = (snapshot(&outside), snapshot(&secret));
    let bind = format!("{}:/data", s(&work));
    // One run plants the links in its writable bind...
    let plant = format!(
        "ln -s {} /data/cfg && ln -s {} /data/cache",
        s(&outside),
        s(&secret)
    );
    let out = hatchery(&["run", "-B", &bind, "--", "/bin/sh", "-c", &plant]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::symlink_metadata(work.join("cfg"))
        .unwrap()
        .file_type()
        .is_symlink());
    // ...later runs must not follow them.
    for extra in [
        ["--dir", "/data/cfg/x:777"],
        ["--dir", "/data/cache:777"],
        ["--tmpfs", "/data/cfg/t"],
        ["--symlink", "/x:/data/cfg/l"],
        ["-b", "/usr/share:/data/cache/b"],
    ] {
        let mut args = vec!["run", "-B", &bind];
        args.extend(extra);
        args.extend(["--", "/bin/true"]);
        let out = hatchery(&args);
        assert_setup_eloop(&out, &format!("{args:?}"));
        assert_eq!(snapshot(&outside), outside_before, "{args:?} wrote outside");
        assert_eq!(
            snapshot(&secret),
            secret_before,
            "{args:?} changed the secret"
        );
    }
    let mut c = Container::new();
    c.rootfs("/")
        .unwrap()
        .bindmount_rw(&s(&work), "/data")
        .file("/data/cfg/planted", "x");
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::Setup {
            errno: libc::ELOOP,
            ..
        })
    ));
    assert_eq!(snapshot(&outside), outside_before, "file() wrote outside");
    for d in [&work, &outside, &secret] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_read_only_rootdir_is_read_only_with_every_submount() {
    if !ready() {
        return;
    }
    // The host's / has writable submounts (/dev/shm at least).
    let probe = format!("/dev/shm/hatchery-probe-{}", std::process::id());
    let script =
        format!("if echo x > {probe} 2>/dev/null; then echo WROTE; fi; cat /proc/self/mountinfo");
    let out = hatchery(&["run", "--rootdir", "/", "--", "/bin/sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _ = std::fs::remove_file(&probe);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("WROTE"), "wrote into the host's /dev/shm");
    let mut lines: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4].to_string(), f[5].to_string())
        })
        .collect();
    // The container's own fresh /proc is the last mount on /proc.
    let fresh_proc = lines.iter().rposition(|(p, _)| p == "/proc").unwrap();
    lines.remove(fresh_proc);
    assert!(lines.iter().any(|(p, _)| p == "/dev/shm"), "{lines:?}");
    for (point, opts) in &lines {
        for want in ["ro", "nosuid", "nodev"] {
            assert!(
                opts.split(',').any(|o| o == want),
                "{point} is not {want}: {opts}"
            );
        }
    }
}

/// Writes up to 100 MiB into /dev/shm, 1 MiB per file (under any `RLIMIT_FSIZE` a pool sets).
const FILL: &str = "i=0; while [ $i -lt 100 ] && \
    dd if=/dev/zero of=/dev/shm/f$i bs=1M count=1 2>&1; do i=$((i+1)); done; \
    echo rc=$((100 - i))";

fn assert_enospc(out: &str, what: &str) {
    assert!(
        out.contains("No space left on device") && !out.contains("rc=0"),
        "{what}: /dev/shm took 100 MiB: {out}"
    );
}

#[test]
fn dev_shm_and_tmpfs_mounts_are_capped_in_one_shot_containers() {
    if !ready() {
        return;
    }
    let out = hatchery(&[
        "run",
        "--devfs",
        "/dev",
        "--tmpfs",
        "/scratch",
        "--",
        "/bin/sh",
        "-c",
        &format!("{FILL}; grep -E ' /(scratch|dev/shm) ' /proc/self/mountinfo"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_enospc(&stdout, "hatchery run");
    for point in ["/scratch", "/dev/shm"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point} not mounted: {stdout}"));
        assert!(line.contains("size="), "{point} has no size limit: {line}");
    }
    let mut c = Container::new();
    c.rootfs("/").unwrap().devfsmount("/dev").tmpfsmount("/tmp");
    let out = c
        .command("/bin/sh")
        .args(["-c", &format!("{FILL}; grep ' /tmp ' /proc/self/mountinfo")])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_enospc(&stdout, "Container");
    assert!(stdout.contains("size="), "/tmp has no size limit: {stdout}");
}

#[test]
fn dev_shm_is_capped_in_pool_requests() {
    if !ready() {
        return;
    }
    let mut profile = hatchery::pool::default_profile();
    profile.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    let p = one_zygote(profile);
    let r = p
        .run(Request::exec("/bin/sh").args(["-c", FILL]))
        .expect("request");
    assert_enospc(&text(&r.stdout), "pool request");
    // The next request gets an empty /dev/shm again.
    let r = p
        .run(Request::exec("/bin/sh").args(["-c", "ls /dev/shm | wc -l"]))
        .unwrap();
    assert_eq!(text(&r.stdout).trim(), "0");
}

/// Review of issue #12: a bind source (or rootdir) below a writable bind's source (or a writable
/// rootdir) is the guest's to change. A guest that swaps such a directory for a link to a host
/// directory must not get that directory bound into the next run.
#[test]
fn bind_sources_below_a_writable_bind_never_follow_guest_links() {
    if !ready() {
        return;
    }
    let work = tempdir("src-work", 0o777);
    std::fs::create_dir(work.join("cfg")).unwrap();
    std::fs::write(work.join("cfg/f"), "cfg\n").unwrap();
    std::fs::set_permissions(work.join("cfg"), PermissionsExt::from_mode(0o777)).unwrap();
    let secret = decoy("src-secret", 0o755);
    let bind = format!("{}:/data", s(&work));
    let cfg = format!("{}/cfg:/cfg", s(&work));
    // Before the swap the read-only bind of the subdirectory works.
    let out = hatchery(&["run", "-B", &bind, "-b", &cfg, "--", "/bin/cat", "/cfg/f"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "cfg\n"),
        "{}",
        text(&out.stderr)
    );
    // A run swaps the directory for a link to the host's secret...
    let swap = format!("rm -r /data/cfg && ln -s {} /data/cfg", s(&secret));
    let out = hatchery(&["run", "-B", &bind, "--", "/bin/sh", "-c", &swap]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // ...the next run must not bind the secret.
    let out = hatchery(&["run", "-B", &bind, "-b", &cfg, "--", "/bin/cat", "/cfg/f"]);
    assert!(
        !text(&out.stdout).contains("decoy"),
        "hatchery run bound the guest's link target: {}",
        text(&out.stdout)
    );
    assert_setup_eloop(&out, "hatchery run, bind below a writable bind");
    let mut c = Container::new();
    c.rootfs("/")
        .unwrap()
        .bindmount_rw(&s(&work), "/data")
        .bindmount_ro(&format!("{}/cfg", s(&work)), "/cfg");
    let out = c.command("/bin/cat").arg("/cfg/f").output();
    match out {
        Err(Error::Setup {
            step: SetupStep::BindMount,
            errno: libc::ELOOP,
            ..
        }) => {}
        Ok(o) => panic!(
            "Container bound the guest's link target: {:?} {}",
            o.status,
            text(&o.stdout)
        ),
        Err(e) => panic!("unexpected error {e:?}"),
    }
    // A writable rootdir is the guest's too.
    let rd = rootdir("src-rd");
    std::fs::create_dir(rd.join("proc")).unwrap();
    std::os::unix::fs::symlink(&secret, rd.join("cfg")).unwrap();
    let mut c = rootdir_container(&rd, true);
    c.bindmount_ro(&format!("{}/cfg", s(&rd)), "/mnt");
    match c.command("/bin/cat").arg("/mnt/f").output() {
        Err(Error::Setup {
            errno: libc::ELOOP, ..
        }) => {}
        other => panic!("a link in a writable rootdir was followed: {other:?}"),
    }
    for d in [&work, &secret, &rd] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// Review of issue #12: a guest that leaves a fifo where a later run places a file must not
/// hang that run's setup (opening a fifo for writing waits for a reader).
#[test]
fn a_fifo_in_a_writable_bind_does_not_hang_file_placement() {
    if !ready() {
        return;
    }
    let work = tempdir("fifo-work", 0o777);
    let bind = format!("{}:/data", s(&work));
    let out = hatchery(&["run", "-B", &bind, "--", "/usr/bin/mkfifo", "/data/cfg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let w = s(&work);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut c = Container::new();
        c.rootfs("/")
            .unwrap()
            .bindmount_rw(&w, "/data")
            .file("/data/cfg", "x");
        let _ = tx.send(
            c.command("/bin/true")
                .status()
                .map_err(|e| format!("{e:?}")),
        );
    });
    let r = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(r) => r,
        Err(_) => {
            // Unblock the stuck setup so the test process can end.
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(work.join("cfg"));
            panic!("file() onto a fifo hung the setup");
        }
    };
    assert!(
        r.as_ref().is_err_and(|e| e.contains("WriteFile")),
        "file() onto a fifo: {r:?}"
    );
    std::fs::remove_dir_all(&work).ok();
}

/// Review of issue #12: the size cap bounds a tmpfs's pages, not its inodes (kernel memory the
/// cap never counts: an inode and a dentry per empty file, directory or link). Without
/// `nr_inodes` the kernel allows half the machine's RAM pages in inodes on every tmpfs. Every
/// writable tmpfs a request can reach must have an inode bound that fits its size.
#[test]
fn tmpfs_mounts_bound_their_inodes() {
    if !ready() {
        return;
    }
    // One inode per 4 KiB of the 64 MiB default size.
    let most = (hatchery_protocol::DEFAULT_TMPFS_BYTES / 4096)
        .max(hatchery_protocol::DEFAULT_SHM_BYTES / 4096);
    let check = |what: &str, out: &str| {
        let counts: Vec<u64> = out
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(u64::MAX))
            .collect();
        assert!(!counts.is_empty(), "{what}: {out}");
        for n in counts {
            assert!(n <= most, "{what}: a tmpfs allows {n} inodes: {out}");
        }
    };
    let script = "stat -f -c %c /scratch /dev/shm /tmp";
    let out = hatchery(&[
        "run", "--devfs", "/dev", "--tmpfs", "/scratch", "--tmpfs", "/tmp", "--", "/bin/sh", "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check("hatchery run", &text(&out.stdout));
    let mut profile = hatchery::pool::default_profile();
    profile.bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
    let p = one_zygote(profile);
    let r = p
        .run(Request::exec("/bin/sh").args(["-c", "stat -f -c %c /tmp /dev/shm"]))
        .expect("request");
    check("pool request", &text(&r.stdout));
}

#[test]
fn a_per_request_mount_point_swapped_for_a_link_is_refused() {
    if !ready() {
        return;
    }
    // Another container sharing the writable bind (here: the host) replaces the mount point of
    // the pool's per-request tmpfs with a link between two requests.
    let data = tempdir("swap", 0o777);
    std::fs::create_dir(data.join("scratch")).unwrap();
    std::fs::create_dir(data.join("other")).unwrap();
    let p = tmpfs_under_writable_bind(&data, "/data", "/data/scratch");
    let probe = "grep -c ' /data/scratch tmpfs' /proc/self/mounts";
    let r = p
        .run(Request::exec("/bin/sh").args(["-c", probe]))
        .expect("request");
    // The zygote's own mount and the request's private one.
    assert_ne!(text(&r.stdout).trim(), "0", "{r:?}");
    std::fs::remove_dir(data.join("scratch")).unwrap();
    std::os::unix::fs::symlink("other", data.join("scratch")).unwrap();
    let r = p
        .run(
            Request::exec("/bin/sh").args(["-c", "grep -c ' /data/other tmpfs' /proc/self/mounts"]),
        )
        .expect("request");
    match &r.outcome {
        hatchery::Outcome::SetupFailed(f) => {
            assert_eq!(f.step, SetupStep::MountTmpfs, "{r:?}");
            assert_eq!(f.errno, libc::ELOOP, "{r:?}");
        }
        other => panic!(
            "the link was followed: {other:?}, stdout {:?}",
            text(&r.stdout)
        ),
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_request_that_moves_its_tmpfs_away_leaves_nothing_for_the_next() {
    if !ready() {
        return;
    }
    // A private tmpfs beneath a writable bind: a request renames the parent, taking its tmpfs
    // instance (and its files) along, and puts a plain directory where it was.
    let data = tempdir("move", 0o777);
    std::fs::create_dir_all(data.join("a/tmp")).unwrap();
    let p = tmpfs_under_writable_bind(&data, "/work", "/work/a/tmp");
    plant_then_look(
        &p,
        "echo secret > /work/a/tmp/secret && mv /work/a /work/b && mkdir -p /work/a/tmp",
        "cat /work/b/tmp/secret /work/a/tmp/secret 2>/dev/null; true",
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_tmpfs_under_a_read_only_host_root_is_not_renewed_in_place() {
    if !ready() {
        return;
    }
    // The host's root, read-only, as the container's: a private tmpfs on it is not on a file
    // system of the container's own, as the same directory is also bound writable elsewhere.
    let data = std::path::PathBuf::from(format!(
        "/var/tmp/hatchery-confined-alias-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(data.join("a/tmp")).unwrap();
    std::fs::set_permissions(&data, PermissionsExt::from_mode(0o777)).unwrap();
    let inside = s(&data);
    // The writable alias's mount point, an empty directory of the (read-only) root.
    let rw = format!("{inside}-rw");
    std::fs::create_dir_all(&rw).unwrap();
    let mut profile = hatchery::Container::new();
    profile
        .unshare(hatchery::Namespace::Ipc)
        .bindmount_ro("/", "/")
        .bindmount_rw(&inside, &rw)
        .tmpfsmount(&format!("{inside}/a/tmp"));
    let p = one_zygote(profile);
    // (No /dev in this container: errors go to stderr.)
    plant_then_look(
        &p,
        &format!("echo secret > {inside}/a/tmp/secret && mv {rw}/a {rw}/b && mkdir -p {rw}/a/tmp"),
        &format!("cat {inside}/b/tmp/secret {inside}/a/tmp/secret; true"),
    );
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&rw);
}
