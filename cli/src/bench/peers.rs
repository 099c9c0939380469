//! The sandboxes a user would pick instead of hatchery, as `hatchery bench` runs them: each
//! case spawns the peer's own command line per request (printed under the table), with the
//! isolation closest to hatchery's default profile that the peer offers. A peer that is not
//! installed (or cannot run here) is skipped with the reason; `scripts/bench-peers.sh` installs
//! all of them (bubblewrap, crun and firejail from Debian, hakoniwa-cli 1.8.0 from crates.io,
//! sandlock from PyPI).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child as StdChild, ChildStdin, ChildStdout, Command as StdCommand, Stdio};
use std::sync::Mutex;

use super::{std_status, system_dir_flags, which, Runner};

/// Where a skipped peer's reason points.
const SETUP_HINT: &str = "scripts/bench-peers.sh installs it";

/// A temporary directory, removed when the case that uses it is dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> std::io::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "hatchery-bench-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints why `name` is not measured.
fn skip(name: &str, why: impl std::fmt::Display) {
    eprintln!("hatchery bench: {name} skipped: {why}");
}

/// Runs `program` once to see whether it works here at all; on failure, prints why it is skipped
/// with the first line it wrote to stderr.
fn works(name: &str, program: &str, args: &[String]) -> bool {
    let out = StdCommand::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            skip(
                name,
                format_args!(
                    "a trial run failed ({}): {program} {}",
                    err.lines().next().unwrap_or("no message").trim(),
                    args.join(" ")
                ),
            );
            false
        }
        Err(e) => {
            skip(name, format_args!("running {program}: {e}"));
            false
        }
    }
}

/// The bwrap flags of the default-profile-like sandbox, before `--` and the command.
fn bwrap_flags() -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--unshare-all".into(),
        "--die-with-parent".into(),
        "--new-session".into(),
    ];
    a.extend(system_dir_flags());
    a.extend(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"].map(String::from));
    a
}

/// Adds every selected peer through `add(name, command line, runner)`.
pub(super) fn add_peers(
    want: &dyn Fn(&str) -> bool,
    program: &str,
    rest: &[String],
    add: &mut dyn FnMut(&str, Option<String>, Runner),
) {
    let argv: Vec<String> = std::iter::once(program.to_string())
        .chain(rest.iter().cloned())
        .collect();
    let bwrap = which("bwrap");
    if want("bwrap") {
        match &bwrap {
            Some(b) => {
                let mut a = bwrap_flags();
                a.push("--".into());
                a.extend(argv.iter().cloned());
                let line = format!("{} {}", b.display(), a.join(" "));
                let b = b.to_string_lossy().into_owned();
                add("bwrap", Some(line), Box::new(move || std_status(&b, &a)));
            }
            None => skip("bwrap", format_args!("bwrap not on PATH ({SETUP_HINT})")),
        }
    }
    if want("bwrap-seccomp") {
        match &bwrap {
            Some(b) => bwrap_seccomp(b, &argv, add),
            None => skip(
                "bwrap-seccomp",
                format_args!("bwrap not on PATH ({SETUP_HINT})"),
            ),
        }
    }
    let hakoniwa = which("hakoniwa");
    for (name, extra) in [
        ("hakoniwa", &[][..]),
        ("hakoniwa-unconfined", &["--seccomp", "unconfined"][..]),
    ] {
        if !want(name) {
            continue;
        }
        let Some(h) = &hakoniwa else {
            skip(name, format_args!("hakoniwa not on PATH ({SETUP_HINT})"));
            continue;
        };
        // hakoniwa's default profile (its podman-like seccomp filter, no landlock) with every
        // namespace, a /dev and a /tmp like hatchery's default.
        let mut a: Vec<String> = ["run", "--unshare-all", "--devfs", "/dev", "--tmpfs", "/tmp"]
            .map(String::from)
            .into();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push("--".into());
        a.extend(argv.iter().cloned());
        let h = h.to_string_lossy().into_owned();
        if works(name, &h, &a) {
            let line = format!("{h} {}", a.join(" "));
            add(name, Some(line), Box::new(move || std_status(&h, &a)));
        }
    }
    if want("crun") {
        match which("crun") {
            Some(c) => crun(&c, &argv, add),
            None => skip("crun", format_args!("crun not on PATH ({SETUP_HINT})")),
        }
    }
    if want("firejail") {
        match which("firejail") {
            Some(f) => {
                let a = command_line(
                    &[
                        "--quiet",
                        "--noprofile",
                        "--net=none",
                        "--ipc-namespace",
                        "--private-dev",
                        "--private-tmp",
                        "--caps.drop=all",
                        "--nonewprivs",
                        "--seccomp",
                    ],
                    &argv,
                );
                let f = f.to_string_lossy().into_owned();
                if works("firejail", &f, &a) {
                    let line = format!("{f} {}", a.join(" "));
                    add("firejail", Some(line), Box::new(move || std_status(&f, &a)));
                }
            }
            None => skip(
                "firejail",
                format_args!("firejail not on PATH ({SETUP_HINT})"),
            ),
        }
    }
    if want("sandlock") {
        sandlock(&argv, add);
    }
    if want("nsjail") {
        match which("nsjail") {
            Some(n) => {
                let a = command_line(
                    &[
                        "-Mo",
                        "--quiet",
                        "-R",
                        "/usr",
                        "-R",
                        "/lib",
                        "-R",
                        "/lib64",
                        "-R",
                        "/bin",
                        "--proc_rw",
                        "-T",
                        "/tmp",
                    ],
                    &argv,
                );
                let line = format!("{} {}", n.display(), a.join(" "));
                let n = n.to_string_lossy().into_owned();
                add("nsjail", Some(line), Box::new(move || std_status(&n, &a)));
            }
            None => skip("nsjail", "nsjail not on PATH (not packaged for Debian 12)"),
        }
    }
}

