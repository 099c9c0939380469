//! Flags for hakurei's container ops and parameters (`hakurei.app/container`), shared by
//! `hatchery run` and `hatchery map`, in the style of the other colon-separated, repeatable
//! flags.
//!
//! The ops are added in a fixed order, whatever the order of the flags: `--auto-root`,
//! overlays (`--overlay-ro`, `--overlay-tmp`, `--overlay`), tmpfs (`--tmpfs-sized`,
//! `--tmpfs-ro`), `/dev` (`--dev`, `--dev-writable`), `--bind`, `--place`, `--link-deref`,
//! `--etc HOST_DIR`, `--remount`, then the daemons.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use hatchery::{BindFlags, Container, RemountFlags, SchedPolicy};

/// hakurei's ops and parameters.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub struct HakureiArgs {
    /// Bind every top-level entry of HOST_DIR onto the root (not proc, dev, tmp, mnt, etc),
    /// links recreated; FLAGS: rw, dev, optional. Replaces the default --rootfs
    #[arg(long, value_name = "HOST_DIR[:FLAGS]")]
    pub auto_root: Option<String>,
    /// A persistent overlay at TARGET: the LOWER dirs (uppermost first) under UPPER, where
    /// every change lands; WORK is an empty dir on UPPER's file system
    #[arg(long, value_name = "UPPER:WORK:LOWER[:LOWER...]:TARGET")]
    pub overlay: Vec<String>,
    /// An overlay at TARGET whose changes go to a fresh tmpfs, gone with the container
    #[arg(long, value_name = "LOWER[:LOWER...]:TARGET")]
    pub overlay_tmp: Vec<String>,
    /// A read-only overlay of two or more LOWER dirs (uppermost first) at TARGET
    #[arg(long, value_name = "LOWER:LOWER[:LOWER...]:TARGET")]
    pub overlay_ro: Vec<String>,
    /// Mount a tmpfs of SIZE bytes (K/M/G suffixes; 0 is refused) with MODE (octal, default
    /// 755) at TARGET
    #[arg(long, value_name = "TARGET:SIZE[:MODE]")]
    pub tmpfs_sized: Vec<String>,
    /// Mount an empty read-only tmpfs at TARGET
    #[arg(long, value_name = "TARGET")]
    pub tmpfs_ro: Vec<String>,
    /// Mount a minimal read-only /dev at TARGET, with a private mqueue when `:mqueue`
    #[arg(long, value_name = "TARGET[:mqueue]")]
    pub dev: Vec<String>,
    /// Mount a minimal writable /dev at TARGET, with a private mqueue when `:mqueue`
    #[arg(long, value_name = "TARGET[:mqueue]")]
    pub dev_writable: Vec<String>,
    /// Bind SOURCE at TARGET (default: the same path) with FLAGS: rw, dev (device access),
    /// optional (skip a missing SOURCE); read-only, nodev and required otherwise
    #[arg(long, value_name = "SOURCE[:TARGET[:FLAGS]]")]
    pub bind: Vec<String>,
    /// Place a read-only copy of the host file HOST_FILE at CONTAINER_PATH
    #[arg(long, value_name = "CONTAINER_PATH:HOST_FILE")]
    pub place: Vec<String>,
    /// Create a link at CONTAINER_PATH pointing where the host link HOST_LINK points
    #[arg(long, value_name = "CONTAINER_PATH:HOST_LINK")]
    pub link_deref: Vec<String>,
    /// Add FLAGS (ro, nosuid, nodev, noexec; comma-separated) to the mount at TARGET (after
    /// every other op)
    #[arg(long, value_name = "TARGET:FLAGS")]
    pub remount: Vec<String>,
    /// Start PROGRAM with ARGs in the container before the command, and start the command
    /// once READY_PATH exists (see --daemon-timeout)
    #[arg(long, value_name = "READY_PATH:PROGRAM[:ARG...]")]
    pub daemon: Vec<String>,
    /// How long a --daemon may take to create its READY_PATH, in seconds (default 5)
    #[arg(long, value_name = "SECS")]
    pub daemon_timeout: Option<f64>,
    /// On SIGINT, SIGTERM or SIGHUP, send SIGINT to the command and kill the container after
    /// --wait-delay (default: the shim forwards the signal and hatchery dies with it)
    #[arg(long)]
    pub forward_cancel: bool,
    /// With --forward-cancel: seconds the command has to exit after its SIGINT (default 5)
    #[arg(long, value_name = "SECS")]
    pub wait_delay: Option<f64>,
    /// Seconds to wait for processes the command left behind before killing them (default 0)
    #[arg(long, value_name = "SECS")]
    pub adopt_wait_delay: Option<f64>,
    /// Scheduling policy of the container: other, batch, idle (unprivileged), fifo, rr
    /// (need CAP_SYS_NICE on the host); PRIORITY for fifo and rr
    #[arg(long, value_name = "POLICY[:PRIORITY]")]
    pub scheduler: Option<String>,
    /// Keep the command in the terminal's session (no setsid). Dangerous: it can read the
    /// terminal and, where allowed, type into it
    #[arg(long)]
    pub retain_session: bool,
    /// Share the host's network namespace (the default of `hatchery run`; refused with
    /// --unshare-network)
    #[arg(long)]
    pub host_net: bool,
    /// Do not scope abstract unix sockets with landlock (with --landlock-restrict-all)
    #[arg(long)]
    pub host_abstract: bool,
    /// Keep CAP_SYS_ADMIN in the container. Dangerous: the command can mount and create
    /// namespaces (seccomp policies that deny them still apply)
    #[arg(long)]
    pub privileged: bool,
    /// Forbid the container's processes to create user namespaces (bubblewrap's
    /// --disable-userns: max_user_namespaces is 0 inside)
    #[arg(long)]
    pub disable_userns: bool,
    /// Run the container in the existing cgroup v2 directory CGROUP_DIR
    #[arg(long, value_name = "CGROUP_DIR")]
    pub cgroup: Option<String>,
    /// hakurei's seccomp presets instead of --seccomp: ext, deny-ns, deny-tty, deny-devel,
    /// linux32, strict (comma-separated; deny-tty is added unless --retain-session)
    #[arg(long, value_name = "PRESETS")]
    pub seccomp_preset: Option<String>,
    /// Flags of --seccomp-preset: multiarch, can, bluetooth (comma-separated)
    #[arg(long, value_name = "FLAGS", requires = "seccomp_preset")]
    pub seccomp_preset_flags: Option<String>,
}

