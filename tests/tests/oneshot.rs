//! End-to-end tests of the one-shot API (`Container`/`Command`/`Child`), checked from inside the
//! sandbox. They run as root and as an unprivileged user (see `scripts/test.sh`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::{Container, Error, Namespace, Outcome, Rlimit, SetupStep, Stdio};
use hatchery_tests::{bin_dir, child_pids, is_root, require, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

fn base() -> Container {
    let mut c = Container::new();
    c.rootfs("/")
        .unwrap()
        .devfsmount("/dev")
        .tmpfsmount("/tmp")
        .bindmount_ro(&bin_dir().to_string_lossy(), "/hatchery-bin");
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
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (mount point, options) pairs from /proc/self/mountinfo inside the sandbox.
fn mounts(c: &Container) -> Vec<(String, String)> {
    stdout(c, "cat /proc/self/mountinfo")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let super_opts = f.last().copied().unwrap_or_default();
            (f[4].to_string(), format!("{},{}", f[5], super_opts))
        })
        .collect()
}

fn opts_of<'a>(m: &'a [(String, String)], point: &str) -> &'a str {
    &m.iter()
        .rev()
        .find(|(p, _)| p == point)
        .unwrap_or_else(|| panic!("{point} not mounted: {m:?}"))
        .1
}

#[test]
fn mount_flags_are_as_configured() {
    if !ready() {
        return;
    }
    let host_dir = tempdir();
    let mut c = base();
    c.bindmount_rw(&host_dir, "/data").procfsmount("/proc");
    let m = mounts(&c);
    let root = opts_of(&m, "/");
    assert!(root.starts_with("ro,"), "root must be read-only: {root}");
    let usr = opts_of(&m, "/usr");
    for f in ["ro", "nosuid", "nodev"] {
        assert!(usr.split(',').any(|o| o == f), "/usr lacks {f}: {usr}");
    }
    let data = opts_of(&m, "/data");
    assert!(
        data.starts_with("rw,") && data.contains("nosuid") && data.contains("nodev"),
        "{data}"
    );
    let tmp = opts_of(&m, "/tmp");
    assert!(
        tmp.starts_with("rw,") && tmp.contains("nosuid") && tmp.contains("nodev"),
        "{tmp}"
    );
    let proc_ = opts_of(&m, "/proc");
    for f in ["nosuid", "nodev", "noexec"] {
        assert!(proc_.contains(f), "/proc lacks {f}: {proc_}");
    }
    // Nothing of the host's tree but what was asked for.
    assert!(!m
        .iter()
        .any(|(p, _)| p == "/home" || p == "/root" || p == "/sys"));
    // Writes: allowed where rw, refused where ro.
    let out = sh(
        &c,
        "echo x > /data/f && echo x > /tmp/f && (echo x > /usr/f) 2>/dev/null; echo $?",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert!(std::path::Path::new(&host_dir).join("f").exists());
    std::fs::remove_dir_all(&host_dir).ok();
}

fn tempdir() -> String {
    let d = std::env::temp_dir().join(format!(
        "hatchery-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    // A root host maps the guest to nobody, which must be able to write here.
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d.to_string_lossy().into_owned()
}

#[test]
fn id_maps_never_expose_host_root() {
    if !ready() {
        return;
    }
    let c = base();
    let maps = stdout(
        &c,
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
    );
    let lines: Vec<Vec<&str>> = maps
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (want_uid, want_gid) = if is_root() {
        ("65534".to_string(), "65534".to_string())
    } else {
        (
            nix::unistd::geteuid().to_string(),
            nix::unistd::getegid().to_string(),
        )
    };
    assert_eq!(lines[0], vec!["0", want_uid.as_str(), "1"]);
    assert_eq!(lines[1], vec!["0", want_gid.as_str(), "1"]);
    assert_eq!(lines[2], vec!["0"]);
    assert_eq!(lines[3], vec!["0"]);

    // Seen from the host, the container's processes are never uid 0.
    let mut child = c.command("/bin/sleep").arg("10").spawn().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == want_uid),
        "shim runs as {uid_line}"
    );
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal, Some(libc::SIGKILL));
}

#[test]
fn custom_uid_and_gid() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.uidmap(1000).gidmap(1001);
    assert_eq!(stdout(&c, "id -u; id -g"), "1000\n1001\n");
}

