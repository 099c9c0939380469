//! hakurei parity, end to end: the container ops and parameters of `hakurei.app/container`
//! (overlays, tmpfs, mkdir, place, link, remount, bind flags, dev, auto-root, auto-etc,
//! daemons, forward-cancel, adopt wait, scheduler, session, abstract sockets, cgroup fd), each
//! with its failure modes. They run as root and as an unprivileged user (see
//! `scripts/test.sh`).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::{BindFlags, Container, Error, RemountFlags, SchedPolicy, SetupStep, Stdio};
use hatchery_tests::{is_root, require, text, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn base() -> Container {
    let mut c = Container::new();
    c.rootfs("/").unwrap().devfsmount("/dev").tmpfsmount("/tmp");
    c
}

fn sh(c: &Container, script: &str) -> hatchery::Output {
    c.command("/bin/sh")
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("spawn failed: {e}"))
}

fn stdout(c: &Container, script: &str) -> String {
    let out = sh(c, script);
    assert!(
        out.status.success(),
        "{script}: {:?} stderr={}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A fresh directory under `parent` (mode 0777: a root host maps the guest to nobody, which
/// must be able to write there), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new_in(parent: &Path, tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = parent.join(format!(
            "hatchery-hakurei-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        TempDir(d)
    }

    fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // An overlay's work dir leaves a mode-0 directory behind: open it up first.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

/// Writes a file the container's user owns (an overlay copies up only files whose owner is
/// mapped into the container).
fn write(p: &Path, contents: &str) {
    std::fs::write(p, contents).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(
        p,
        Some(hatchery::idmap::default_host_uid()),
        Some(hatchery::idmap::default_host_gid()),
    )
    .unwrap();
}

/// (mount point, fs type, options) from /proc/self/mountinfo inside the sandbox.
fn mounts(c: &Container) -> Vec<(String, String, String)> {
    stdout(c, "cat /proc/self/mountinfo")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (
                f[4].to_string(),
                f[sep + 1].to_string(),
                format!("{},{}", f[5], f.last().copied().unwrap_or_default()),
            )
        })
        .collect()
}

fn mount_of<'a>(m: &'a [(String, String, String)], point: &str) -> &'a (String, String, String) {
    m.iter()
        .rev()
        .find(|(p, _, _)| p == point)
        .unwrap_or_else(|| panic!("{point} not mounted: {m:?}"))
}

fn has_opt(opts: &str, o: &str) -> bool {
    opts.split(',').any(|x| x == o)
}

// ---- overlays ----

#[test]
fn persistent_overlay_changes_land_in_the_upper_dir_and_nowhere_else() {
    if !ready() {
        return;
    }
    let lower = tempdir("lower");
    let upper = tempdir("upper");
    let work = tempdir("work");
    write(&lower.join("a"), "from lower\n");
    let mut c = base();
    c.overlay("/ovl", &upper, &work, &[&lower]);
    let out = stdout(
        &c,
        "cat /ovl/a && echo changed > /ovl/a && echo new > /ovl/b && mkdir /ovl/d && \
         grep ' /ovl ' /proc/self/mountinfo",
    );
    assert!(out.starts_with("from lower\n"), "{out}");
    assert!(out.contains(" - overlay "), "{out}");
    let info = out.lines().nth(1).unwrap();
    assert!(info.contains("nosuid") && info.contains("nodev"), "{info}");
    // The changes are in the upper dir, the lower dir is untouched.
    assert_eq!(
        std::fs::read_to_string(upper.join("a")).unwrap(),
        "changed\n"
    );
    assert_eq!(std::fs::read_to_string(upper.join("b")).unwrap(), "new\n");
    assert!(upper.join("d").is_dir());
    assert_eq!(
        std::fs::read_to_string(lower.join("a")).unwrap(),
        "from lower\n"
    );
    assert!(!lower.join("b").exists() && !lower.join("d").exists());
    // And they persist into the next container.
    let again = stdout(&c, "cat /ovl/a /ovl/b");
    assert_eq!(again, "changed\nnew\n");
}

#[test]
fn ephemeral_overlay_is_writable_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let lower = tempdir("eph-lower");
    write(&lower.join("a"), "kept\n");
    let before: Vec<_> = std::fs::read_dir(&lower).unwrap().collect();
    let mut c = base();
    c.overlay_ephemeral("/ovl", &[&lower]);
    let out = stdout(&c, "echo gone > /ovl/a && echo new > /ovl/b && cat /ovl/a");
    assert_eq!(out, "gone\n");
    assert_eq!(std::fs::read_to_string(lower.join("a")).unwrap(), "kept\n");
    assert_eq!(std::fs::read_dir(&lower).unwrap().count(), before.len());
    // A new container starts from the lower layer again.
    assert_eq!(stdout(&c, "cat /ovl/a; ls /ovl"), "kept\na\n");
}