/// Whether an `--etc` value is hakurei's auto-etc (`HOST_DIR[:PREFIX]`) rather than a name
/// inside `/etc`: an absolute path other than `/etc/NAME`, or one with a `:PREFIX`.
pub fn is_auto_etc(value: &str) -> bool {
    let (dir, prefix) = split_once(value);
    dir.starts_with('/')
        && (prefix.is_some() || {
            let d = dir.trim_end_matches('/');
            d.is_empty() || d == "/etc" || !d.starts_with("/etc/")
        })
}

fn split_once(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

fn seconds(flag: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{flag}: {v} is not a number of seconds"))
    }
}

fn mode(flag: &str, m: Option<&str>, default: u32) -> Result<u32, String> {
    match m {
        None => Ok(default),
        Some(m) => u32::from_str_radix(m, 8).map_err(|_| format!("{flag}: bad mode {m:?}")),
    }
}

/// Splits `LOWER[:LOWER...]:TARGET` (at least `least` lowers).
fn lowers_and_target<'a>(
    flag: &str,
    spec: &'a str,
    parts: &[&'a str],
) -> Result<(Vec<&'a str>, &'a str), String> {
    match parts.split_last() {
        Some((target, lowers)) if !lowers.is_empty() => Ok((lowers.to_vec(), target)),
        _ => Err(format!(
            "{flag}: expected LOWER[:LOWER...]:TARGET, got {spec:?}"
        )),
    }
}

