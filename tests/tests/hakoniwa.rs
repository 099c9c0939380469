//! `hatchery run` as a hakoniwa-cli 1.8.0 user would drive it: the flags that behave as in
//! hakoniwa, `-c` profiles, and `--network`. Each test runs as root and as an unprivileged
//! user (scripts/test.sh runs the suite again as `hatchery-test`).

use std::path::{Path, PathBuf};
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

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    text(&o.stdout)
}

/// A fresh directory under the temp dir, world-writable so the guest (nobody as root) can use
/// it.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hatchery-hk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    set_mode(&d, 0o777);
    d
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

fn bin_bind() -> String {
    format!("{}:/hatchery-bin", bin_dir().display())
}

fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The host uid the guest's root is by default: nobody as root, yourself otherwise.
fn default_host_uid() -> u32 {
    if is_root() {
        65534
    } else {
        own_uid()
    }
}

#[test]
fn landlock_path_lists_split_on_colons_and_commas() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "-vv",
        "--landlock-fs-rx",
        "/usr:/etc,/proc",
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/hostname > /dev/null 2>&1; echo ran",
    ]);
    assert_eq!(ok(&o), "ran\n");
    let err = text(&o.stderr);
    for want in [
        "Landlock: fs",
        "Landlock FS rule: r-x /usr",
        "Landlock FS rule: r-x /etc",
        "Landlock FS rule: r-x /proc",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn id_maps_take_ranges_and_repeat() {
    if !ready() {
        return;
    }
    // CONTAINER_ID alone: your id (nobody as root), one id.
    let o = hatchery(&[
        "run",
        "-u",
        "5",
        "-g",
        "6",
        "--",
        "/bin/sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map",
    ]);
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["5", "6"], "{out}");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(map, ["5", &default_host_uid().to_string(), "1"]);
    // CONTAINER_ID:HOST_ID:COUNT, repeated: several ranges (written directly as root, through
    // newuidmap and /etc/subuid otherwise).
    let (host, start, count) = if is_root() {
        (65534, 300_000, 1000)
    } else {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let sub = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let sub_g = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
        let find = |t: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{user}:")))
                .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        };
        let (Some(u), Some(_)) = (find(&sub), find(&sub_g)) else {
            require(false, "no /etc/subuid and /etc/subgid range for this user");
            return;
        };
        (
            own_uid(),
            u[1].parse().unwrap(),
            u[2].parse::<u32>().unwrap().min(1000),
        )
    };
    let gid_host = if is_root() {
        65534
    } else {
        nix::unistd::getegid().as_raw()
    };
    let u0 = format!("0:{host}:1");
    let u1 = format!("1:{start}:{count}");
    let g0 = format!("0:{gid_host}:1");
    let o = hatchery(&[
        "run",
        "-u",
        &u0,
        "-u",
        &u1,
        "-g",
        &g0,
        "-g",
        &u1,
        "--",
        "/bin/cat",
        "/proc/self/uid_map",
    ]);
    let out = ok(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["0", &host.to_string(), "1"],
            vec!["1", &start.to_string(), &count.to_string()]
        ]
    );
    // The guest is never host root.
    let o = hatchery(&["run", "-u", "0:0:1", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("host id 0"), "{}", text(&o.stderr));
}

#[test]
fn verbose_logs_setup_as_hakoniwa_and_vv_the_rules() {
    if !ready() {
        return;
    }
    let o = hatchery(&["run", "--", "/bin/true"]);
    assert_eq!((o.status.code(), o.stderr.len()), (Some(0), 0));
    let o = hatchery(&[
        "run",
        "-v",
        "--unshare-all",
        "--limit-nofile",
        "64",
        "--dir",
        "/made",
        "--",
        "/bin/sh",
        "-c",
        "true",
    ]);
    ok(&o);
    let err = text(&o.stderr);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "X8664",
        "aarch64" => "Aarch64",
        other => other,
    };
    for want in [
        "Unshare namespaces: CGROUP, IPC, MOUNT, NETWORK, PID, USER, UTS".to_string(),
        "Mount: bind_ro: /usr -> /usr".to_string(),
        "FsOperation:   mkdir: /made".to_string(),
        format!(
            "UID mapping: container_id: 0, host_id: {}, count: 1",
            default_host_uid()
        ),
        "GID mapping: container_id: 0".to_string(),
        "Rlimit: nofile".to_string(),
        format!("rules for architectures({arch})"),
        "Seccomp: Load ".to_string(),
        "Execve: \"/bin/sh\", [\"-c\", \"true\"]".to_string(),
        "================================".to_string(),
        "Exited: exited with code 0".to_string(),
        "Metric:      RealTime:".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.lines().all(|l| l.starts_with('[')), "{err}");
    assert!(!err.contains("Seccomp rule:"), "-v shows no rules: {err}");
    let o = hatchery(&["run", "-vv", "--limit-nofile", "64", "--", "/bin/true"]);
    ok(&o);
    let err = text(&o.stderr);
    for want in [
        "Seccomp rule: ... -> ",
        "Seccomp rule: mount(..) -> ",
        "Rlimit rule:  nofile: (64, 64)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn dir_defaults_to_mode_700() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "--dir",
        "/made",
        "--dir",
        "/open:755",
        "--",
        "/bin/stat",
        "-c",
        "%a",
        "/made",
        "/open",
    ]);
    assert_eq!(ok(&o), "700\n755\n");
}