#[test]
fn read_only_overlay_merges_its_lowers_and_refuses_writes() {
    if !ready() {
        return;
    }
    let top = tempdir("ro-top");
    let bottom = tempdir("ro-bottom");
    write(&top.join("a"), "top\n");
    write(&bottom.join("a"), "bottom\n");
    write(&bottom.join("b"), "only bottom\n");
    let mut c = base();
    c.overlay_readonly("/ro", &[&top, &bottom]);
    let out = sh(&c, "cat /ro/a /ro/b; echo x > /ro/c");
    assert_eq!(text(&out.stdout), "top\nonly bottom\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    let m = mounts(&c);
    let (_, fstype, opts) = mount_of(&m, "/ro");
    assert_eq!(fstype, "overlay");
    assert!(has_opt(opts, "ro"), "{opts}");
}

#[test]
fn overlay_arguments_are_checked_before_anything_starts() {
    if !ready() {
        return;
    }
    let lower = tempdir("arg-lower");
    let upper = tempdir("arg-upper");
    let work = tempdir("arg-work");
    let missing = lower.join("no-such-dir");
    let check = |c: &Container, want: &str| match c.command("/bin/true").status() {
        Err(Error::OverlayArgument { target, reason }) => {
            assert_eq!(target, "/ovl");
            assert!(reason.contains(want), "{reason}");
        }
        other => panic!("expected an overlay argument error, got {other:?}"),
    };
    let mut c = base();
    c.overlay("/ovl", &upper, &work, &[&missing]);
    check(&c, &missing.display().to_string());
    let mut c = base();
    c.overlay_readonly("/ovl", &[&lower]);
    check(&c, "at least two lower directories");
    let mut c = base();
    c.overlay_ephemeral("/ovl", &[] as &[&Path]);
    check(&c, "at least one lower directory");
    let mut c = base();
    c.overlay("/ovl", &upper, upper.join("w"), &[&lower]);
    std::fs::create_dir(upper.join("w")).unwrap();
    check(&c, "neither inside the other");
    // A work dir on another file system than the upper dir.
    let shm = Path::new("/dev/shm");
    if require(
        shm.is_dir() && nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok(),
        "no writable /dev/shm for a second file system",
    ) {
        let other = TempDir::new_in(shm, "arg-work");
        let mut c = base();
        c.overlay("/ovl", &upper, &other, &[&lower]);
        check(&c, "on another file system");
    }
}

#[test]
fn overlay_setup_failures_name_the_op_and_the_path() {
    if !ready() {
        return;
    }
    let lower = tempdir("fail-lower");
    // The mount point cannot be made: /usr is a read-only bind.
    let mut c = base();
    c.overlay_ephemeral("/usr/no-such-dir", &[&lower]);
    match c.command("/bin/true").status() {
        Err(Error::Setup {
            step: SetupStep::MountOverlay,
            errno,
            detail,
        }) => {
            assert_eq!(errno, libc::EROFS);
            assert_eq!(detail, "/usr/no-such-dir");
        }
        other => panic!("expected a MountOverlay failure, got {other:?}"),
    }
}

// ---- tmpfs, mkdir, place, link, remount ----

#[test]
fn tmpfs_gets_its_size_and_mode_and_size_zero_is_refused() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.mount_tmpfs("/scratch", 1 << 20, 0o700);
    let out = stdout(
        &c,
        "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("700"));
    let info = lines.next().unwrap();
    assert!(info.contains("size=1024k"), "{info}");
    let mut c = base();
    c.mount_tmpfs("/scratch", 0, 0o755);
    match c.command("/bin/true").status() {
        Err(Error::TmpfsSize { target }) => assert_eq!(target, "/scratch"),
        other => panic!("expected a tmpfs size error, got {other:?}"),
    }
}

#[test]
fn read_only_tmpfs_mkdir_place_and_link() {
    if !ready() {
        return;
    }
    let host = tempdir("link");
    std::os::unix::fs::symlink("/usr/bin/env", host.join("envlink")).unwrap();
    let mut c = base();
    c.readonly_tmpfs("/empty", 0o555)
        .mkdir("/made/deep", 0o711)
        .place("/made/deep/data", "placed\n")
        .link("/made/link", "/made/deep/data", false)
        .link("/made/deref", &host.join("envlink").to_string_lossy(), true);
    let out = sh(
        &c,
        "stat -c %a /empty /made/deep /made/deep/data; cat /made/link; readlink /made/deref; \
         touch /empty/x",
    );
    assert_eq!(
        text(&out.stdout),
        "555\n711\n444\nplaced\n/usr/bin/env\n",
        "{}",
        text(&out.stderr)
    );
    assert!(!out.status.success(), "the read-only tmpfs took a file");
    // Dereferencing a path that is not a link is refused before anything starts.
    let mut c = base();
    c.link("/x", "/usr", true);
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn remount_adds_flags_and_needs_a_mount_point() {
    if !ready() {
        return;
    }
    let dir = tempdir("remount");
    let mut c = base();
    c.bind_with(&dir, "/data", BindFlags::WRITABLE)
        .remount("/data", RemountFlags::RDONLY | RemountFlags::NOEXEC);
    let m = mounts(&c);
    let (_, _, opts) = mount_of(&m, "/data");
    assert!(has_opt(opts, "ro") && has_opt(opts, "noexec"), "{opts}");
    let out = sh(&c, "touch /data/x");
    assert!(!out.status.success());
    assert!(!dir.join("x").exists());
    let mut c = base();
    c.mkdir("/plain", 0o755)
        .remount("/plain", RemountFlags::NOEXEC);
    match c.command("/bin/true").status() {
        Err(
            e @ Error::Setup {
                step: SetupStep::Remount,
                errno: libc::EINVAL,
                ..
            },
        ) => assert!(e.to_string().contains("not a mount point"), "{e}"),
        other => panic!("expected a Remount failure, got {other:?}"),
    }
}

// ---- bind flags, dev ----

#[test]
fn bind_flags_optional_writable_and_device() {
    if !ready() {
        return;
    }
    let dir = tempdir("bindflags");
    let missing = dir.join("missing");
    let mut c = base();
    c.bind_with(&missing, "/opt-missing", BindFlags::OPTIONAL)
        .bind_with(&dir, "/rw", BindFlags::WRITABLE)
        .bind_with("/dev", "/hostdev-nodev", BindFlags::NONE)
        .bind_with("/dev", "/hostdev", BindFlags::DEVICE);
    let out = sh(
        &c,
        "test -e /opt-missing && echo present; echo hi > /rw/f; \
         head -c 1 /hostdev/zero | od -An -c | tr -d ' '; \
         head -c 1 /hostdev-nodev/zero && echo nodev-read",
    );
    assert_eq!(text(&out.stdout), "\\0\n", "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "hi\n");
    let m = mounts(&c);
    assert!(has_opt(&mount_of(&m, "/hostdev-nodev").2, "nodev"));
    assert!(!has_opt(&mount_of(&m, "/hostdev").2, "nodev"));
    assert!(has_opt(&mount_of(&m, "/hostdev").2, "nosuid"));
    // Without OPTIONAL a missing source fails the setup, naming it.
    let mut c = base();
    c.bind_with(&missing, "/x", BindFlags::NONE);
    match c.command("/bin/true").status() {
        Err(Error::Setup {
            step: SetupStep::BindMount,
            errno: libc::ENOENT,
            detail,
        }) => assert_eq!(detail, missing.display().to_string()),
        other => panic!("expected a BindMount failure, got {other:?}"),
    }
}

#[test]
fn dev_with_mqueue_and_dev_writable() {
    if !ready() {
        return;
    }
    let mut c = Container::new();
    c.rootfs("/").unwrap().dev("/dev", true);
    let m = mounts(&c);
    assert_eq!(mount_of(&m, "/dev/mqueue").1, "mqueue");
    assert!(has_opt(&mount_of(&m, "/dev").2, "ro"));
    let out = sh(&c, "touch /dev/x");
    assert!(!out.status.success());
    let mut c = Container::new();
    c.rootfs("/").unwrap().dev_writable("/dev", false);
    assert_eq!(stdout(&c, "touch /dev/x && ls /dev/x"), "/dev/x\n");
}

// ---- auto-root, auto-etc ----

#[test]
fn auto_root_binds_top_level_entries_but_not_what_the_container_brings() {
    if !ready() {
        return;
    }
    let host = tempdir("autoroot");
    for d in ["data", "proc", "dev", "tmp", "mnt", "etc"] {
        std::fs::create_dir(host.join(d)).unwrap();
    }
    write(&host.join("data/f"), "data\n");
    write(&host.join("file"), "top\n");
    std::os::unix::fs::symlink("/proc/self", host.join("me")).unwrap();
    let mut c = Container::empty();
    c.bindmount_ro("/usr", "/usr")
        .symlink("usr/bin", "/bin")
        .symlink("usr/lib", "/lib")
        .symlink("usr/lib64", "/lib64")
        .auto_root(&host, BindFlags::NONE);
    let out = stdout(
        &c,
        "ls / | tr '\\n' ' '; echo; cat /data/f /file; readlink /me",
    );
    assert_eq!(
        out, "bin data file lib lib64 me usr \ndata\ntop\n/proc/self\n",
        "{out}"
    );
    // Read-only unless asked: a write fails and the host is untouched.
    let out = sh(&c, "echo x > /data/new");
    assert!(!out.status.success());
    // Allowed once.
    c.auto_root(&host, BindFlags::WRITABLE);
    match c.command("/bin/true").status() {
        Err(Error::OpRepeat { op }) => assert_eq!(op, "auto-root"),
        other => panic!("expected OpRepeat, got {other:?}"),
    }
}

#[test]
fn auto_etc_mirrors_entries_and_never_a_secret() {
    if !ready() {
        return;
    }
    let etc = tempdir("autoetc");
    write(&etc.join("hostname"), "box\n");
    write(&etc.join("passwd"), "host:x:0:0::/:/bin/sh\n");
    write(&etc.join("shadow"), "secret\n");
    std::fs::create_dir(etc.join("ssh")).unwrap();
    write(&etc.join("ssh/ssh_host_key"), "secret\n");
    std::fs::create_dir(etc.join("security")).unwrap();
    write(&etc.join("security/limits.conf"), "limits\n");
    write(&etc.join("security/opasswd"), "secret\n");
    write(&etc.join("mtab"), "stale\n");
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", etc.join("localtime")).unwrap();
    let mut c = base();
    c.auto_etc(&etc, "p");
    let out = stdout(
        &c,
        "cd /etc; ls -A | tr '\\n' ' '; echo; cat hostname security/limits.conf; \
         readlink hostname mtab localtime; ls -A .host/p/security",
    );
    assert_eq!(
        out,
        ".host hostname localtime mtab security \nbox\nlimits\n.host/p/hostname\n/proc/mounts\n\
         /usr/share/zoneinfo/UTC\nlimits.conf\n",
        "{out}"
    );
    // The host's whole /etc works too, without its secrets.
    let mut c = base();
    c.auto_etc("/etc", "");
    let out = sh(
        &c,
        "ls /etc/shadow /etc/ssh /etc/.host/shadow 2>&1; cat /etc/hostname",
    );
    assert!(!text(&out.stdout).contains("secret"));
    for missing in ["/etc/shadow", "/etc/ssh", "/etc/.host/shadow"] {
        assert!(
            text(&out.stdout).contains(&format!("'{missing}': No such file")),
            "{missing}: {}",
            text(&out.stdout)
        );
    }
    c.auto_etc("/etc", "again");
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::OpRepeat { op: "auto-etc" })
    ));
}