fn parse_size(flag: &str, s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{flag}: bad size {s:?} (bytes, or with a K/M/G suffix)"))
}

/// The `--etc HOST_DIR[:PREFIX]` values among `etc` (the others are `--etc NAME`).
fn auto_etc<'a>(etc: &'a [String]) -> impl Iterator<Item = &'a String> + 'a {
    etc.iter().filter(|e| is_auto_etc(e))
}

/// Adds the ops and parameters to `c`. `etc` are the `--etc` values; `unshare_network` says
/// whether the container gets its own network.
pub fn apply(
    c: &mut Container,
    a: &HakureiArgs,
    etc: &[String],
    unshare_network: bool,
) -> Result<(), String> {
    if let Some(spec) = &a.auto_root {
        let (dir, flags) = split_once(spec);
        let flags = flags
            .map(|f| {
                BindFlags::from_names(f)
                    .ok_or_else(|| format!("--auto-root: unknown flags {f:?} (rw, dev, optional)"))
            })
            .transpose()?
            .unwrap_or(BindFlags::NONE);
        c.auto_root(canonical("--auto-root", dir)?, flags);
    }
    for spec in &a.overlay_ro {
        let parts: Vec<&str> = spec.split(':').collect();
        let (lowers, target) = lowers_and_target("--overlay-ro", spec, &parts)?;
        c.overlay_readonly(target, &absolute_all("--overlay-ro", &lowers)?);
    }
    for spec in &a.overlay_tmp {
        let parts: Vec<&str> = spec.split(':').collect();
        let (lowers, target) = lowers_and_target("--overlay-tmp", spec, &parts)?;
        c.overlay_ephemeral(target, &absolute_all("--overlay-tmp", &lowers)?);
    }
    for spec in &a.overlay {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() < 4 {
            return Err(format!(
                "--overlay: expected UPPER:WORK:LOWER[:LOWER...]:TARGET, got {spec:?}"
            ));
        }
        let (lowers, target) = lowers_and_target("--overlay", spec, &parts[2..])?;
        let upper = absolute("--overlay", parts[0])?;
        let work = absolute("--overlay", parts[1])?;
        c.overlay(target, upper, work, &absolute_all("--overlay", &lowers)?);
    }
    for spec in &a.tmpfs_sized {
        let mut it = spec.splitn(3, ':');
        let (Some(target), Some(size)) = (it.next(), it.next()) else {
            return Err(format!(
                "--tmpfs-sized: expected TARGET:SIZE[:MODE], got {spec:?}"
            ));
        };
        let size = parse_size("--tmpfs-sized", size)?;
        c.mount_tmpfs(target, size, mode("--tmpfs-sized", it.next(), 0o755)?);
    }
    for t in &a.tmpfs_ro {
        c.readonly_tmpfs(t, 0o755);
    }
    for (flag, list, writable) in [
        ("--dev", &a.dev, false),
        ("--dev-writable", &a.dev_writable, true),
    ] {
        for spec in list {
            let (target, opt) = split_once(spec);
            let mqueue = match opt {
                None => false,
                Some("mqueue") => true,
                Some(o) => return Err(format!("{flag}: unknown option {o:?} (use :mqueue)")),
            };
            if writable {
                c.dev_writable(target, mqueue);
            } else {
                c.dev(target, mqueue);
            }
        }
    }
    for spec in &a.bind {
        let mut it = spec.splitn(3, ':');
        let source = absolute("--bind", it.next().unwrap_or_default())?;
        let target = it
            .next()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| source.to_string_lossy().into_owned());
        let flags = match it.next() {
            None => BindFlags::NONE,
            Some(f) => BindFlags::from_names(f)
                .ok_or_else(|| format!("--bind: unknown flags {f:?} (rw, dev, optional)"))?,
        };
        c.bind_with(source, &target, flags);
    }
    for spec in &a.place {
        let Some((path, file)) = spec.split_once(':') else {
            return Err(format!(
                "--place: expected CONTAINER_PATH:HOST_FILE, got {spec:?}"
            ));
        };
        let data = std::fs::read(file).map_err(|e| format!("--place: {file}: {e}"))?;
        c.place(path, data);
    }
    for spec in &a.link_deref {
        let Some((path, link)) = spec.split_once(':') else {
            return Err(format!(
                "--link-deref: expected CONTAINER_PATH:HOST_LINK, got {spec:?}"
            ));
        };
        c.link(path, link, true);
    }
    for spec in auto_etc(etc) {
        let (dir, prefix) = split_once(spec);
        c.auto_etc(canonical("--etc", dir)?, prefix.unwrap_or(""));
    }
    for spec in &a.remount {
        let Some((target, flags)) = spec.split_once(':') else {
            return Err(format!("--remount: expected TARGET:FLAGS, got {spec:?}"));
        };
        let flags = RemountFlags::from_names(flags).ok_or_else(|| {
            format!("--remount: unknown flags {flags:?} (ro, nosuid, nodev, noexec)")
        })?;
        c.remount(target, flags);
    }
    for spec in &a.daemon {
        let mut it = spec.split(':');
        let (Some(ready), Some(program)) = (it.next(), it.next()) else {
            return Err(format!(
                "--daemon: expected READY_PATH:PROGRAM[:ARG...], got {spec:?}"
            ));
        };
        let args: Vec<&str> = it.collect();
        c.daemon(ready, program, &args);
    }
    if let Some(t) = a.daemon_timeout {
        c.daemon_timeout(seconds("--daemon-timeout", t)?);
    }
    if a.forward_cancel {
        c.forward_cancel(true);
    }
    if let Some(t) = a.wait_delay {
        c.wait_delay(seconds("--wait-delay", t)?);
    }
    if let Some(t) = a.adopt_wait_delay {
        c.adopt_wait_delay(seconds("--adopt-wait-delay", t)?);
    }
    if let Some(spec) = &a.scheduler {
        let (policy, prio) = split_once(spec);
        let policy = match policy {
            "other" => SchedPolicy::Other,
            "batch" => SchedPolicy::Batch,
            "idle" => SchedPolicy::Idle,
            "fifo" => SchedPolicy::Fifo,
            "rr" => SchedPolicy::RoundRobin,
            p => {
                return Err(format!(
                    "--scheduler: unknown policy {p:?} (other, batch, idle, fifo, rr)"
                ))
            }
        };
        let prio = match prio {
            None => 0,
            Some(p) => p
                .parse()
                .map_err(|_| format!("--scheduler: bad priority {p:?}"))?,
        };
        c.scheduler(policy, prio);
    }
    if a.retain_session {
        c.retain_session(true);
    }
    if a.host_net {
        if unshare_network {
            return Err(
                "--host-net contradicts --unshare-network, --unshare-all and --network none|pasta"
                    .into(),
            );
        }
        c.host_net(true);
    }
    if a.host_abstract {
        c.host_abstract(true);
    }
    if a.privileged {
        c.privileged(true);
    }
    if a.disable_userns {
        c.disable_userns(true);
    }
    if let Some(dir) = &a.cgroup {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| format!("--cgroup: {dir}: {e}"))?;
        c.cgroup_fd(fd.into());
    }
    Ok(())
}