fn has_subid_range() -> bool {
    let name = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    is_root()
        || (std::path::Path::new("/usr/bin/newuidmap").exists()
            && std::fs::read_to_string("/etc/subuid")
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{name}:"))))
}

#[test]
fn multi_range_id_maps() {
    if !ready()
        || !require(
            has_subid_range(),
            "no newuidmap or /etc/subuid range for this user",
        )
    {
        return;
    }
    let (sub_u, sub_g) = if is_root() {
        (200_000, 200_000)
    } else {
        let name = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let first = |f: &str| -> u32 {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .find_map(|l| {
                    let mut p = l.split(':');
                    (p.next()? == name).then(|| p.next()?.parse().ok())?
                })
                .unwrap()
        };
        (first("/etc/subuid"), first("/etc/subgid"))
    };
    let own_u = hatchery::idmap::default_host_uid();
    let own_g = hatchery::idmap::default_host_gid();
    let mut c = base();
    c.uidmaps(&[(0, own_u, 1), (1, sub_u, 1000)])
        .gidmaps(&[(0, own_g, 1), (1, sub_g, 1000)]);
    let out = stdout(&c, "cat /proc/self/uid_map");
    let lines: Vec<Vec<String>> = out
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[1],
        vec!["1".to_string(), sub_u.to_string(), "1000".to_string()]
    );
    // A user from the second range, resolved in the container's /etc.
    c.file(
        "/etc/passwd",
        "root:x:0:0::/:/bin/sh\nworker:x:500:500::/:/bin/sh\n",
    )
    .file("/etc/group", "root:x:0:\nworker:x:500:\nextra:x:501:\n")
    .user("worker", None, &["extra"]);
    assert_eq!(stdout(&c, "id -u; id -g; id -G"), "500\n500\n500 501\n");
}

#[test]
fn host_root_in_a_map_is_refused() {
    let mut c = Container::new();
    c.uidmaps(&[(0, 0, 1)]);
    let err = c.command("/bin/true").status().unwrap_err();
    assert!(matches!(err, Error::HostRootMapped { .. }), "{err}");
}

#[test]
fn hostname_and_namespaces() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.hostname("sandbox")
        .unshare(Namespace::Ipc)
        .unshare(Namespace::Network)
        .unshare(Namespace::Cgroup);
    let out = stdout(
        &c,
        "cat /proc/sys/kernel/hostname; ls /sys/class/net 2>/dev/null | wc -l; cat /proc/net/dev | wc -l; echo $$",
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "sandbox");
    // Network namespace: only the loopback device in /proc/net/dev (2 header lines + lo).
    assert_eq!(l[2], "3", "{out}");
    // Pid namespace: the shell is pid 2 (the shim is 1).
    assert_eq!(l[3], "2");
    let host_ns = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
    let inside = stdout(&c, "readlink /proc/self/ns/ipc /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/cgroup /proc/self/ns/user /proc/self/ns/mnt /proc/self/ns/pid");
    for (line, ns) in inside
        .lines()
        .zip(["ipc", "net", "uts", "cgroup", "user", "mnt", "pid"])
    {
        assert_ne!(
            std::path::PathBuf::from(line),
            host_ns(ns),
            "{ns} namespace shared with the host"
        );
    }
}

#[test]
fn all_sixteen_rlimits() {
    if !ready() {
        return;
    }
    let mut c = base();
    let cases = [
        (Rlimit::As, "Max address space", 1 << 34),
        (Rlimit::Core, "Max core file size", 0),
        (Rlimit::Cpu, "Max cpu time", 100),
        (Rlimit::Data, "Max data size", 1 << 33),
        (Rlimit::Fsize, "Max file size", 1 << 30),
        (Rlimit::Locks, "Max file locks", 100),
        (Rlimit::Memlock, "Max locked memory", 65536),
        (Rlimit::Msgqueue, "Max msgqueue size", 4096),
        (Rlimit::Nice, "Max nice priority", 0),
        (Rlimit::Nofile, "Max open files", 64),
        (Rlimit::Nproc, "Max processes", 1000),
        (Rlimit::Rss, "Max resident set", 1 << 30),
        (Rlimit::Rtprio, "Max realtime priority", 0),
        (Rlimit::Rttime, "Max realtime timeout", 1000),
        (Rlimit::Sigpending, "Max pending signals", 100),
        (Rlimit::Stack, "Max stack size", 1 << 23),
    ];
    for (r, _, v) in cases {
        c.setrlimit(r, v, v);
    }
    let limits = stdout(&c, "cat /proc/self/limits");
    for (_, name, v) in cases {
        let line = limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing"));
        let nums: Vec<&str> = line[name.len()..].split_whitespace().collect();
        assert_eq!(nums[0], v.to_string(), "{line}");
        assert_eq!(nums[1], v.to_string(), "{line}");
    }
}

