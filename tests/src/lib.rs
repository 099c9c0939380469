//! Shared helpers of the end-to-end tests, and tiny helper programs (`src/bin/`) that each do one
//! thing inside a sandbox.
//!
//! Tests that need a kernel feature call [`require`]: it prints `SKIP <reason>` and returns
//! false when the feature is missing, unless `HATCHERY_TESTS_MUST_RUN=1` (set by CI), where a
//! skip is a failure.

use std::path::PathBuf;

/// Whether skips must fail (CI).
pub fn must_run() -> bool {
    std::env::var("HATCHERY_TESTS_MUST_RUN").is_ok_and(|v| v == "1")
}

/// Returns `available`, or panics when it is false and skips are not allowed.
pub fn require(available: bool, reason: &str) -> bool {
    if !available {
        assert!(
            !must_run(),
            "SKIP not allowed (HATCHERY_TESTS_MUST_RUN=1): {reason}"
        );
        eprintln!("SKIP {reason}");
    }
    available
}

/// Whether this process can create a user namespace.
pub fn user_namespaces_work() -> bool {
    std::process::Command::new("/usr/bin/unshare")
        .args(["--user", "--map-root-user", "/bin/true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The directory holding the workspace's binaries (`hatchery`, `hatchery-shim`, the helpers).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.join("hatchery").is_file() {
        return dir;
    }
    dir.parent().expect("target dir").to_path_buf()
}

/// Path of a helper program built from `tests/src/bin/<name>.rs`.
pub fn helper(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Direct children of this process that are still around (zombies included).
pub fn child_pids() -> Vec<i32> {
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// A two-worker tokio runtime with I/O and time drivers, for the async API tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `root` and every process below it, from /proc (parent links read once, then followed).
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// A readiness signal for "every process of a request is gone": a FIFO whose write end the
/// request's processes inherit (`exec 3>/out/lifeline` in the command, before it forks
/// anything). The read end reports a hang-up exactly when the last of them has died, so tests
/// wait for that instead of sleeping.
pub struct Lifeline {
    reader: std::fs::File,
}

impl Lifeline {
    /// Creates `dir/lifeline` (mode 0666, so an unprivileged container user may open it) and
    /// opens its read end.
    pub fn new(dir: &std::path::Path) -> Lifeline {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = dir.join("lifeline");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        #[allow(unsafe_code)]
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
        assert_eq!(r, 0, "mkfifo {}", path.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        Lifeline { reader }
    }

    /// Waits until every holder of the write end has exited (a hang-up on the read end); false
    /// if some holder is still alive after `limit`.
    pub fn all_gone_within(&self, limit: std::time::Duration) -> bool {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut p = libc::pollfd {
                fd: self.reader.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            #[allow(unsafe_code)]
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
            if n == 0 {
                return false;
            }
            if p.revents & libc::POLLHUP != 0 {
                return true;
            }
            // Data (nobody writes any) or EINTR: drain and look again.
            let mut buf = [0u8; 64];
            let _ = (&self.reader).read(&mut buf);
        }
    }
}

/// Runs the built `hatchery` binary and collects its output. With the shim it embeds, as a
/// user's `hatchery run` does: as root, from root's cached copy (`tests/tests/shim_cache.rs`),
/// otherwise from a sealed memfd.
pub fn hatchery(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("hatchery"))
        .args(args)
        .env_remove("HATCHERY_SHIM")
        .output()
        .expect("run the hatchery binary")
}

/// Bytes as (lossy) text, for assertions and messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The cgroup `text` (a `/proc/<pid>/cgroup`) names for `controller` (`""`: the v2 line).
pub fn cgroup_of(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            "" => ctl.is_empty(),
            c => ctl.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// Where this process's containers get their cgroups, one directory per hierarchy; empty when
/// limits are rlimits. Rlimits are expected of an unprivileged user without a delegated cgroup
/// (nothing to test then); as root they mean no usable cgroup, a skip ([`require`]).
pub fn cgroup_parents() -> Vec<PathBuf> {
    use hatchery::cgroup::Mechanism;
    match hatchery::cgroup::mechanism() {
        Mechanism::CgroupV2(p) => vec![p.clone()],
        Mechanism::CgroupV1 => {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            ["memory", "pids"]
                .iter()
                .filter_map(|c| {
                    let path = cgroup_of(&own, c)?;
                    Some(
                        PathBuf::from("/sys/fs/cgroup")
                            .join(c)
                            .join(path.trim_start_matches('/')),
                    )
                })
                .collect()
        }
        _ => {
            require(!is_root(), "no usable cgroup as root");
            Vec::new()
        }
    }
}