/// What must follow `--seccomp` and the landlock flags: `--seccomp-preset` replaces the
/// `--seccomp` default (`explicit_seccomp`: `--seccomp` was given too, which is refused).
pub fn apply_seccomp(
    c: &mut Container,
    a: &HakureiArgs,
    explicit_seccomp: bool,
) -> Result<(), String> {
    if a.seccomp_preset.is_some() && explicit_seccomp {
        return Err("--seccomp-preset replaces --seccomp: give one of them".into());
    }
    if let Some(names) = &a.seccomp_preset {
        use hatchery::seccomp::{PresetFlags, Presets};
        let mut presets = Presets::from_names(names).ok_or_else(|| {
            format!(
                "--seccomp-preset: unknown preset in {names:?} (ext, deny-ns, deny-tty, \
                 deny-devel, linux32, strict)"
            )
        })?;
        if !a.retain_session {
            presets = presets | Presets::DENY_TTY;
        }
        let flags = match &a.seccomp_preset_flags {
            None => PresetFlags::default(),
            Some(f) => PresetFlags::from_names(f).ok_or_else(|| {
                format!("--seccomp-preset-flags: unknown flag in {f:?} (multiarch, can, bluetooth)")
            })?,
        };
        c.seccomp_presets(presets, flags);
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

fn absolute(flag: &str, p: &str) -> Result<std::path::PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{flag}: path {p:?}: {e}"))
}

fn absolute_all(flag: &str, ps: &[&str]) -> Result<Vec<std::path::PathBuf>, String> {
    ps.iter().map(|p| absolute(flag, p)).collect()
}

fn canonical(flag: &str, p: &str) -> Result<std::path::PathBuf, String> {
    std::fs::canonicalize(Path::new(p)).map_err(|e| format!("{flag}: path {p:?}: {e}"))
}

/// With `forward_cancel`, blocks SIGINT, SIGTERM and SIGHUP in this (single-threaded) process
/// and returns a signalfd for them, for [`wait`]. Call it before spawning.
pub fn cancel_signals(
    forward_cancel: bool,
) -> Result<Option<nix::sys::signalfd::SignalFd>, String> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    if !forward_cancel {
        return Ok(None);
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("--forward-cancel: blocking signals: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map(Some)
        .map_err(|e| format!("--forward-cancel: signalfd: {e}"))
}

/// Waits for `child` like [`Child::wait`](hatchery::Child::wait); a signal on `signals` (see
/// [`cancel_signals`]) cancels it instead ([`Child::cancel`](hatchery::Child::cancel): SIGINT
/// to the command, the container killed after the wait delay). `walltime` is the command's
/// wall-time limit, enforced by the child's `try_wait`.
pub fn wait(
    child: &mut hatchery::Child,
    signals: Option<&nix::sys::signalfd::SignalFd>,
    walltime: Option<Duration>,
) -> hatchery::Result<hatchery::ExitStatus> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let Some(sfd) = signals else {
        return child.wait();
    };
    let deadline = walltime.map(|t| std::time::Instant::now() + t);
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let signalled = {
            let Some(event) = child.event_fd() else {
                return child.wait();
            };
            let mut fds = [
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(event, PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(hatchery::Error::Io {
                        op: "poll",
                        source: e.into(),
                    })
                }
            }
            fds[0].revents().is_some_and(|r| !r.is_empty())
        };
        if signalled {
            while let Ok(Some(_)) = sfd.read_signal() {}
            return child.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_values_that_are_auto_etc() {
        for (v, auto) in [
            ("fonts", false),
            ("/etc/fonts", false),
            ("/etc/fonts/", false),
            ("/etc", true),
            ("/etc/", true),
            ("/srv/chroot/etc", true),
            ("/etc/fonts:p", true),
            ("/etc:host", true),
        ] {
            assert_eq!(is_auto_etc(v), auto, "{v}");
        }
    }

    #[test]
    fn overlay_specs_split_into_lowers_and_a_target() {
        let parts = ["/a", "/b", "/t"];
        let (l, t) = lowers_and_target("--overlay-ro", "x", &parts).unwrap();
        assert_eq!((l, t), (vec!["/a", "/b"], "/t"));
        assert!(lowers_and_target("--overlay-tmp", "x", &["/t"]).is_err());
    }
}