// ---- daemons ----

/// Processes of this host whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_daemon_starts_before_the_command_and_dies_with_the_container() {
    if !ready() {
        return;
    }
    let marker = format!("9{}.25", std::process::id());
    let mut c = base();
    let script = format!("touch /tmp/ready; exec sleep {marker}");
    c.daemon("/tmp/ready", "/bin/sh", &["-c", &script]);
    // The daemon is the container's first process after the shim (pid 2), alive (its shell may
    // be exec'ing the sleep right now, so its command line is not looked at).
    let out = stdout(
        &c,
        "test -e /tmp/ready && echo ready; grep '^State' /proc/2/status",
    );
    assert!(out.starts_with("ready\nState:"), "{out}");
    assert!(!out.contains("zombie") && !out.contains("dead"), "{out}");
    assert!(
        processes_with(&marker).is_empty(),
        "the daemon outlived its container"
    );
}

#[test]
fn a_daemon_that_never_becomes_ready_fails_the_start_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let marker = format!("8{}.5", std::process::id());
    let mut c = base();
    c.daemon("/tmp/never", "/bin/sleep", &[&marker])
        .daemon_timeout(Duration::from_millis(300));
    let t = Instant::now();
    match c.command("/bin/true").status() {
        Err(
            e @ Error::Setup {
                step: SetupStep::Daemon,
                errno: libc::ETIMEDOUT,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("/tmp/never") && msg.contains("/bin/sleep"),
                "{msg}"
            );
        }
        other => panic!("expected a Daemon timeout, got {other:?}"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        processes_with(&marker).is_empty(),
        "the daemon was left running"
    );
    // One that exits before it is ready fails at once.
    let mut c = base();
    c.daemon("/tmp/never", "/bin/false", &[]);
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::Setup {
            step: SetupStep::Daemon,
            errno: libc::ECHILD,
            ..
        })
    ));
}

