//! Denials explained and profiles learned: every refusal listed with the change that allows
//! exactly it (library, `hatchery run --explain`, pools), and `hatchery learn` profiles that
//! run other inputs and still block what the helper never did. Also: pasta never outlives its
//! container.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hatchery::pool::default_profile;
use hatchery::{Layer, Pool, Request, Stdio};
use hatchery_tests::{bin_dir, hatchery, require, text, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    ) && require(Path::new(PYTHON).exists(), "python3 is not installed")
}

const PYTHON: &str = "/usr/bin/python3";

/// The default profile with its denials explained.
fn explaining_profile() -> hatchery::Container {
    let mut c = default_profile();
    c.explain(true);
    c
}

/// A host file that exists on every Debian machine, readable by every user, and that no
/// profile mounts.
const HOST_FILE: &str = "/etc/debian_version";

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hatchery-explain-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Each kind of refusal a default-profile command meets, with its layer and exact allowance.
const ATTEMPTS: &str = r#"
import socket, ctypes, os
try: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
except OSError: pass
s = socket.socket()
try: s.connect(("127.0.0.1", 9))
except OSError: pass
try: open("/etc/debian_version")
except OSError: pass
try: open("/usr/hatchery-x", "w")
except OSError: pass
ctypes.CDLL(None).personality(0x0040000)
os._exit(3)
"#;