/// bwrap with hatchery's default seccomp policy (podman's, notifications compiled as kills: bwrap
/// has no supervisor), compiled to BPF once and handed to `bwrap --seccomp 0` on stdin.
fn bwrap_seccomp(bwrap: &Path, argv: &[String], add: &mut dyn FnMut(&str, Option<String>, Runner)) {
    let name = "bwrap-seccomp";
    let Some(filter) = hatchery::seccomp::Profile::Podman.filter() else {
        skip(
            name,
            "hatchery has no podman seccomp profile for this architecture",
        );
        return;
    };
    let program = match filter.compile(true) {
        Ok(p) => p,
        Err(e) => {
            skip(name, format_args!("compiling the podman filter: {e}"));
            return;
        }
    };
    let dir = match TempDir::new("bwrap") {
        Ok(d) => d,
        Err(e) => {
            skip(name, format_args!("creating a temporary directory: {e}"));
            return;
        }
    };
    // `struct sock_filter` in memory is the packed word in native byte order.
    let bytes: Vec<u8> = program.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bpf = dir.0.join("podman.bpf");
    if let Err(e) = std::fs::write(&bpf, bytes) {
        skip(name, format_args!("writing {}: {e}", bpf.display()));
        return;
    }
    let mut a = bwrap_flags();
    a.extend(["--seccomp".into(), "0".into(), "--".into()]);
    a.extend(argv.iter().cloned());
    let line = format!(
        "{} {} < {} ({} BPF instructions)",
        bwrap.display(),
        a.join(" "),
        bpf.display(),
        program.words.len()
    );
    let b = bwrap.to_path_buf();
    add(
        name,
        Some(line),
        Box::new(move || {
            let _keep = &dir;
            let Ok(input) = std::fs::File::open(&bpf) else {
                return false;
            };
            StdCommand::new(&b)
                .args(&a)
                .stdin(input)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }),
    );
}