#[test]
fn setenv_without_a_host_value_is_empty() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "-e",
        "HATCHERY_SURELY_UNSET_VAR",
        "--",
        "/bin/sh",
        "-c",
        "echo \"[${HATCHERY_SURELY_UNSET_VAR-unset}]\"",
    ]);
    assert_eq!(ok(&o), "[]\n");
}

#[test]
fn rootfs_none_with_explicit_binds_runs_the_command() {
    if !ready() {
        return;
    }
    // hakoniwa's example: an empty root and the system directories bound by hand. On a
    // merged-/usr host `-b /bin` binds /usr/bin at /bin (the path as given).
    let mut args = vec!["run", "--rootfs", "none"];
    for d in ["/bin", "/lib", "/lib64", "/usr"] {
        if Path::new(d).exists() {
            args.extend(["-b", d]);
        }
    }
    args.extend(["--", "/bin/sh", "-c", "ls /; echo done"]);
    let out = ok(&hatchery(&args));
    let entries: Vec<&str> = out.lines().collect();
    for want in ["bin", "lib", "proc", "usr", "done"] {
        assert!(entries.contains(&want), "{want} missing from {entries:?}");
    }
    assert!(!entries.contains(&"etc"), "{entries:?}");
}

#[test]
fn rootdir_without_a_bin_gets_the_default_rootfs() {
    if !ready() {
        return;
    }
    // As hakoniwa: --rootdir DIR binds the default --rootfs / into it unless DIR has a /bin.
    let d = scratch("rootdir");
    std::fs::write(d.join("marker"), "m\n").unwrap();
    set_mode(&d.join("marker"), 0o644);
    let o = hatchery(&[
        "run",
        "--rootdir",
        &d.to_string_lossy(),
        "--",
        "/bin/sh",
        "-c",
        "cat /marker; test -d /usr && echo usr",
    ]);
    assert_eq!(ok(&o), "m\nusr\n");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_relative_program_is_found_on_the_host_path() {
    if !ready() {
        return;
    }
    let expected = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("true"))
        .find(|p| p.is_file())
        .unwrap();
    let o = hatchery(&["run", "-v", "--", "true"]);
    ok(&o);
    assert!(
        text(&o.stderr).contains(&format!("Execve: {:?}, []", expected.display().to_string())),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn unshare_network_leaves_the_loopback_down_as_hakoniwa() {
    if !ready() {
        return;
    }
    let hello = "/hatchery-bin/tcp-hello";
    let bind = bin_bind();
    for flag in ["--unshare-network", "--unshare-all"] {
        // Loopback down: 127.0.0.1 is unreachable (up, it would refuse the connection).
        let o = hatchery(&["run", flag, "-b", &bind, "--", hello, "127.0.0.1:9"]);
        assert_eq!(
            o.status.code(),
            Some(libc::ENETUNREACH),
            "{flag}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn cgroup_memory_swap_is_accepted_and_logged() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "-v",
        "--cgroup-memory",
        "64MiB",
        "--cgroup-memory-swap",
        "128MiB",
        "--",
        "/bin/true",
    ]);
    ok(&o);
    let err = text(&o.stderr);
    assert!(
        err.contains("Cgroup: memory 67108864, memory+swap 134217728"),
        "{err}"
    );
}

#[test]
fn an_unwritable_writable_bind_is_reported_before_running() {
    if !ready() {
        return;
    }
    let d = scratch("unwritable");
    let spec = format!("{}:/out", d.display());
    if is_root() {
        // Root owns it, the guest is nobody.
        set_mode(&d, 0o755);
        let o = hatchery(&["run", "-B", &spec, "--", "/bin/sh", "-c", "echo x > /out/x"]);
        assert_ne!(o.status.code(), Some(0));
        let err = text(&o.stderr);
        assert!(
            err.contains("host uid 65534 (nobody) cannot write it")
                && err.contains("chown 65534:65534")
                && err.contains("--userns auto")
                && err.contains("/etc/subuid"),
            "{err}"
        );
    } else {
        // Even its owner cannot write a 0555 directory.
        set_mode(&d, 0o555);
        let o = hatchery(&["run", "-B", &spec, "--", "/bin/true"]);
        let err = text(&o.stderr);
        assert!(
            err.contains("cannot write it") && err.contains("chmod u+w"),
            "{err}"
        );
    }
    // Once writable, nothing is said.
    set_mode(&d, 0o777);
    let o = hatchery(&["run", "-B", &spec, "--", "/bin/sh", "-c", "echo x > /out/x"]);
    ok(&o);
    assert!(
        !text(&o.stderr).contains("cannot write"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn userns_auto_as_root_maps_roots_subordinate_range() {
    if !ready() {
        return;
    }
    if !is_root() {
        // Covered for users by cli.rs (userns_auto_maps_a_subordinate_range).
        return;
    }
    let has_range = std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("root:") || l.starts_with("0:"));
    if !has_range {
        let o = hatchery(&["run", "--userns", "auto", "--", "/bin/true"]);
        assert_eq!(o.status.code(), Some(125));
        assert!(
            text(&o.stderr).contains("no range for root in /etc/subuid"),
            "{}",
            text(&o.stderr)
        );
    }
    // With a range for root (given in a mount namespace of its own, so the host's files stay
    // as they are): the whole container is that range, never host root.
    let d = scratch("subuid");
    std::fs::write(d.join("subid"), "root:200000:65536\n").unwrap();
    set_mode(&d.join("subid"), 0o644);
    let script = format!(
        "mount --bind {f} /etc/subuid && mount --bind {f} /etc/subgid && \
         HATCHERY_SHIM={shim} exec {h} run --userns auto -- /bin/sh -c 'cat /proc/self/uid_map; id -u'",
        f = d.join("subid").display(),
        shim = bin_dir().join("hatchery-shim").display(),
        h = bin_dir().join("hatchery").display()
    );
    let o = Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let out = ok(&o);
    let mut lines = out.lines();
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "200000", "65536"]);
    assert_eq!(lines.next(), Some("0"));
    std::fs::remove_dir_all(&d).ok();
}

// ---- profiles (-c FILE) ----

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
    set_mode(p, 0o644);
}

#[test]
fn profile_with_includes_and_template_functions_runs() {
    if !ready() {
        return;
    }
    let d = scratch("profile");
    let made = d.join("made");
    write(
        &d.join("base.toml"),
        r#"
[[mounts]]
source = "/usr"
[[mounts]]
source = "/dev"
type = "devfs"
[[namespaces]]
type = "uts"
[[envs]]
name = "FROM_BASE"
value = "base"
[filesystem]
symlinks = [{ original = "usr/bin", link = "/bin" }, { original = "usr/lib", link = "/lib" }, { original = "usr/lib64", link = "/lib64" }]
"#,
    );
    write(
        &d.join("main.toml"),
        &format!(
            r#""@include" = ["base.toml"]
# {{{{ mkdir_p("{made}") }}}}
hostname = "{{% if path_is_dir("{made}") %}}made{{% else %}}missing{{% endif %}}"
[[mounts]]
source = "{{{{ __dir__ }}}}"
destination = "/profile"
[[envs]]
name = "HOME_FROM_HOST"
value = "{{{{ printenv("HATCHERY_TEST_VALUE") }}}}"
[filesystem]
files = [{{ destination = "/etc/greeting", contents = "hello\n" }}]
dirs = [{{ destination = "/made" }}]
[[limits]]
type = "nofile"
value = 64
[command]
cmdline = ["/bin/sh", "-c", "hostname; echo $FROM_BASE $HOME_FROM_HOST; cat /etc/greeting; stat -c %a /made; ls /profile/main.toml; ulimit -n; echo x > /dev/null && echo devfs"]
"#,
            made = made.display()
        ),
    );
    let o = Command::new(bin_dir().join("hatchery"))
        .args(["run", "-v", "-c", &d.join("main.toml").to_string_lossy()])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .env("HATCHERY_TEST_VALUE", "from-env")
        .output()
        .unwrap();
    let out = ok(&o);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "made",
            "base from-env",
            "hello",
            "700",
            "/profile/main.toml",
            "64",
            "devfs"
        ]
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("CONFIG: ") && err.contains("CONFIG: Including "),
        "{err}"
    );
    assert!(made.is_dir(), "mkdir_p ran on the host");
    // The command after `--` replaces command.cmdline.
    let o = hatchery(&[
        "run",
        "-c",
        &d.join("main.toml").to_string_lossy(),
        "--",
        "/bin/echo",
        "over",
    ]);
    assert_eq!(ok(&o), "over\n");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_profiles_name_the_file_line_and_field() {
    if !ready() {
        return;
    }
    let d = scratch("badprofile");
    let f = d.join("bad.toml");
    let shown = f.canonicalize().unwrap_or(f.clone());
    let cases: [(&str, &str); 6] = [
        (
            "[[mounts]]\nsource = \"/no/such/path\"\n",
            ":2: mounts.source: path \"/no/such/path\"",
        ),
        (
            "hostname = \"x\"\nbogus = 1\n",
            ":2: bogus: unknown field `bogus`",
        ),
        (
            "[[limits]]\ntype = \"nofile\"\nvalue = \"many\"\n",
            ":3: limits.value:",
        ),
        (
            "[[namespaces]]\ntype = \"pid\"\n",
            ":2: namespaces.type: unknown namespace type \"pid\"",
        ),
        (
            "[landlock]\nfs = [{ path = \"/usr\", access = \"rq\" }]\n",
            ":2: landlock.fs.access: landlock: unknown access 'q'",
        ),
        ("hostname = \"{{ missing_function() }}\"\n", ":1: template"),
    ];
    for (body, want) in cases {
        write(&f, body);
        let o = hatchery(&["run", "-c", &f.to_string_lossy(), "--", "/bin/true"]);
        assert_eq!(o.status.code(), Some(125), "{body}");
        let err = text(&o.stderr);
        let want = format!("{}{want}", shown.display());
        assert!(err.contains(&want), "{body}: want {want:?} in {err}");
    }
    // An include cycle.
    write(&d.join("a.toml"), "\"@include\" = [\"b.toml\"]\n");
    write(&d.join("b.toml"), "\"@include\" = [\"a.toml\"]\n");
    let o = hatchery(&[
        "run",
        "-c",
        &d.join("a.toml").to_string_lossy(),
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("b.toml:1: @include: include cycle: "), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn shipped_profiles_parse_and_the_converter_runs() {
    if !ready() {
        return;
    }
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let d = scratch("convert");
    let input = d.join("in.txt");
    write(&input, "hello profile\n");
    // The converter: stdin to stdout, no network, nothing of the host but the system.
    let o = Command::new(bin_dir().join("hatchery"))
        .args([
            "run",
            "-c",
            &profiles.join("converter.toml").to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            "tr a-z A-Z; test -e /etc/shadow || echo no-shadow; test -d /home || echo no-home",
        ])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(ok(&o), "HELLO PROFILE\nno-shadow\nno-home\n");
    // Debian's ImageMagick (installed by scripts/deps.sh): a PPM on stdin, a PNG on stdout.
    if require(
        Path::new("/usr/bin/convert").exists(),
        "ImageMagick missing",
    ) {
        let ppm = d.join("in.ppm");
        write(&ppm, "P3\n2 1\n255\n255 0 0 0 0 255\n");
        let o = Command::new(bin_dir().join("hatchery"))
            .args([
                "run",
                "-c",
                &profiles.join("converter.toml").to_string_lossy(),
                "--",
                "/usr/bin/convert",
                "ppm:-",
                "png:-",
            ])
            .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
            .stdin(std::fs::File::open(&ppm).unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(o.stdout.starts_with(b"\x89PNG"), "{}", text(&o.stderr));
    }
    std::fs::remove_dir_all(&d).ok();
}

// ---- --network ----

/// Whether pasta can run here: installed and, for an unprivileged user, /dev/net/tun usable.
fn pasta_works() -> bool {
    let installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("pasta").is_file());
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    require(
        installed && tun,
        "pasta (Debian package passt) or a usable /dev/net/tun is missing",
    )
}

/// A TCP server on the host's loopback that greets one client per connection.
fn greeter() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = std::io::Write::write_all(&mut s, b"hello from the host\n");
        }
    });
    port
}