#[test]
fn every_refusal_is_listed_with_its_allowance() {
    if !ready() {
        return;
    }
    let st = explaining_profile()
        .command(PYTHON)
        .args(["-c", ATTEMPTS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code, 3, "{st:?}");
    let d = st.denials();
    let find = |layer: Layer, op: &str| {
        d.iter()
            .find(|x| x.layer == layer && x.operation == op)
            .unwrap_or_else(|| panic!("no {layer} {op} in {d:#?}"))
    };
    let flag = |x: &hatchery::Denial| x.allow.as_ref().map(|a| a.flag.clone());
    // podman refuses that family by name: on purpose, so no allowance.
    assert_eq!(flag(find(Layer::Seccomp, "socket(AF_PACKET)")), None);
    // Outside podman's own policy (a persona it leaves out): no allowance either.
    assert_eq!(flag(find(Layer::Seccomp, "personality(0x40000)")), None);
    assert_eq!(
        flag(find(Layer::LandlockNet, "connect")).as_deref(),
        Some("--landlock-tcp-connect 9")
    );
    let missing = d
        .iter()
        .find(|x| x.layer == Layer::MissingMount && x.target.starts_with(HOST_FILE))
        .unwrap_or_else(|| panic!("no missing mount in {d:#?}"));
    assert_eq!(
        flag(missing).as_deref(),
        Some(format!("--bindmount-ro {HOST_FILE}").as_str())
    );
    let ro = find(Layer::MissingMount, "write");
    assert!(ro.target.contains("/usr"), "{ro:?}");
    assert!(
        ro.allow.is_none(),
        "the host's /usr is never made writable: {ro:?}"
    );
    // The same command without explaining: the same outcome, no list.
    let st = default_profile()
        .command(PYTHON)
        .args(["-c", ATTEMPTS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code, 3);
    assert!(st.denials().is_empty());
}

#[test]
fn a_suggested_flag_allows_exactly_what_was_denied() {
    if !ready() {
        return;
    }
    // A missing mount: the file, and nothing else of its directory.
    let out = hatchery(&[
        "run",
        "--profile",
        "default",
        "--explain",
        "--",
        "/bin/cat",
        HOST_FILE,
    ]);
    assert_ne!(out.status.code(), Some(0));
    let want = format!("--bindmount-ro {HOST_FILE}");
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
    let out = hatchery(&[
        "run",
        "--profile",
        "default",
        "--bindmount-ro",
        HOST_FILE,
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/debian_version >/dev/null && ! cat /etc/issue",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // A system call a narrowed policy (podman's, less two calls) refused: that call only.
    let podman = hatchery::seccomp::Profile::from_name("podman")
        .and_then(|p| p.filter())
        .unwrap();
    let only: Vec<String> = podman
        .allowed_syscalls()
        .into_iter()
        .filter(|c| c != "getppid" && c != "getsid")
        .collect();
    let only = only.join(",");
    // getppid cannot fail in POSIX: refused, it returns -1 (CPython does not raise).
    let probe = "import os, sys\n\
                 try:\n\
                 \tos.getsid(0); sid = True\n\
                 except OSError: sid = False\n\
                 sys.exit(0 if os.getppid() > 0 and not sid else 1)";
    let narrowed = |extra: &[&str]| {
        let mut a = vec!["run", "--profile", "default", "--seccomp-only", &only];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--", PYTHON, "-c", probe]);
        hatchery(&a)
    };
    let out = narrowed(&["--explain"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--seccomp-allow getppid"), "{err}");
    let out = narrowed(&["--seccomp-allow", "getppid"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A port: that port only.
    let probe = "import socket, sys\n\
                 def bind(p):\n\
                 \ttry:\n\
                 \t\tsocket.socket().bind(('127.0.0.1', p)); return True\n\
                 \texcept PermissionError: return False\n\
                 sys.exit(0 if bind(8009) and not bind(8010) else 1)";
    let out = hatchery(&[
        "run",
        "--profile",
        "default",
        "--explain",
        "--",
        PYTHON,
        "-c",
        probe,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--landlock-tcp-bind 8009"), "{err}");
    let out = hatchery(&[
        "run",
        "--profile",
        "default",
        "--landlock-tcp-bind",
        "8009",
        "--",
        PYTHON,
        "-c",
        probe,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Bad specs are usage errors that name the flag.
    let out = hatchery(&["run", "--seccomp-allow", "no such", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("--seccomp-allow"));
}

#[test]
fn explaining_pools_list_denials_per_request() {
    if !ready() {
        return;
    }
    let pool = Pool::builder()
        .profile(explaining_profile())
        .min_zygotes(1)
        .max_zygotes(1)
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = pool
            .run(Request::exec(PYTHON).args([
                "-c",
                "import socket\ntry: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\nexcept OSError: raise SystemExit(4)",
            ]))
            .unwrap();
        assert_eq!(r.exit_code(), Some(4), "{r:?}");
        assert!(
            r.denials
                .iter()
                .any(|d| d.layer == Layer::Seccomp && d.operation == "socket(AF_PACKET)"),
            "{:?}",
            r.denials
        );
        // A clean request after it reports nothing of the last one.
        let r = pool.run(Request::exec("/bin/true")).unwrap();
        assert!(r.success(), "{r:?}");
        assert!(r.denials.is_empty(), "{:?}", r.denials);
    }
    pool.shutdown(Duration::from_secs(2));
    // Call-mode pools and recording pools are refused.
    let mut learning = default_profile();
    learning.learn(true);
    assert!(Pool::builder().profile(learning).build().is_err());
}

fn gzip_of(data: &[u8], path: &Path) {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(path).unwrap())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_learned_profile_runs_other_inputs_and_blocks_the_rest() {
    if !ready() {
        return;
    }
    let dir = scratch("learn");
    let a: Vec<u8> = (0..2000)
        .flat_map(|i: u32| format!("{i}\n").into_bytes())
        .collect();
    let b: Vec<u8> = (0..9000)
        .flat_map(|i: u32| format!("line {i}\n").into_bytes())
        .collect();
    gzip_of(&a, &dir.join("a.gz"));
    gzip_of(&b, &dir.join("b.gz"));
    let profile = dir.join("gz.toml");
    let p = profile.to_str().unwrap();
    let out = hatchery(&[
        "learn",
        "-o",
        p,
        dir.join("a.gz").to_str().unwrap(),
        "--",
        "gzip",
        "-dc",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(&profile).unwrap();
    // Its allowlist is podman's, narrowed.
    let calls = toml
        .lines()
        .skip_while(|l| !l.starts_with("syscalls = ["))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .count();
    assert!((10..200).contains(&calls), "{calls} calls in\n{toml}");
    assert!(toml.contains("families = []"), "{toml}");
    assert!(
        !toml.contains("/etc/shadow") && !toml.contains("/root"),
        "{toml}"
    );

    // Another input of the same kind, through run and through map.
    let out = Command::new(bin_dir().join("hatchery"))
        .args(["run", "-c", p])
        .env("HATCHERY_SHIM", bin_dir().join("hatchery-shim"))
        .stdin(std::fs::File::open(dir.join("b.gz")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == b, "decompressed output differs");
    let outdir = dir.join("out");
    let out = hatchery(&[
        "map",
        "-q",
        "-c",
        p,
        "--out",
        outdir.to_str().unwrap(),
        dir.join("a.gz").to_str().unwrap(),
        dir.join("b.gz").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::read(outdir.join("b.gz")).unwrap() == b);

    // What a compromised gzip would try stays refused under its profile: raw calls from a
    // static program, run with the profile plus one read-only mount holding it.
    let attacks = dir.join("attack");
    std::fs::create_dir_all(&attacks).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/helper-attacks.c");
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(attacks.join("attack"))
        .arg(&src)
        .status();
    if require(
        built.is_ok_and(|s| s.success()),
        "gcc -static (gcc, libc6-dev) cannot build the attack program",
    ) {
        let with_attack = dir.join("gz-attack.toml");
        std::fs::write(
            &with_attack,
            format!(
                "{toml}\n[[mounts]]\nsource = {:?}\n",
                attacks.to_str().unwrap()
            ),
        )
        .unwrap();
        let out = hatchery(&[
            "run",
            "-c",
            with_attack.to_str().unwrap(),
            "--",
            attacks.join("attack").to_str().unwrap(),
        ]);
        assert_eq!(text(&out.stdout), "ran\n", "{}", text(&out.stderr));
        assert_ne!(out.status.code(), Some(0));
    }
    // Nor does a shell get far.
    for attack in [
        "cat /etc/passwd",
        "ls /home /root",
        "unshare -U true",
        "exec 3<>/dev/tcp/127.0.0.1/22",
    ] {
        let out = hatchery(&["run", "-c", p, "--", "/bin/sh", "-c", attack]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{attack}: {}",
            text(&out.stdout)
        );
    }
    let out = hatchery(&[
        "run",
        "-c",
        p,
        "--explain",
        "--",
        PYTHON,
        "-c",
        "import socket; socket.socket(socket.AF_INET)",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("denied [seccomp]"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn learn_needs_a_command_and_reports_failed_samples() {
    if !ready() {
        return;
    }
    let dir = scratch("learn-bad");
    let p = dir.join("x.toml");
    let out = hatchery(&["learn", "-o", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = hatchery(&[
        "learn",
        "-o",
        p.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exited with code 9"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read_to_string(&p)
        .unwrap()
        .contains("failed while recorded"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes whose command line is pasta's and names `target` as its namespace.
fn pastas_for(target: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.first().is_some_and(|a| a.ends_with(b"pasta"))
            && args.last() == Some(&target.to_string().as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn pasta_never_outlives_its_container() {
    if !ready()
        || !require(
            Command::new("pasta").arg("--version").output().is_ok(),
            "pasta (passt) is not installed",
        )
    {
        return;
    }
    for args in [&[][..], &["-T", "8099"][..]] {
        let mut pasta = hatchery::Pasta::default();
        pasta.args(args);
        let mut c = default_profile();
        c.network(pasta);
        let mut child = c
            .command("/bin/true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let target = child.id();
        assert!(child.wait().unwrap().success());
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !pastas_for(target).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            pastas_for(target).is_empty(),
            "pasta {args:?} outlived its container"
        );
    }
}

/// The explaining program, run by the shim's evaluator next to the policy's own: it never
/// allows outright a call the policy would refuse (it notifies them, and the shim answers as
/// the policy).
#[test]
fn the_explaining_filter_never_allows_what_the_policy_refuses() {
    use hatchery::seccomp::Profile;
    const ALLOW: u32 = 0x7fff_0000;
    let native = if cfg!(target_arch = "x86_64") {
        0xC000_003E
    } else {
        0xC000_00B7
    };
    let mut seed: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in ["podman", "strict", "audit"] {
        let Some(f) = Profile::from_name(name).and_then(|p| p.filter()) else {
            continue;
        };
        let (installed, original) = f.compile_explaining().unwrap();
        let (mut allowed, mut notified) = (0, 0);
        for nr in 0..470i32 {
            for i in 0..60 {
                let mut args = [0u64; 6];
                for a in args.iter_mut() {
                    *a = match i % 4 {
                        0 => 0,
                        1 => rnd() & 0xff,
                        2 => rnd() & 0xffff_ffff,
                        _ => rnd(),
                    };
                }
                if i == 1 {
                    args = [1, 0, 0, 0, 0, 0];
                }
                if i == 2 {
                    args[2] = hatchery_protocol::LISTENER_SEND_FLAGS as u64;
                }
                let a = hatchery_guest::evaluate_seccomp(&installed.words, nr, native, args);
                let b = hatchery_guest::evaluate_seccomp(&original.words, nr, native, args);
                // Runs outright: allowed or logged.
                let runs = |r: u32| matches!(r & 0xffff_0000, ALLOW | 0x7ffc_0000);
                allowed += usize::from(runs(a));
                notified += usize::from(a & 0xffff_0000 == 0x7fc0_0000);
                assert!(
                    !runs(a) || runs(b),
                    "{name}: call {nr} {args:x?}: explaining runs it, the policy says {b:#x}"
                );
            }
        }
        assert!(
            allowed > 1000 && notified > 1000,
            "{name}: {allowed} allowed, {notified} notified"
        );
        // Another architecture's calls are killed by both.
        let a = hatchery_guest::evaluate_seccomp(&installed.words, 0, 0x4000_0003, [0; 6]);
        assert_eq!(a & 0xffff_0000, 0x8000_0000, "{name}");
    }
}