/// crun with a generated OCI bundle: a read-only root of the system directories, fresh /proc,
/// /dev (crun's default devices) and /tmp, every namespace (user: the container's root mapped to
/// `nobody` as root, to the caller's own id otherwise), no capabilities, no_new_privs. No seccomp
/// (the OCI runtime takes a JSON profile; hatchery's podman filter is not exported as one).
fn crun(crun: &Path, argv: &[String], add: &mut dyn FnMut(&str, Option<String>, Runner)) {
    let name = "crun";
    let dir = match TempDir::new("crun") {
        Ok(d) => d,
        Err(e) => {
            skip(name, format_args!("creating a temporary directory: {e}"));
            return;
        }
    };
    let rootfs = dir.0.join("rootfs");
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=65536k"]}),
    ];
    let made = (|| -> std::io::Result<()> {
        for d in ["proc", "dev", "tmp", "usr"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        mounts.push(
            serde_json::json!({"destination": "/usr", "type": "bind", "source": "/usr",
            "options": ["rbind", "ro", "nosuid", "nodev"]}),
        );
        for n in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(n);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    std::os::unix::fs::symlink(std::fs::read_link(&host)?, rootfs.join(n))?
                }
                Ok(m) if m.is_dir() => {
                    std::fs::create_dir_all(rootfs.join(n))?;
                    mounts.push(serde_json::json!({"destination": format!("/{n}"),
                        "type": "bind", "source": host,
                        "options": ["rbind", "ro", "nosuid", "nodev"]}));
                }
                _ => {}
            }
        }
        Ok(())
    })();
    if let Err(e) = made {
        skip(name, format_args!("building the bundle: {e}"));
        return;
    }
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let (host_uid, host_gid) = if euid == 0 {
        (65534, 65534)
    } else {
        (euid, egid)
    };
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": argv,
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "crun",
        "mounts": mounts,
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": host_uid, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": host_gid, "size": 1}],
            "namespaces": [
                {"type": "user"}, {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Err(e) = std::fs::write(dir.0.join("config.json"), config.to_string()) {
        skip(name, format_args!("writing config.json: {e}"));
        return;
    }
    let state = dir.0.join("state");
    let base: Vec<String> = vec![
        "--root".into(),
        state.to_string_lossy().into_owned(),
        "run".into(),
        "--bundle".into(),
        dir.0.to_string_lossy().into_owned(),
    ];
    let counter = std::sync::atomic::AtomicU64::new(0);
    let c = crun.to_string_lossy().into_owned();
    let id = |n: u64| format!("hatchery-bench-{}-{n}", std::process::id());
    let mut trial = base.clone();
    trial.push(id(u64::MAX));
    if !works(name, &c, &trial) {
        return;
    }
    let line = format!("{c} {} ID (a fresh ID per request)", base.join(" "));
    add(
        name,
        Some(line),
        Box::new(move || {
            let _keep = &dir;
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut a = base.clone();
            a.push(id(n));
            std_status(&c, &a)
        }),
    );
}

/// One sandlock server: a Python process that runs `Sandbox(...).run(argv)` per line it reads.
struct SandlockServer {
    child: StdChild,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl SandlockServer {
    fn start(script: &str) -> std::io::Result<SandlockServer> {
        let mut child = StdCommand::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let input = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let output = BufReader::new(child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?);
        Ok(SandlockServer {
            child,
            input,
            output,
        })
    }

    /// One sandboxed run: true when the command succeeded.
    fn run(&mut self) -> bool {
        let mut line = String::new();
        self.input.write_all(b"\n").is_ok()
            && self.input.flush().is_ok()
            && self.output.read_line(&mut line).is_ok_and(|n| n > 0)
            && line.trim() == "ok"
    }
}

impl Drop for SandlockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sandlock (landlock + seccomp, no namespaces) through its Python API, one
/// `Sandbox(fs_readable=…).run(argv)` per request in long-lived Python servers (one per client),
/// so the interpreter's start is not measured; the round trip over their pipes is.
fn sandlock(argv: &[String], add: &mut dyn FnMut(&str, Option<String>, Runner)) {
    let name = "sandlock";
    if which("python3").is_none() {
        skip(name, format_args!("python3 not on PATH ({SETUP_HINT})"));
        return;
    }
    let readable: Vec<&str> = ["/usr", "/bin", "/lib", "/lib64", "/etc"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let script = format!(
        "import sys, sandlock\n\
         argv = {argv}\n\
         for _ in sys.stdin:\n\
         \x20   r = sandlock.Sandbox(fs_readable={readable}).run(argv)\n\
         \x20   sys.stdout.write('ok\\n' if r.success else 'fail\\n')\n\
         \x20   sys.stdout.flush()\n",
        argv = serde_json::json!(argv),
        readable = serde_json::json!(readable),
    );
    let check = StdCommand::new("python3")
        .args(["-c", "import sandlock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !check.is_ok_and(|s| s.success()) {
        skip(
            name,
            format_args!("the Python module sandlock is not installed ({SETUP_HINT})"),
        );
        return;
    }
    let mut first = match SandlockServer::start(&script) {
        Ok(s) => s,
        Err(e) => {
            skip(name, format_args!("starting python3: {e}"));
            return;
        }
    };
    if !first.run() {
        skip(name, "a trial Sandbox.run failed");
        return;
    }
    let servers: Mutex<Vec<SandlockServer>> = Mutex::new(vec![first]);
    let line = format!(
        "python3: sandlock.Sandbox(fs_readable={}).run({}) per request, in a warm interpreter",
        serde_json::json!(readable),
        serde_json::json!(argv)
    );
    add(
        name,
        Some(line),
        Box::new(move || {
            // One server per concurrent client: take an idle one or start another.
            let taken = servers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut server = match taken {
                Some(s) => s,
                None => match SandlockServer::start(&script) {
                    Ok(s) => s,
                    Err(_) => return false,
                },
            };
            let ok = server.run();
            if ok {
                servers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(server);
            }
            ok
        }),
    );
}

/// A peer's arguments: its `flags`, then `--` and the measured command.
fn command_line(flags: &[&str], argv: &[String]) -> Vec<String> {
    let mut a: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    a.push("--".into());
    a.extend(argv.iter().cloned());
    a
}
