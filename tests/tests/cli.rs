//! `hatchery run` driven as a user would: the built binary, its flags and its exit codes.

use std::process::{Command, Output};
use std::sync::OnceLock;

use hatchery_tests::{bin_dir, hatchery, is_root, require, text, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

#[test]
fn default_run_lists_the_minimal_root() {
    if !ready() {
        return;
    }
    let out = hatchery(&["run", "--", "/bin/sh", "-c", "id -u; ls /"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let mut lines = s.lines();
    assert_eq!(lines.next(), Some("0"));
    let entries: Vec<&str> = lines.collect();
    for want in ["bin", "etc", "lib", "proc", "usr"] {
        assert!(entries.contains(&want), "{want} missing from {entries:?}");
    }
    for never in ["home", "root", "sys", "boot", "work"] {
        assert!(!entries.contains(&never), "{never} leaked into {entries:?}");
    }
}

#[test]
fn exit_codes_follow_hakoniwa() {
    if !ready() {
        return;
    }
    assert_eq!(
        hatchery(&["run", "--", "/bin/sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(
        hatchery(&["run", "--", "/bin/sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(128 + 15)
    );
    let out = hatchery(&["run", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("FindProgram"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        hatchery(&["run", "--", "/etc/passwd"]).status.code(),
        Some(126)
    );
    let out = hatchery(&["run", "-b", "/no/such/path", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    let out = hatchery(&["run", "--limit-walltime", "0.2", "--", "/bin/sleep", "5"]);
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("wall-time"),
        "{}",
        text(&out.stderr)
    );
    // -q silences hatchery's own messages.
    let out = hatchery(&["run", "-q", "--", "no-such-command"]);
    assert_eq!((out.status.code(), out.stderr.len()), (Some(127), 0));
}

#[test]
fn flags_reach_the_sandbox() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hatchery-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let out = hatchery(&[
        "run",
        "--unshare-all",
        "--hostname",
        "box",
        "--devfs",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--dir",
        "/made:700",
        "--symlink",
        "/proc/self/exe:/me",
        "-B",
        &format!("{d}:/rw"),
        "-b",
        "/etc/hostname:/ro-hostname",
        "-e",
        "GREETING=hi",
        "-w",
        ":/rw",
        "--limit-nofile",
        "33",
        "-u",
        "1234",
        "-g",
        "4321",
        "--",
        "/bin/sh",
        "-c",
        "hostname; echo $GREETING; pwd; id -u; id -g; ulimit -n; stat -c %a /made; readlink /me; \
         cat /ro-hostname >/dev/null && echo ro-ok; echo w > /rw/w && echo rw-ok; ls /dev/null",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert_eq!(
        s.lines().collect::<Vec<_>>(),
        vec![
            "box",
            "hi",
            "/rw",
            "1234",
            "4321",
            "33",
            "700",
            "/proc/self/exe",
            "ro-ok",
            "rw-ok",
            "/dev/null"
        ],
    );
    assert!(dir.join("w").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn verbose_prints_the_plan() {
    if !ready() {
        return;
    }
    let out = hatchery(&[
        "run",
        "-v",
        "--limit-cpu",
        "5",
        "-e",
        "X=1",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    // hakoniwa's setup log lines (`hakoniwa run -v`).
    for want in [
        "DEBUG] Unshare namespaces: MOUNT, PID, USER",
        "Mount: bind_ro: /usr -> /usr",
        "Mount:    proc: /proc",
        "Rlimit: cpu",
        "Env: X=1",
        "Execve: \"/bin/true\", []",
        "Exited: exited with code 0",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let host = if is_root() {
        "65534".to_string()
    } else {
        nix::unistd::geteuid().to_string()
    };
    assert!(
        err.contains(&format!(
            "UID mapping: container_id: 0, host_id: {host}, count: 1"
        )),
        "{err}"
    );
}

#[test]
fn rootfs_none_and_rootdir() {
    if !ready() {
        return;
    }
    // An empty root cannot run /bin/sh: the program is not found.
    assert_eq!(
        hatchery(&["run", "--rootfs", "none", "--", "/bin/sh"])
            .status
            .code(),
        Some(127)
    );
    let out = hatchery(&[
        "run",
        "--rootdir",
        "/",
        "--",
        "/bin/sh",
        "-c",
        "test -d /home && echo host-root",
    ]);
    assert_eq!(text(&out.stdout), "host-root\n", "{}", text(&out.stderr));
}

#[test]
fn the_container_dies_with_its_host_process() {
    if !ready() {
        return;
    }
    let mut cli = Command::new(bin_dir().join("hatchery"))
        .args(["run", "-q", "--", "/bin/sleep", "60"])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .spawn()
        .unwrap();
    // Find the container's init (the CLI's only child) once it exists.
    let children = format!("/proc/{}/task/{}/children", cli.id(), cli.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let shim = loop {
        let s = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = s.split_whitespace().next() {
            break p.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container never started"
        );
        std::thread::yield_now();
    };
    cli.kill().unwrap();
    cli.wait().unwrap();
    // The shim sees its control socket close and takes the container down with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{shim}/stat")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break; // exited, waiting for its (reparented) parent to reap it
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container outlived the host process"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn userns_auto_maps_a_subordinate_range() {
    if !ready() {
        return;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let has_range = std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")));
    let out = hatchery(&[
        "run",
        "--userns",
        "auto",
        "--",
        "/bin/cat",
        "/proc/self/uid_map",
    ]);
    if has_range {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).lines().count(),
            2,
            "{}",
            text(&out.stdout)
        );
    } else {
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("/etc/subuid"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn map_runs_each_file_through_the_pool() {
    if !ready() {
        return;
    }
    let base = std::env::temp_dir().join(format!("hatchery-map-{}", std::process::id()));
    let input = base.join("in");
    let out = base.join("out");
    std::fs::create_dir_all(&input).unwrap();
    for (name, body) in [
        ("a.txt", "hello\n"),
        ("b.txt", "second file\n"),
        ("bad.txt", "FAIL\n"),
    ] {
        std::fs::write(input.join(name), body).unwrap();
    }
    let files: Vec<String> = ["a.txt", "b.txt", "bad.txt"]
        .iter()
        .map(|n| input.join(n).to_string_lossy().into_owned())
        .collect();
    let mut args = vec![
        "map".to_string(),
        "-j".into(),
        "2".into(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
        "-e".into(),
        "SUFFIX=!".into(),
    ];
    args.extend(files);
    args.extend(["--".into(), "/bin/sh".into(), "-c".into(), "v=$(cat); case \"$v\" in *FAIL*) exit 4;; esac; echo \"$v\" | tr a-z A-Z; echo \"$SUFFIX\"".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hatchery(&refs);
    assert_eq!(
        o.status.code(),
        Some(1),
        "one file failed: {}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("a.txt")).unwrap(),
        "HELLO\n!\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("b.txt")).unwrap(),
        "SECOND FILE\n!\n"
    );
    assert!(
        !out.join("bad.txt").exists(),
        "a failed file leaves no partial output"
    );
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let bad = lines
        .iter()
        .find(|l| l["file"].as_str().unwrap().ends_with("bad.txt"))
        .unwrap();
    assert_eq!(
        (
            bad["ok"].as_bool(),
            bad["exit_code"].as_i64(),
            bad["outcome"].as_str()
        ),
        (Some(false), Some(4), Some("exited"))
    );
    let good = lines
        .iter()
        .find(|l| l["file"].as_str().unwrap().ends_with("a.txt"))
        .unwrap();
    assert_eq!(good["bytes_in"].as_u64(), Some(6));
    assert_eq!(good["bytes_out"].as_u64(), Some(8));
    assert!(good["total_us"].as_u64().unwrap() > 0);
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn bench_reports_every_case_as_json() {
    if !ready() {
        return;
    }
    let has_bwrap = std::path::Path::new("/usr/bin/bwrap").exists();
    require(
        has_bwrap,
        "bubblewrap not installed (scripts/deps.sh installs it)",
    );
    let out = hatchery(&["bench", "--requests", "20", "--json", "--breakdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(v["requests"].as_u64(), Some(20));
    assert_eq!(v["concurrency"].as_u64(), Some(1));
    let names: Vec<&str> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let mut want = vec!["direct", "oneshot", "pool-fresh", "pool-dedicated"];
    if has_bwrap {
        want.push("bwrap");
    }
    for w in want {
        assert!(names.contains(&w), "{w} missing from {names:?}");
    }
    for c in v["cases"].as_array().unwrap() {
        assert_eq!(c["failed"].as_u64(), Some(0), "{c}");
        assert!(c["ok"].as_u64().unwrap() >= 20, "{c}");
        for k in ["median_us", "p90_us", "p99_us", "throughput_rps"] {
            assert!(c[k].as_f64().unwrap() > 0.0, "{k} in {c}");
        }
        if c["name"] == "bwrap" {
            assert!(c["command_line"]
                .as_str()
                .unwrap()
                .contains("--unshare-all"));
        }
    }
    let steps = v["oneshot_breakdown"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["step"].as_str().unwrap().contains("pivot_root")),
        "{steps:?}"
    );
}

#[test]
fn map_reports_a_capped_output_as_exceeded_whatever_the_exit_code() {
    if !ready() {
        return;
    }
    // A writer that ignores SIGXFSZ and exits 0 (or 1) after EFBIG: an 8 MiB output under a
    // 4 MiB cap is output_exceeded, not a truncated success.
    let base = std::env::temp_dir().join(format!("hatchery-map-cap-{}", std::process::id()));
    let input = base.join("in");
    let out = base.join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("x"), "x").unwrap();
    for code in [0, 1] {
        let script = format!("trap '' XFSZ; head -c 8M /dev/zero; exit {code}");
        let o = hatchery(&[
            "map",
            "-q",
            "--max-output",
            "4194304",
            "--out",
            &out.to_string_lossy(),
            &input.join("x").to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        let line: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
        assert_eq!(line["ok"].as_bool(), Some(false), "exit {code}: {line}");
        assert_eq!(
            line["outcome"].as_str(),
            Some("output_exceeded"),
            "exit {code}: {line}"
        );
        assert!(!out.join("x").exists(), "no truncated output is kept");
    }
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn run_shares_host_abstract_sockets_unless_the_network_is_unshared() {
    use std::os::linux::net::SocketAddrExt;
    if !ready() {
        return;
    }
    // hakoniwa's default, kept for compatibility: the host's network namespace, so its abstract
    // unix sockets too. --unshare-network (or --unshare-all) closes it.
    let name = format!("hatchery-cli-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let bind = format!("{}:/hatchery-bin", bin_dir().display());
    let attack = "/hatchery-bin/attack";
    let o = hatchery(&["run", "-b", &bind, "--", attack, "abstract-connect", &name]);
    assert_eq!(
        o.status.code(),
        Some(100),
        "reached by default: {}",
        text(&o.stderr)
    );
    assert!(listener.accept().is_ok(), "the host saw the connection");
    for flag in ["--unshare-network", "--unshare-all"] {
        let o = hatchery(&[
            "run",
            flag,
            "-b",
            &bind,
            "--",
            attack,
            "abstract-connect",
            &name,
        ]);
        assert_eq!(
            o.status.code(),
            Some(libc::ECONNREFUSED),
            "{flag}: {}",
            text(&o.stderr)
        );
    }
    let o = hatchery(&["run", "-v", "--", "/bin/true"]);
    assert!(
        text(&o.stderr).contains("Network: the host's"),
        "{}",
        text(&o.stderr)
    );
    let o = hatchery(&["run", "--help"]);
    assert!(text(&o.stdout).contains("--unshare-network"));
}

/// Debian's ImageMagick, not a stand-in earlier on `$PATH`.
const CONVERT: &str = "/usr/bin/convert";

fn map_one(input_body: &str, extra: &[&str], cmd: &[&str]) -> (Output, Option<serde_json::Value>) {
    let base = std::env::temp_dir().join(format!(
        "hatchery-map1-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let input = base.join("input");
    std::fs::write(&input, input_body).unwrap();
    let out = base.join("out");
    let mut args = vec!["map", "-q", "--out"];
    let out_s = out.to_string_lossy().into_owned();
    let in_s = input.to_string_lossy().into_owned();
    args.push(&out_s);
    args.extend_from_slice(extra);
    args.push(&in_s);
    args.push("--");
    args.extend_from_slice(cmd);
    let o = hatchery(&args);
    let line = text(&o.stdout)
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok());
    std::fs::remove_dir_all(&base).ok();
    (o, line)
}

#[test]
fn map_keeps_imagemagicks_security_policy_and_fonts() {
    if !ready()
        || !require(
            std::path::Path::new(CONVERT).exists(),
            "Debian's imagemagick is not installed",
        )
    {
        return;
    }
    let ps = "%!PS\n/Helvetica findfont 20 scalefont setfont 10 10 moveto (hi) show showpage\n";
    // Outside the sandbox Debian's policy refuses the PS coder...
    let mut outside = Command::new(CONVERT)
        .args(["ps:-", "png:-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    outside
        .stdin
        .take()
        .unwrap()
        .write_all(ps.as_bytes())
        .unwrap();
    let outside = outside.wait_with_output().unwrap();
    assert!(!outside.status.success());
    assert!(text(&outside.stderr).contains("security policy"));
    // ...and so it does inside: a sandbox is never weaker than no sandbox.
    let (o, line) = map_one(ps, &[], &[CONVERT, "ps:-", "png:-"]);
    let line = line.unwrap_or_else(|| panic!("no report: {}", text(&o.stderr)));
    assert_eq!(line["ok"], false, "{line}");
    assert!(
        line["stderr"].as_str().unwrap().contains("security policy"),
        "{line}"
    );
    // Text rendering finds its fonts (fontconfig's configuration and cache).
    let (o, line) = map_one("x", &[], &[CONVERT, "-size", "100x30", "label:Hi", "png:-"]);
    let line = line.unwrap_or_else(|| panic!("no report: {}", text(&o.stderr)));
    assert_eq!(line["ok"], true, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 100, "{line}");
    assert_eq!(line["stderr"], "", "{line}");
}

#[test]
fn map_refuses_a_bind_its_per_request_tmp_would_hide() {
    if !ready() {
        return;
    }
    for bind in ["/tmp/hatchery-hidden", "/usr/share:/tmp/share"] {
        let (o, line) = map_one("x", &["-b", bind], &["/bin/cat"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(line.is_none());
        let err = text(&o.stderr);
        assert!(
            err.contains("fresh /tmp") && err.contains(":/data"),
            "{err}"
        );
    }
}

#[test]
fn map_reports_say_why_a_file_failed() {
    if !ready() {
        return;
    }
    // A setup failure: its step, errno and detail.
    let (o, line) = map_one("x", &[], &["nosuchhelper"]);
    let line = line.unwrap_or_else(|| panic!("no report: {}", text(&o.stderr)));
    assert_eq!(line["outcome"], "setup_failed", "{line}");
    assert_eq!(line["setup_step"], "FindProgram", "{line}");
    assert_eq!(line["errno"], libc::ENOENT, "{line}");
    assert!(
        line["detail"].as_str().unwrap().contains("nosuchhelper"),
        "{line}"
    );
    // A seccomp violation: the system call by name, number and arguments.
    // (Bound away from /tmp: the unprivileged run's binaries live under /tmp, which map refuses.)
    let bind = format!("{}:/testbin", hatchery_tests::bin_dir().display());
    let (o, line) = map_one("x", &["-b", &bind], &["/testbin/attack", "keyctl"]);
    let line = line.unwrap_or_else(|| panic!("no report: {}", text(&o.stderr)));
    assert_eq!(line["outcome"], "violation", "{line}");
    assert_eq!(line["violation"]["syscall"], "keyctl", "{line}");
    assert_eq!(line["violation"]["nr"], libc::SYS_keyctl, "{line}");
    assert_eq!(
        line["violation"]["args"].as_array().unwrap().len(),
        6,
        "{line}"
    );
}

#[test]
fn etc_flag_shares_configuration_never_secrets() {
    if !ready() {
        return;
    }
    let o = hatchery(&["run", "--etc", "shadow", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("never shared"),
        "{}",
        text(&o.stderr)
    );
    let o = hatchery(&["run", "--etc", "../root", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    let o = hatchery(&[
        "run",
        "--etc",
        "passwd",
        "--",
        "/bin/sh",
        "-c",
        "test -s /etc/passwd",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

fn map_dir(tag: &str) -> std::path::PathBuf {
    let base = std::env::temp_dir().join(format!("hatchery-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("in/sub")).unwrap();
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    base
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn map_names_outputs_walks_directories_and_reads_lists() {
    if !ready() {
        return;
    }
    let base = map_dir("map-names");
    std::fs::write(base.join("in/a.jpg"), "A").unwrap();
    std::fs::write(base.join("in/sub/b.jpg"), "B").unwrap();
    std::fs::write(base.join("c.txt"), "C").unwrap();
    std::fs::write(
        base.join("list"),
        format!("{}\n", base.join("c.txt").display()),
    )
    .unwrap();
    let out = base.join("out");
    let o = hatchery(&[
        "map",
        "-q",
        "--out",
        &out.to_string_lossy(),
        "--name",
        "{stem}.{ext}.png",
        "--files-from",
        &base.join("list").to_string_lossy(),
        &base.join("in").to_string_lossy(),
        "--",
        "/bin/sh",
        "-c",
        "cat; echo \" $HATCHERY_INPUT_NAME\"",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(json_lines(&o).len(), 3);
    for (name, body) in [
        ("a.jpg.png", "A a.jpg\n"),
        ("b.jpg.png", "B b.jpg\n"),
        ("c.txt.png", "C c.txt\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(out.join(name)).unwrap(),
            body,
            "{name}"
        );
    }
    // Two inputs with one output name are a usage error (exit 2), before anything runs.
    std::fs::write(base.join("in/sub/a.png"), "x").unwrap();
    let o = hatchery(&[
        "map",
        "-q",
        "--out",
        &out.to_string_lossy(),
        "--name",
        "{stem}",
        &base.join("in").to_string_lossy(),
        "--",
        "/bin/cat",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("same output"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn map_cancelled_by_sigint_removes_partial_outputs_and_reports_every_file() {
    if !ready() {
        return;
    }
    let base = map_dir("map-cancel");
    for i in 0..4 {
        std::fs::write(base.join(format!("in/f{i}")), format!("{i}\n")).unwrap();
    }
    let out = base.join("out");
    let child = Command::new(bin_dir().join("hatchery"))
        .args([
            "map",
            "-q",
            "-j",
            "2",
            "--out",
            &out.to_string_lossy(),
            &base.join("in").to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            // Writes part of its output, says it is running, then hangs.
            "cat; echo started > /dev/stderr; sleep 60",
        ])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Readiness: both running files have created (and written) their outputs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&out)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.metadata().is_ok_and(|m| m.len() > 0))
            })
            .count()
        })
        .unwrap_or(0)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the files never started"
        );
        std::thread::yield_now();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["outcome"] == "cancelled" && l["output"].is_null()),
        "{lines:?}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "partial outputs were left"
    );
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn run_profile_default_and_hints_that_name_the_cause() {
    if !ready() {
        return;
    }
    // The secure default in one flag: /dev, a writable /tmp, the host's configuration, its own
    // network namespace.
    let o = hatchery(&[
        "run",
        "--profile",
        "default",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /dev/null && echo y > /tmp/y && cat /tmp/y && test -d /etc/ssl/certs -o ! -d /etc/ssl/certs && ! test -e /etc/shadow && cat /proc/net/dev | wc -l",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("y"));
    // Header (2 lines) + loopback only.
    assert_eq!(lines.next(), Some("3"), "{out}");
    let o = hatchery(&["run", "--profile", "nope", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(2));
    // hakoniwa's default has no /dev and no /tmp: a failure says so.
    let o = hatchery(&["run", "--", "/bin/sh", "-c", "echo x > /tmp/y"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("no /dev and no /tmp"),
        "{}",
        text(&o.stderr)
    );
    // A program outside every mount is named, with the bind that fixes it.
    let dir = std::env::temp_dir().join(format!("hatchery-outside-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("prog");
    std::fs::write(&prog, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = hatchery(&["run", "--", &prog.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("not inside any mount") && err.contains(&format!("-b {}", dir.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn map_gives_helpers_that_need_a_path_a_read_only_copy() {
    if !ready() {
        return;
    }
    // `/dev/stdin` is refused by landlock (it reopens the host's file); `{input}` is a copy in
    // the request's own /tmp.
    let (o, line) = map_one(
        "by path\n",
        &[],
        &[
            "/bin/sh",
            "-c",
            "cat \"$1\"; if echo x >> \"$1\"; then echo writable; fi; case \"$1\" in /tmp/*) ;; *) exit 9;; esac",
            "sh",
            "{input}",
        ],
    );
    let line = line.unwrap_or_else(|| panic!("no report: {}", text(&o.stderr)));
    assert_eq!(line["ok"], true, "{line}");
    assert_eq!(line["bytes_out"], 8, "{line}");
}