#[test]
fn network_pasta_reaches_the_hosts_loopback_and_none_does_not() {
    if !ready() || !pasta_works() {
        return;
    }
    let port = greeter();
    let addr = format!("127.0.0.1:{port}");
    let bind = bin_bind();
    let hello = "/hatchery-bin/tcp-hello";
    // pasta, forwarding the container's PORT to the host's (-T), reaches the server.
    let net = format!("pasta:-T,{port}");
    let o = hatchery(&[
        "run",
        "-v",
        "--network",
        &net,
        "-b",
        &bind,
        "--",
        hello,
        &addr,
    ]);
    assert_eq!(ok(&o), "hello from the host\n");
    let err = text(&o.stderr);
    assert!(
        err.contains("Configuring Network: Execve: [\"pasta\", \"--config-net\""),
        "{err}"
    );
    // `none`: a namespace of its own with the loopback down.
    let o = hatchery(&["run", "--network", "none", "-b", &bind, "--", hello, &addr]);
    assert_eq!(
        o.status.code(),
        Some(libc::ENETUNREACH),
        "{}",
        text(&o.stderr)
    );
    // `host`: the host's namespace.
    let o = hatchery(&["run", "--network", "host", "-b", &bind, "--", hello, &addr]);
    assert_eq!(ok(&o), "hello from the host\n");
    // An unknown mode is refused.
    let o = hatchery(&["run", "--network", "slirp", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("unknown mode"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn network_pasta_without_the_binary_names_the_package() {
    if !ready() {
        return;
    }
    // A PATH without pasta.
    let o = Command::new(bin_dir().join("hatchery"))
        .args(["run", "--network", "pasta", "--", "/bin/true"])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("passt") && err.contains("pasta"), "{err}");
}

#[test]
fn network_client_profile_reaches_the_host() {
    if !ready() || !pasta_works() {
        return;
    }
    let port = greeter();
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let o = Command::new(bin_dir().join("hatchery"))
        .args([
            "run",
            "-c",
            &profiles.join("network-client.toml").to_string_lossy(),
            "-b",
            "ignored",
            "--",
            "/tools/tcp-hello",
            &format!("127.0.0.1:{port}"),
        ])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .env("HATCHERY_TOOLS", bin_dir())
        .env("HATCHERY_FORWARD_TCP", port.to_string())
        .output()
        .unwrap();
    assert_eq!(ok(&o), "hello from the host\n");
    assert!(
        text(&o.stderr).contains("the other sandbox options are ignored"),
        "{}",
        text(&o.stderr)
    );
}

// ---- the command's last moments, as under hakoniwa ----

#[test]
fn limit_nofile_3_lets_setup_finish_and_the_command_fail_loading_its_libraries() {
    if !ready() {
        return;
    }
    // Set right before exec: setup (fd moves, landlock, the seccomp listener) needs fds.
    for extra in [&[][..], &["--landlock-restrict-fs"][..]] {
        let mut args = vec!["run", "--limit-nofile", "3"];
        args.extend_from_slice(extra);
        args.extend(["--", "/bin/true"]);
        let o = hatchery(&args);
        assert_eq!(o.status.code(), Some(127), "{extra:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains("error while loading shared libraries"),
            "{err}"
        );
    }
    // A limit the command can live with applies to it.
    let o = hatchery(&[
        "run",
        "--limit-nofile",
        "20",
        "--",
        "/bin/sh",
        "-c",
        "ulimit -n",
    ]);
    assert_eq!(ok(&o), "20\n");
}

#[test]
fn limit_fsize_gives_the_command_efbig_not_sigxfsz() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "--limit-fsize",
        "2",
        "--devfs",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--",
        "/bin/dd",
        "if=/dev/zero",
        "of=/tmp/out",
        "bs=4",
        "count=1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("File too large"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn devfs_is_writable_and_its_devices_stay_devices() {
    if !ready() {
        return;
    }
    let o = hatchery(&[
        "run",
        "--devfs",
        "/dev",
        "--",
        "/bin/sh",
        "-c",
        "echo hi > /dev/made && cat /dev/made && echo x > /dev/null && test -c /dev/null && \
         test -c /dev/zero && echo devices",
    ]);
    assert_eq!(ok(&o), "hi\ndevices\n");
}

#[test]
fn allow_new_privs_leaves_no_new_privs_off() {
    if !ready() {
        return;
    }
    let status = |args: &[&str]| {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend(["--", "/bin/grep", "NoNewPrivs", "/proc/self/status"]);
        hatchery(&all)
    };
    let o = status(&["--seccomp", "unconfined"]);
    assert_eq!(
        ok(&o).split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    let o = status(&["--seccomp", "unconfined", "--allow-new-privs"]);
    assert_eq!(
        ok(&o).split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "0"]
    );
    // With seccomp (the default) the kernel would need CAP_SYS_ADMIN: refused, saying why.
    let o = status(&["--allow-new-privs"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("without seccomp and landlock"),
        "{}",
        text(&o.stderr)
    );
}

// ---- the library: hakoniwa's API and its examples ----

/// hakoniwa's own examples (its front page, its README, its `Container` and seccomp docs, its
/// landlock docs), ported to host/examples with only the crate name changed.
#[test]
fn hakoniwas_examples_compile_and_run() {
    if !ready() {
        return;
    }
    let run = |name: &str, stdin: &str| {
        let exe = bin_dir().join("examples").join(name);
        assert!(exe.is_file(), "build the examples first ({exe:?})");
        let mut child = Command::new(&exe)
            .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    for (name, want) in [
        ("hakoniwa_quickstart", "hello\n"),
        ("hakoniwa_container", "hello\n"),
        ("hakoniwa_seccomp", "mkdir refused\n"),
        ("hakoniwa_landlock", "landlocked\n"),
    ] {
        let o = run(name, "");
        assert_eq!(ok(&o), want, "{name}");
    }
    let o = run("hakoniwa_shell", "echo from-sh; exit 3\n");
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(3), "from-sh\n")
    );
}

/// Every public item of hakoniwa 1.8.0's API that hatchery provides, used as hakoniwa's docs use
/// it (this test failing to compile is the point), with the values hakoniwa gives.
#[test]
fn hakoniwas_api_is_there_with_its_meaning() {
    use hatchery::landlock::{CompatMode, FsAccess, NetAccess, Resource, Ruleset};
    use hatchery::seccomp::{Action, Arch, ArgCmp, ArgCmpOp, Filter};
    use hatchery::{cgroups, Container, Namespace, Network, Pasta, Rlimit, Runctl, Stdio};
    use std::str::FromStr;

    let mut c = Container::empty();
    c.unshare(Namespace::Cgroup)
        .unshare(Namespace::Ipc)
        .unshare(Namespace::Uts)
        .unshare(Namespace::Network)
        .share(Namespace::Ipc)
        .rootdir("/")
        .runctl(Runctl::RootdirRW)
        .runctl(Runctl::MountFallback)
        .bindmount_ro("/usr", "/usr")
        .bindmount_rw("/tmp", "/scratch")
        .devfsmount("/dev")
        .tmpfsmount("/tmp")
        .procfsmount("/proc")
        .file("/etc/x", "x\n")
        .dir("/d", 0o700)
        .symlink("/usr/bin", "/bin2")
        .uidmap(0)
        .gidmap(0)
        .user("root", None, &[])
        .hostname("box")
        .network(Pasta::default())
        .setrlimit(Rlimit::Nofile, 64, 64);
    c.uidmaps(&[(0, default_host_uid(), 1)]);
    c.gidmaps(&[(0, default_host_uid(), 1)]);
    c.rootfs("/").unwrap();
    let mut res = cgroups::Resources::default();
    res.cpu(*cgroups::Cpu::default().quota(50_000).period(100_000))
        .memory(*cgroups::Memory::default().limit(256 << 20).swap(512 << 20))
        .pids(*cgroups::Pids::default().limit(64));
    c.cgroups_resources(res);
    assert_eq!(c.resource_limits().cpus, Some(0.5));
    let mut ruleset = Ruleset::default();
    ruleset
        .restrict(Resource::FS, CompatMode::Enforce)
        .restrict(Resource::NET_TCP_BIND, CompatMode::Relax)
        .unrestrict(Resource::NET_TCP_BIND)
        .allow_path("/usr", FsAccess::from_str("r-x").unwrap())
        .allow_tcp_connect(443)
        .allow_tcp_bind(8080);
    assert_eq!(
        FsAccess::from_str("rw-").unwrap(),
        FsAccess::R | FsAccess::W
    );
    assert_eq!((FsAccess::R | FsAccess::X).to_string(), "r-x");
    assert_eq!(NetAccess::TCP_CONNECT, NetAccess::TcpConnect);
    assert_eq!(Resource::NET_TCP_CONNECT.to_string(), "tcp.connect");
    c.landlock_ruleset(ruleset);
    let mut f = Filter::new(Action::Errno(libc::EPERM));
    f.add_arch(Arch::from_str("x86_64").unwrap())
        .add_arch(Arch::X86)
        .add_rule(Action::Allow, "read")
        .add_rule_conditional(
            Action::Allow,
            "personality",
            &[ArgCmp::new(0, ArgCmpOp::Eq, 8, 0)],
        );
    assert_eq!(
        f.get_rules()[1].to_string(),
        "personality($0 == 8, ..) -> Allow"
    );
    assert_eq!(f.get_rules()[0].sysname, "read");
    c.seccomp_filter(f);
    assert!(matches!(c.get_network(), Some(Network::Pasta(_))));
    assert_eq!(Namespace::Network.to_string(), "NETWORK");
    assert_eq!(Rlimit::Nofile.to_string(), "nofile");

    let mut cmd = c.command("/bin/echo");
    cmd.arg("a")
        .args(["b", "c"])
        .env("K", "V")
        .envs([("K2", "V2")])
        .current_dir("/")
        .wait_timeout(5)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    assert_eq!(cmd.get_program(), "/bin/echo");
    assert_eq!(cmd.get_args(), ["a", "b", "c"]);
    assert_eq!(cmd.get_envs().get("K2").map(String::as_str), Some("V2"));
    assert_eq!(cmd.get_current_dir(), Some(Path::new("/")));

    // And a command runs with hakoniwa's Child, ExitStatus and Output.
    if !ready() {
        return;
    }
    let mut child = Container::new()
        .rootfs("/")
        .unwrap()
        .command("/bin/cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .wait_timeout(10)
        .spawn()
        .unwrap();
    assert!(child.id() > 0);
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"piped\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!((out.status.code, out.status.exit_code), (0, Some(0)));
    assert!(out.status.rusage.is_some());
    assert_eq!(out.stdout, b"piped\n");
    // What hatchery does not enforce is refused, never ignored.
    let mut c = Container::new();
    c.rootfs("/").unwrap().cgroups_resources(
        *cgroups::Resources::default().cpu(*cgroups::Cpu::default().shares(512)),
    );
    assert!(c.command("/bin/true").status().is_err());
    let mut c = Container::new();
    c.rootfs("/").unwrap().runctl(Runctl::GetProcPidStatus);
    assert!(c.command("/bin/true").status().is_err());
}

#[test]
fn completion_prints_a_shell_script_as_hakoniwa() {
    let o = hatchery(&["completion", "bash"]);
    let out = ok(&o);
    assert!(out.contains("_hatchery()") && out.contains("--network") && out.contains("--config"));
}

#[test]
fn overlay_mounts_as_hakoniwa() {
    if !ready() {
        return;
    }
    let d = scratch("overlay");
    let (a, b, up, work) = (d.join("a"), d.join("b"), d.join("up"), d.join("work"));
    for p in [&a, &b, &up, &work] {
        std::fs::create_dir(p).unwrap();
        set_mode(p, 0o777);
    }
    write(&a.join("top"), "from a\n");
    write(&b.join("top"), "from b\n");
    write(&b.join("low"), "from b\n");
    let lower = format!("{}:{}", a.display(), b.display());
    let mut c = hatchery::Container::new();
    c.rootfs("/").unwrap();
    c.overlaymount_ro(&lower, "/ro").overlaymount_rw(
        &lower,
        &up.to_string_lossy(),
        &work.to_string_lossy(),
        "/rw",
    );
    let out = c
        .command("/bin/sh")
        .args([
            "-c",
            "cat /ro/top /ro/low; echo new > /rw/new && cat /rw/new; echo x > /ro/x 2>/dev/null || echo ro",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(text(&out.stdout), "from a\nfrom b\nnew\nro\n");
    // The change went to the upper directory; the lower ones are as they were.
    assert_eq!(std::fs::read_to_string(up.join("new")).unwrap(), "new\n");
    assert!(!a.join("new").exists() && !b.join("new").exists());
    std::fs::remove_dir_all(&d).ok();
}