// ---- parameters ----

/// Spawns `script` with piped stdout and waits for its first line (the command is ready).
fn spawn_ready(c: &Container, script: &str) -> (hatchery::Child, BufReader<hatchery::ChildStdout>) {
    let mut child = c
        .command("/bin/sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

#[test]
fn forward_cancel_delivers_sigint_and_kills_after_the_wait_delay() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.forward_cancel(true).wait_delay(Duration::from_secs(10));
    let (mut child, _out) = spawn_ready(&c, "trap 'exit 3' INT; echo ready; sleep 100 & wait");
    let t = Instant::now();
    let st = child.cancel().unwrap();
    assert_eq!(st.exit_code, Some(3), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // A command that ignores SIGINT is killed once the delay has passed.
    let mut c = base();
    c.forward_cancel(true)
        .wait_delay(Duration::from_millis(300));
    let (mut child, _out) = spawn_ready(&c, "trap '' INT; echo ready; sleep 100 & wait");
    let t = Instant::now();
    let st = child.cancel().unwrap();
    let took = t.elapsed();
    assert_eq!(st.signal, Some(libc::SIGKILL), "{st:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Without forward_cancel, a cancel kills at once.
    let (mut child, _out) = spawn_ready(&base(), "trap 'exit 3' INT; echo ready; sleep 100 & wait");
    assert_eq!(child.cancel().unwrap().signal, Some(libc::SIGKILL));
}

#[test]
fn adopt_wait_delay_lets_leftover_processes_finish() {
    if !ready() {
        return;
    }
    let dir = tempdir("adopt");
    let script = "(sleep 0.2; echo late > /out/late) & echo started";
    let mut c = base();
    c.bindmount_rw(&dir.to_string_lossy(), "/out");
    assert_eq!(stdout(&c, script), "started\n");
    // The container is gone, and the leftover with it, before it could write.
    assert!(!dir.join("late").exists());
    c.adopt_wait_delay(Duration::from_secs(10));
    let t = Instant::now();
    assert_eq!(stdout(&c, script), "started\n");
    assert_eq!(std::fs::read_to_string(dir.join("late")).unwrap(), "late\n");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn scheduler_policy_applies_to_the_container() {
    if !ready() {
        return;
    }
    let policy =
        |c: &Container| -> String { stdout(c, "grep '^policy' /proc/self/sched | tr -s ' '") };
    let mut c = base();
    c.scheduler(SchedPolicy::Batch, 0);
    assert_eq!(policy(&c), "policy : 3\n");
    c.scheduler(SchedPolicy::Idle, 0);
    assert_eq!(policy(&c), "policy : 5\n");
    // Real-time policies need CAP_SYS_NICE in the host's user namespace: never in a container.
    c.scheduler(SchedPolicy::Fifo, 10);
    match c.command("/bin/true").status() {
        Err(Error::Setup {
            step: SetupStep::Scheduler,
            errno: libc::EPERM,
            ..
        }) => {}
        other => panic!("expected a Scheduler failure, got {other:?}"),
    }
}

#[test]
fn retain_session_keeps_the_hosts_session() {
    if !ready() {
        return;
    }
    // Field 6 of /proc/self/stat: the session id, 0 when its leader is outside the pid namespace.
    let sid = |c: &Container| stdout(c, "cut -d' ' -f1,6 /proc/$$/stat");
    let own = sid(&base());
    let mut f = own.split_whitespace();
    assert_eq!(
        f.next(),
        f.next(),
        "a new session is led by the command: {own}"
    );
    let mut c = base();
    c.retain_session(true);
    assert!(sid(&c).trim_end().ends_with(" 0"), "{}", sid(&c));
}

#[test]
fn host_abstract_drops_the_abstract_socket_scope() {
    if !ready() {
        return;
    }
    use hatchery::landlock::{CompatMode, Ruleset};
    let name = format!("hatchery-hakurei-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let connect = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\0{name}'); print('connected')"
    );
    let mut c = base();
    c.host_net(true);
    let mut r = Ruleset::new();
    r.restrict_all(CompatMode::Enforce);
    c.landlock_ruleset(r);
    let out = match c
        .command("/usr/bin/python3")
        .args(["-c", &connect])
        .output()
    {
        Err(Error::Setup {
            step: SetupStep::Landlock,
            ..
        }) => {
            require(false, "landlock cannot enforce scopes on this kernel");
            return;
        }
        other => other.unwrap(),
    };
    assert!(!out.status.success(), "the scope let it through");
    c.host_abstract(true);
    let out = c
        .command("/usr/bin/python3")
        .args(["-c", &connect])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "connected\n", "{}", text(&out.stderr));
}

#[test]
fn an_existing_cgroup_is_joined_through_its_fd() {
    if !ready() {
        return;
    }
    let parent = Path::new("/sys/fs/cgroup/unified");
    if !require(
        parent.join("cgroup.procs").exists(),
        "no cgroup2 mount at /sys/fs/cgroup/unified",
    ) {
        return;
    }
    if !is_root() {
        // Unprivileged, no cgroup can be joined: the start fails, typed, and nothing runs.
        let fd = std::fs::File::open(parent).unwrap();
        let mut c = base();
        c.cgroup_fd(fd.into());
        match c.command("/bin/true").status() {
            Err(e @ Error::Io { .. }) => {
                assert!(e.to_string().contains("joining the given cgroup"), "{e}")
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
        return;
    }
    let dir = parent.join(format!("hatchery-hakurei-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let fd = std::fs::File::open(&dir).unwrap();
    let mut c = base();
    c.cgroup_fd(fd.into());
    let out = stdout(&c, "cat /proc/self/cgroup");
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.lines()
            .any(|l| l.starts_with("0::") && l.contains(&name)),
        "{out}"
    );
    let _ = std::fs::remove_dir(&dir);
    // With hatchery's own limits too, it is refused before anything starts.
    let fd = std::fs::File::open("/").unwrap();
    let mut c = base();
    c.cgroup_fd(fd.into()).cgroup_pids_limit(10);
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::InvalidConfig { what: "cgroup", .. })
    ));
}

#[test]
fn pools_refuse_ops_their_requests_would_share() {
    let lower = tempdir("pool-lower");
    for (what, c) in [
        ("ephemeral overlay", {
            let mut c = hatchery::pool::default_profile();
            c.overlay_ephemeral("/ovl", &[&*lower]);
            c
        }),
        ("writable /dev", {
            let mut c = hatchery::pool::default_profile();
            c.dev_writable("/dev2", false);
            c
        }),
        ("daemon", {
            let mut c = hatchery::pool::default_profile();
            c.daemon("/tmp/r", "/bin/true", &[]);
            c
        }),
        ("privileged", {
            let mut c = hatchery::pool::default_profile();
            c.privileged(true);
            c
        }),
    ] {
        match hatchery::Pool::builder().profile(c).min_zygotes(0).build() {
            Err(hatchery::PoolError::InvalidConfig { reason, .. }) => {
                assert!(
                    ["shared", "daemon", "one-shot"]
                        .iter()
                        .any(|w| reason.contains(w)),
                    "{what}: {reason}"
                )
            }
            other => panic!("{what}: expected InvalidConfig, got {:?}", other.err()),
        }
    }
}

#[test]
fn describe_lists_ops_and_parameters() {
    let lower = tempdir("describe");
    let mut c = base();
    c.overlay_readonly("/ro", &[&*lower, &*lower])
        .remount("/ro", RemountFlags::NOEXEC)
        .daemon("/run/ready", "/usr/sbin/thing", &["-f"])
        .forward_cancel(true)
        .scheduler(SchedPolicy::Batch, 0)
        .privileged(true);
    let d = c.setup_log(false).join("\n");
    for want in [
        "overlay: ",
        "-> /ro (read-only",
        "remount: /ro (noexec)",
        "daemon: /usr/sbin/thing [\"-f\"], ready when /run/ready exists",
        "cancel: SIGINT to the command",
        "scheduler: Batch priority 0",
        "privileged: CAP_SYS_ADMIN kept",
    ] {
        assert!(d.contains(want), "{want} missing from:\n{d}");
    }
}

// ---- `hatchery run` flags ----

fn hatchery(args: &[&str]) -> std::process::Output {
    std::process::Command::new(hatchery_tests::bin_dir().join("hatchery"))
        .args(args)
        .env(
            "HATCHERY_SHIM",
            hatchery_tests::bin_dir().join("hatchery-shim"),
        )
        .output()
        .expect("run the hatchery binary")
}

#[test]
fn cli_overlay_flags_and_remount_show_in_verbose_and_work() {
    if !ready() {
        return;
    }
    let lower = tempdir("cli-lower");
    let lower2 = tempdir("cli-lower2");
    let upper = tempdir("cli-upper");
    let work = tempdir("cli-work");
    write(&lower.join("a"), "a\n");
    write(&lower2.join("b"), "b\n");
    let (l, l2, u, w) = (
        lower.display().to_string(),
        lower2.display().to_string(),
        upper.display().to_string(),
        work.display().to_string(),
    );
    let persistent = format!("{u}:{w}:{l}:/p");
    let tmp = format!("{l}:/t");
    let ro = format!("{l}:{l2}:/r");
    let out = hatchery(&[
        "run",
        "-v",
        "--overlay",
        &persistent,
        "--overlay-tmp",
        &tmp,
        "--overlay-ro",
        &ro,
        "--tmpfs-ro",
        "/empty",
        "--remount",
        "/p:noexec",
        "--dev-writable",
        "/dev",
        "--",
        "/bin/sh",
        "-c",
        "echo p > /p/new && echo t > /t/new && cat /r/a /r/b && touch /dev/x && \
         ! touch /empty/x 2>/dev/null && grep -c ' /p .*noexec' /proc/self/mountinfo",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(text(&out.stdout), "a\nb\n1\n");
    for want in [
        "overlay: ",
        "-> /p (persistent",
        "-> /t (ephemeral",
        "-> /r (read-only",
        "tmpfs: /empty (ro",
        "remount: /p (noexec)",
        "dev: /dev (writable)",
    ] {
        assert!(err.contains(want), "-v lacks {want:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "p\n");
    assert!(!lower.join("new").exists());
    // Errors are the container's (125), typed and named.
    let out = hatchery(&["run", "--overlay-ro", &format!("{l}:/r"), "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("at least two lower directories"),
        "{}",
        text(&out.stderr)
    );
    let out = hatchery(&["run", "--overlay", "a:b", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("UPPER:WORK:LOWER"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_auto_root_etc_bind_daemon_and_parameters() {
    if !ready() {
        return;
    }
    let root = tempdir("cli-root");
    std::fs::create_dir(root.join("data")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    let r = root.display().to_string();
    // --auto-root replaces the default rootfs; links are links (into /usr, which a --bind
    // provides).
    let out = hatchery(&[
        "run",
        "-v",
        "--auto-root",
        &r,
        "--bind",
        "/usr:/usr",
        "--bind",
        "/no/such/path:/opt:optional",
        "--etc",
        "/etc:host",
        "--etc",
        "hostname",
        "--tmpfs",
        "/tmp",
        "--daemon",
        "/tmp/ready:/bin/sh:-c:touch /tmp/ready; exec sleep 1000",
        "--scheduler",
        "batch",
        "--",
        "/bin/sh",
        "-c",
        "ls /; readlink /etc/os-release; test -e /etc/shadow || echo no-shadow; \
         test -e /tmp/ready && echo ready; grep -c 'policy *: *3' /proc/self/sched",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let s = text(&out.stdout);
    assert!(
        s.starts_with("bin\ndata\netc\nlib\nlib64\nproc\ntmp\nusr\n"),
        "{s}"
    );
    assert!(
        s.contains(".host/host/os-release\n") || s.contains("../usr/lib/os-release\n"),
        "{s}"
    );
    assert!(s.ends_with("no-shadow\nready\n1\n"), "{s}");
    for want in [
        "auto-root: ",
        "auto-etc: /etc",
        "daemon: /bin/sh",
        "scheduler: Batch",
    ] {
        assert!(err.contains(want), "-v lacks {want:?}: {err}");
    }
    // Flag errors name the flag.
    for (args, want) in [
        (&["--remount", "/x:rw"][..], "--remount: unknown flags"),
        (&["--bind", "/usr:/u:bogus"][..], "--bind: unknown flags"),
        (
            &["--daemon", "/r"][..],
            "--daemon: expected READY_PATH:PROGRAM",
        ),
        (&["--scheduler", "fast"][..], "--scheduler: unknown policy"),
        (&["--tmpfs-sized", "/t:0"][..], "a size of 0 is refused"),
        (
            &["--host-net", "--unshare-network"][..],
            "--host-net contradicts",
        ),
        (
            &["--seccomp-preset", "bogus"][..],
            "--seccomp-preset: unknown preset",
        ),
        (
            &["--seccomp", "podman", "--seccomp-preset", "ext"][..],
            "replaces --seccomp",
        ),
    ] {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "/bin/true"]);
        let out = hatchery(&a);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = hatchery(&["run", "-v", "--seccomp-preset", "strict", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("seccomp presets: ext,deny-ns,deny-tty,deny-devel"),
        "{}",
        text(&out.stderr)
    );
    // A daemon that never becomes ready: 125, typed, quickly.
    let out = hatchery(&[
        "run",
        "--tmpfs",
        "/tmp",
        "--daemon",
        "/tmp/never:/bin/sleep:1000",
        "--daemon-timeout",
        "0.2",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Daemon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_forward_cancel_turns_sigterm_into_sigint() {
    if !ready() {
        return;
    }
    let mut child = std::process::Command::new(hatchery_tests::bin_dir().join("hatchery"))
        .args([
            "run",
            "--devfs",
            "/dev",
            "--forward-cancel",
            "--wait-delay",
            "10",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo interrupted; exit 4' INT; echo ready; sleep 100 & wait",
        ])
        .env(
            "HATCHERY_SHIM",
            hatchery_tests::bin_dir().join("hatchery-shim"),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "interrupted\n");
    assert_eq!(child.wait().unwrap().code(), Some(4));
}

#[test]
fn privileged_keeps_cap_sys_admin_and_nothing_else() {
    if !ready() {
        return;
    }
    let caps = |c: &Container| stdout(c, "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status");
    let none = caps(&base());
    assert!(
        none.lines().all(|l| l.ends_with("0000000000000000")),
        "{none}"
    );
    let mut c = base();
    c.privileged(true);
    let kept = caps(&c);
    assert!(
        kept.lines().all(|l| l.ends_with("0000000000200000")),
        "{kept}"
    );
    // It can mount (no seccomp policy here): the one thing CAP_SYS_ADMIN is for.
    assert_eq!(
        stdout(&c, "mount -t tmpfs none /tmp && echo mounted"),
        "mounted\n"
    );
    let out = sh(
        &base(),
        "mount -t tmpfs none /tmp 2>/dev/null && echo mounted",
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn seccomp_presets_deny_what_they_name() {
    if !ready() {
        return;
    }
    use hatchery::seccomp::{PresetFlags, Presets};
    let probe = r#"
import ctypes, errno, socket
for fam in (socket.AF_UNIX, socket.AF_INET, 17):
    kind = socket.SOCK_RAW if fam == 17 else socket.SOCK_DGRAM
    try:
        socket.socket(fam, kind).close()
        print(fam, "ok")
    except OSError as e:
        print(fam, errno.errorcode[e.errno])
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:
    print("unshare ok")
else:
    print("unshare", errno.errorcode[ctypes.get_errno()])
"#;
    let run = |c: &Container| {
        let out = c
            .command("/usr/bin/python3")
            .args(["-c", probe])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let mut c = base();
    c.seccomp_presets(Presets::STRICT, PresetFlags::default());
    // AF_PACKET (17) is not an allowed family; namespaces are denied.
    assert_eq!(run(&c), "1 ok\n2 ok\n17 EAFNOSUPPORT\nunshare EPERM\n");
    // Without deny-ns, creating a user namespace works (nesting is allowed by the kernel).
    c.seccomp_presets(Presets::EXT, PresetFlags::default());
    assert!(run(&c).ends_with("unshare ok\n"), "{}", run(&c));
}

#[test]
fn landlock_lets_the_command_use_its_mqueue() {
    if !ready() {
        return;
    }
    use hatchery::landlock::{CompatMode, Resource, Ruleset};
    let mut c = Container::new();
    c.rootfs("/").unwrap().dev("/dev", true);
    let mut r = Ruleset::new();
    r.restrict(Resource::Fs, CompatMode::Enforce);
    c.landlock_ruleset(r);
    let out = c
        .command("/usr/bin/python3")
        .args([
            "-c",
            "import os; os.close(os.open('/dev/mqueue/q', os.O_CREAT | os.O_RDWR, 0o600)); \
             print(os.listdir('/dev/mqueue'))",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "['q']\n", "{}", text(&out.stderr));
}

/// The system directories of a TOML profile, bound read-only.
const SYSTEM_MOUNTS: &str = r#"[[mounts]]
source = "/usr"
[[mounts]]
source = "/bin"
[[mounts]]
source = "/lib"
[[mounts]]
source = "/lib64"
"#;

#[test]
fn a_toml_profile_carries_ops_and_parameters() {
    if !ready() {
        return;
    }
    let lower = tempdir("toml-lower");
    write(&lower.join("a"), "from lower\n");
    let dir = tempdir("toml");
    let profile = dir.join("p.toml");
    std::fs::write(
        &profile,
        format!(
            r#"
{SYSTEM_MOUNTS}[[mounts]]
source = "/tmp"
destination = "/tmp"
type = "tmpfs"

[[ops]]
type = "overlay"
target = "/ovl"
lower = ["{lower}"]
ephemeral = true

[[ops]]
type = "dev"
target = "/dev"
mqueue = true

[[ops]]
type = "remount"
target = "/ovl"
flags = ["noexec"]

[[ops]]
type = "daemon"
ready = "/tmp/ready"
cmdline = ["/bin/sh", "-c", "touch /tmp/ready; exec sleep 1000"]

[hakurei]
scheduler = "idle"
seccomp_presets = ["strict"]

[command]
cmdline = ["/bin/sh", "-c", "echo x > /ovl/a && cat /ovl/a && test -e /tmp/ready && ls -d /dev/mqueue && grep -c 'policy *: *5' /proc/self/sched"]
"#,
            lower = lower.display()
        ),
    )
    .unwrap();
    let out = hatchery(&["run", "-v", "-c", &profile.to_string_lossy()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(text(&out.stdout), "x\n/dev/mqueue\n1\n");
    assert!(
        err.contains("seccomp presets: ext,deny-ns,deny-tty,deny-devel"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(lower.join("a")).unwrap(),
        "from lower\n"
    );
    // A bad op names the profile's line.
    std::fs::write(
        &profile,
        "\n[[ops]]\ntype = \"remount\"\ntarget = \"/x\"\nflags = [\"rw\"]\n",
    )
    .unwrap();
    let out = hatchery(&["run", "-c", &profile.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("p.toml:2: ops.flags: unknown remount flags"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn disable_userns_refuses_every_new_user_namespace_whatever_seccomp_allows() {
    if !ready() {
        return;
    }
    // No seccomp policy here: only the container's max_user_namespaces stands in the way.
    let bin = hatchery_tests::bin_dir().to_string_lossy().into_owned();
    let code = |c: &Container, how: &str| {
        let mut c = c.clone();
        c.bindmount_ro(&bin, "/hatchery-bin");
        c.command("/hatchery-bin/attack")
            .arg(how)
            .status()
            .unwrap_or_else(|e| panic!("spawn failed: {e}"))
            .code()
    };
    // 100: the attack's own code for a namespace it made.
    assert_eq!(
        code(&base(), "unshare-user"),
        100,
        "nested user namespaces work"
    );
    let mut c = base();
    c.disable_userns(true);
    for how in ["unshare-user", "clone-newuser"] {
        assert_eq!(code(&c, how), libc::ENOSPC, "{how}");
    }
}

#[test]
fn a_toml_profile_can_disable_user_namespaces() {
    if !ready() {
        return;
    }
    let dir = tempdir("toml-userns");
    let profile = dir.join("p.toml");
    let limit = |extra: &str| {
        std::fs::write(
            &profile,
            format!(
                r#"
{SYSTEM_MOUNTS}
[hakurei]
{extra}

[command]
cmdline = ["/bin/cat", "/proc/sys/user/max_user_namespaces"]
"#
            ),
        )
        .unwrap();
        let out = hatchery(&["run", "-c", &profile.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_ne!(limit(""), "0\n");
    assert_eq!(limit("disable_userns = true"), "0\n");
}

#[test]
fn disable_userns_on_a_read_only_proc_sys_fails_with_its_own_step() {
    if !ready() {
        return;
    }
    // A host whose /proc/sys is read-only (as inside many containers): the limit cannot be
    // set, so the container is refused, by name, rather than started without it. Only root can
    // make one here: a user would have to be root of a user namespace to mount, and there
    // `hatchery` has no id to map but that namespace's root, which it refuses.
    if !is_root() {
        return;
    }
    let script = format!(
        "mount --bind -o ro /proc/sys /proc/sys && exec {} run --disable-userns -- /bin/true",
        hatchery_tests::bin_dir().join("hatchery").display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "/bin/sh", "-c", &script])
        .env(
            "HATCHERY_SHIM",
            hatchery_tests::bin_dir().join("hatchery-shim"),
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("DisableUserns") && err.contains("/proc/sys is read-only"),
        "{err}"
    );
}