#[test]
fn core_dumps_are_off_by_default() {
    if !ready() {
        return;
    }
    let limits = stdout(&base(), "cat /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("0"), "{line}");
}

#[test]
fn environment_is_empty_unless_set_and_cwd_is_honoured() {
    if !ready() {
        return;
    }
    std::env::set_var("HATCHERY_SECRET", "leak");
    let c = base();
    let out = c.command("/usr/bin/env").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = c
        .command("/usr/bin/env")
        .env("A", "1")
        .envs([("B", "two words")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A=1\nB=two words\n");
    let out = c
        .command("/bin/pwd")
        .current_dir("/usr/lib")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/usr/lib\n");
    let out = c.command("/bin/pwd").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/\n");
}

#[test]
fn relative_programs_are_found_on_path_inside() {
    if !ready() {
        return;
    }
    let out = base().command("echo").arg("found").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "found\n");
}

#[test]
fn only_given_fds_reach_the_command() {
    if !ready() {
        return;
    }
    // A leaky host fd (not close-on-exec) must not reach the command.
    let leak = std::fs::File::open("/etc/hostname").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    nix::fcntl::fcntl(
        raw,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let c = base();
    let out = c.command("/hatchery-bin/probe-fds").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 1 2");

    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(b"through fd 7").unwrap();
    drop(w);
    let out = c
        .command("/hatchery-bin/read-fd")
        .arg("7")
        .fd(OwnedFd::from(r), 7)
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through fd 7");
    let out = c
        .command("/hatchery-bin/probe-fds")
        .fd(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()), 9)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 1 2 9");
    drop(leak);
}

#[test]
fn no_capabilities_no_new_privs_new_session() {
    if !ready() {
        return;
    }
    let status = stdout(&base(), "cat /proc/self/status; cat /proc/self/stat");
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert_eq!(
            line.split_whitespace().nth(1),
            Some("0000000000000000"),
            "{line}"
        );
    }
    let nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .unwrap();
    assert!(nnp.ends_with('1'), "{nnp}");
    // /proc/self/stat of `cat`: field 6 is the session, field 7 the controlling tty.
    let stat = status.lines().last().unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    assert_eq!(f[2], "2", "the shell (pid 2) leads the session: {stat}");
    assert_eq!(f[4], "0", "no controlling tty: {stat}");
}

#[test]
fn exit_status_paths() {
    if !ready() {
        return;
    }
    let c = base();
    let st = c
        .command("/bin/sh")
        .args(["-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!((st.code, st.exit_code, st.signal), (3, Some(3), None));
    assert!(!st.success());
    assert_eq!(st.outcome, Outcome::Exited(3));
    let r = st.rusage.unwrap();
    assert!(r.real_time > Duration::ZERO && r.max_rss > 0, "{r:?}");

    let st = c
        .command("/bin/sh")
        .args(["-c", "kill -SEGV $$"])
        .status()
        .unwrap();
    assert_eq!(
        (st.code, st.signal),
        (128 + libc::SIGSEGV, Some(libc::SIGSEGV))
    );
    assert!(st.reason.contains("SIGSEGV"), "{}", st.reason);

    let t = Instant::now();
    let st = c
        .command("/bin/sleep")
        .arg("10")
        .wait_timeout(Duration::from_millis(200))
        .status()
        .unwrap();
    assert!(st.timed_out && st.outcome == Outcome::TimedOut, "{st:?}");
    assert_eq!(st.code, 128 + libc::SIGKILL);
    assert!(t.elapsed() < Duration::from_secs(5));

    let mut c2 = base();
    c2.setrlimit(Rlimit::Cpu, 1, 1);
    let st = c2
        .command("/bin/sh")
        .args(["-c", "while :; do :; done"])
        .status()
        .unwrap();
    assert_eq!(st.outcome, Outcome::CpuTimeExceeded, "{st:?}");
    assert!(
        st.rusage.unwrap().user_time + st.rusage.unwrap().system_time >= Duration::from_millis(900)
    );
}

#[test]
fn timeouts_kill_the_whole_tree() {
    if !ready() {
        return;
    }
    let dir = tempdir();
    let mut c = base();
    c.bindmount_rw(&dir, "/out");
    // A background grandchild that would write after the deadline; it and the shell hold the
    // lifeline (fd 3), whose hang-up says both are gone.
    let line = hatchery_tests::Lifeline::new(std::path::Path::new(&dir));
    let st = c
        .command("/bin/sh")
        .args([
            "-c",
            "exec 3>/out/lifeline; (sleep 1; echo late > /out/late) & sleep 10",
        ])
        .wait_timeout(Duration::from_millis(300))
        .status()
        .unwrap();
    assert!(st.timed_out);
    assert!(
        line.all_gone_within(Duration::from_secs(5)),
        "a process outlived the timeout"
    );
    assert!(!std::path::Path::new(&dir).join("late").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn setup_failures_never_run_the_command() {
    if !ready() {
        return;
    }
    let dir = tempdir();
    let marker = std::path::Path::new(&dir).join("ran");
    let run = |c: &mut Container| {
        c.bindmount_rw(&dir, "/out");
        c.command("/bin/sh").args(["-c", "touch /out/ran"]).status()
    };
    let mut c = base();
    c.bindmount_ro("/nonexistent/host/path", "/x");
    match run(&mut c) {
        Err(Error::Setup {
            step: SetupStep::BindMount,
            errno,
            ..
        }) => assert_eq!(errno, libc::ENOENT),
        other => panic!("{other:?}"),
    }
    let mut c = base();
    c.user("no-such-user", None, &[]);
    assert!(matches!(
        run(&mut c),
        Err(Error::Setup {
            step: SetupStep::ResolveUser,
            ..
        })
    ));
    let mut c = base();
    c.setrlimit(Rlimit::Nofile, 10, 5); // soft above hard: EINVAL
    assert!(matches!(
        run(&mut c),
        Err(Error::Setup {
            step: SetupStep::Rlimit,
            errno: libc::EINVAL,
            ..
        })
    ));
    let mut c = base();
    c.bindmount_rw(&dir, "/out");
    let err = c
        .command("/bin/sh")
        .current_dir("/nope")
        .args(["-c", "touch /out/ran"])
        .status()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Setup {
                step: SetupStep::Chdir,
                errno: libc::ENOENT,
                ..
            }
        ),
        "{err}"
    );
    let err = base().command("no-such-program").status().unwrap_err();
    assert!(matches!(
        err,
        Error::Setup {
            step: SetupStep::FindProgram,
            ..
        }
    ));
    assert_eq!(err.exit_code(), 127);
    let mut c = base();
    c.file_with_mode("/opt/data", "not a program", 0o644);
    let err = c.command("/opt/data").status().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Setup {
                step: SetupStep::Exec,
                errno: libc::EACCES,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 126);
    let mut c = base();
    c.bindmount_ro("/usr", "relative/path");
    assert!(matches!(
        c.command("/bin/true").status(),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(!marker.exists(), "the command ran although setup failed");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stdio_variants() {
    if !ready() {
        return;
    }
    let c = base();
    // Piped stdin and stdout through spawn.
    let mut child = c
        .command("/bin/cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"round trip")
        .unwrap();
    let mut s = String::new();
    child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "round trip");
    assert!(child.wait().unwrap().success());
    // Null stdin; stderr captured separately.
    let out = c
        .command("/bin/sh")
        .args(["-c", "cat; echo err >&2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b""[..], &b"err\n"[..])
    );
    // Any fd: a host file as stdout.
    let path = std::path::Path::new(&tempdir()).join("out");
    let f = std::fs::File::create(&path).unwrap();
    let st = c
        .command("/bin/echo")
        .arg("to a file")
        .stdout(f)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to a file\n");
}

#[test]
fn child_handle_operations() {
    if !ready() {
        return;
    }
    let c = base();
    let before = child_pids();
    let mut child = c.command("/bin/sleep").arg("30").spawn().unwrap();
    assert!(child.id() > 0);
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal, Some(libc::SIGKILL));
    assert!(child.try_wait().unwrap().is_some());
    // Dropping an unwaited child kills and reaps its container.
    let child = c.command("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    drop(child);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container outlived its handle"
    );
    assert!(!child_pids().contains(&(pid as i32)), "zombie left behind");
    let _ = before;
}

#[test]
fn files_dirs_symlinks_and_devfs() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.file("/srv/greeting", "hello\n")
        .file("/etc/hostname", "replaced\n")
        .file_with_mode("/opt/run.sh", "#!/bin/sh\necho script ran\n", 0o755)
        .dir("/work/a/b", 0o700)
        .symlink("/srv/greeting", "/work/link");
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap();
    let out = stdout(
        &c,
        "cat /etc/hostname; cat /work/link; /opt/run.sh; stat -c %a /work/a/b; ls /dev | tr '\\n' ' '; echo; echo > /dev/null && head -c 4 /dev/urandom | wc -c",
    );
    let mut l: Vec<&str> = out.lines().collect();
    assert_eq!(l.remove(0), "replaced");
    assert_eq!(
        std::fs::read_to_string("/etc/hostname").unwrap(),
        host_hostname,
        "host file changed"
    );
    assert_eq!(l[0], "hello");
    assert_eq!(l[1], "script ran");
    assert_eq!(l[2], "700");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr",
        "pts", "ptmx", "shm",
    ] {
        assert!(
            l[3].split_whitespace().any(|x| x == d),
            "/dev lacks {d}: {}",
            l[3]
        );
    }
    assert_eq!(l[4], "4");
}

#[test]
fn rootdir_as_root() {
    if !ready() {
        return;
    }
    let mut c = Container::new();
    c.rootdir("/").tmpfsmount("/tmp");
    let out = stdout(
        &c,
        "test -d /home && echo yes; (touch /usr/x) 2>/dev/null || echo ro",
    );
    assert_eq!(out, "yes\nro\n");
}

/// The shim joins the container's cgroups itself on cgroup v1 (a `tasks` write of `0`, which
/// skips the kernel's global threadgroup lock) and is cloned into it on v2: the shim (pid 1) and
/// the command must both be in them, in every hierarchy that holds a limit (the limits
/// themselves are the adversarial tests' memory hog and fork bomb). With a cgroup namespace,
/// that cgroup is the namespace's root (`/`), and no host path shows.
#[test]
fn the_shim_and_the_command_are_in_the_containers_cgroups() {
    if !ready() {
        return;
    }
    if hatchery_tests::cgroup_parents().is_empty() {
        eprintln!("limits are rlimits for this unprivileged user: no cgroups");
        return;
    }
    let mechanism = hatchery::cgroup::mechanism();
    let controllers: &[&str] = match mechanism {
        hatchery::cgroup::Mechanism::CgroupV1 => &["memory", "pids"],
        _ => &[""],
    };
    let own = hatchery_tests::cgroup_of;
    let ours = format!("hatchery-{}-", std::process::id());
    for cgroup_ns in [false, true] {
        let mut c = base();
        c.cgroup_memory(256 << 20).cgroup_pids_limit(64);
        if cgroup_ns {
            c.unshare(Namespace::Cgroup);
        }
        let out = stdout(&c, "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup");
        let mut parts = out.split("--\n");
        let (cmd, shim) = (parts.next().unwrap(), parts.next().unwrap());
        for ctl in controllers {
            for (who, text) in [("command", cmd), ("shim", shim)] {
                let path = own(text, ctl).unwrap_or_default();
                if cgroup_ns {
                    assert_eq!(
                        path, "/",
                        "{who}'s {ctl:?} cgroup is not its namespace's root:\n{out}"
                    );
                } else {
                    assert!(
                        path.contains(&ours),
                        "{who} is not in the container's {ctl:?} cgroup: {path:?}\n{out}"
                    );
                }
            }
            assert_eq!(own(cmd, ctl), own(shim, ctl), "{ctl}: {out}");
        }
    }
}

/// Consecutive binds reuse the directory the previous mount point was made in; a mount over
/// that directory in between (a tmpfs, or a bind of a directory onto it) must be seen: the next
/// bind lands on the new mount, and what the covered directory held is hidden.
#[test]
fn a_bind_after_a_mount_over_its_directory_lands_on_that_mount() {
    if !ready() {
        return;
    }
    let dir = std::path::PathBuf::from(tempdir());
    let one = dir.join("one");
    let two = dir.join("two");
    std::fs::write(&one, "first\n").unwrap();
    std::fs::write(&two, "second\n").unwrap();
    let cover = dir.join("cover");
    std::fs::create_dir(&cover).unwrap();
    // The mount point of /data/b is made in it, by a guest that is nobody to a root host.
    std::fs::set_permissions(&cover, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(cover.join("held"), "held\n").unwrap();
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let script = "ls /data; cat /data/b";

    // hakurei's ops run in the order given (the hakoniwa-style mounts go by path).
    use hatchery::BindFlags;
    let mut c = base();
    c.bind_with(one, "/data/a", BindFlags::NONE)
        .mount_tmpfs("/data", 1 << 20, 0o755)
        .bind_with(two, "/data/b", BindFlags::NONE);
    assert_eq!(stdout(&c, script), "b\nsecond\n");

    let mut c = base();
    c.bind_with(one, "/data/a", BindFlags::NONE)
        .bind_with(&cover, "/data", BindFlags::WRITABLE)
        .bind_with(two, "/data/b", BindFlags::NONE);
    assert_eq!(stdout(&c, script), "b\nheld\nsecond\n");
    std::fs::remove_dir_all(&dir).ok();
}

/// A plan that already carries the most fds a plan may (stdio and 61 passed fds) leaves no room
/// for the cgroup v1 `tasks` files the shim joins with: the host attaches the shim itself, and
/// the command still starts in its cgroup.
#[test]
fn a_command_with_the_most_passed_fds_still_starts_in_its_cgroup() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.cgroup_memory(256 << 20).cgroup_pids_limit(64);
    let mut cmd = c.command("/bin/sh");
    cmd.args(["-c", "cat /proc/self/cgroup; ls /proc/self/fd | wc -l"]);
    for target in 3..64 {
        let (r, _w) = nix::unistd::pipe().unwrap();
        cmd.fd(r, target);
    }
    let out = cmd.output().expect("spawn with 64 fds");
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    if !hatchery_tests::cgroup_parents().is_empty() {
        let ours = format!("hatchery-{}-", std::process::id());
        assert!(text.contains(&ours), "not in its cgroup:\n{text}");
    }
    let fds: usize = text.lines().last().unwrap().trim().parse().unwrap();
    // 64 passed (0-63) plus the one ls opens to list them.
    assert_eq!(fds, 65, "{text}");
}

/// A tree that fails to build in a container with a cgroup (the shim joined it first) is
/// reported as the failed step, not as a lost shim.
#[test]
fn a_setup_failure_while_the_cgroup_is_made_is_reported_as_its_step() {
    if !ready() {
        return;
    }
    let mut c = base();
    c.cgroup_memory(256 << 20)
        .cgroup_pids_limit(64)
        .bindmount_ro("/nonexistent-hatchery-source", "/x");
    match c.command("/bin/true").status() {
        Err(Error::Setup {
            step: SetupStep::BindMount,
            errno,
            ..
        }) => assert_eq!(errno, libc::ENOENT),
        other => panic!("expected a setup error at BindMount, got {other:?}"),
    }
}

/// The host starts the shim with every signal blocked (so no host handler can run in the child
/// before its exec): the command must start with none blocked, whatever the host thread's mask,
/// and with only what it inherits ignored (nothing of the shim's).
#[test]
fn the_command_starts_with_no_signal_blocked() {
    if !ready() {
        return;
    }
    let c = base();
    let out = c
        .command("/bin/grep")
        .args(["-E", "^Sig(Blk|Ign):", "/proc/self/status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == "SigBlk:\t0000000000000000"),
        "the command starts with signals blocked: {text}"
    );
    // The shim ignores SIGPIPE for itself; the command gets the default back.
    let ignored = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .expect("SigIgn");
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE stays ignored in the command: {text}"
    );
}
