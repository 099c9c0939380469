//! `hatchery learn [RUN OPTIONS] -o PROFILE.toml [FILE…] -- COMMAND`: runs a helper on sample
//! inputs under a recording supervisor and writes the smallest profile it needs.
//!
//! ```text
//!  each FILE as stdin ─▶ container: the host's root read-only (--rootdir /), /dev, /proc, a
//!                        fresh /tmp, the RUN OPTIONS; every system call notified, recorded,
//!                        allowed (no landlock, no seccomp policy: allow and record)
//!        ▼ Learned (calls, paths and rights, families, ports) + usage peaks, merged
//!  profile: mounts (the system, then the directories the helper read, never a secret or a
//!           home), a tmpfs where it wrote, landlock on fs and TCP (mirroring the mounts) with
//!           the ports it used, seccomp podman narrowed to the calls it made, limits from the
//!           peaks with headroom, the command
//! ```
//!
//! Recording allows everything the namespaces and limits allow: learn on trusted samples only,
//! never on untrusted inputs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hatchery::{Learned, Stdio};

use crate::log::{Level, Log};
use crate::sandbox::{apply, SandboxArgs};

/// Options of `hatchery learn`.
#[derive(Args, Debug)]
pub struct LearnArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Write the learned profile here (TOML, for `hatchery run -c` and `hatchery map -c`)
    #[arg(short = 'o', long, value_name = "PROFILE.toml")]
    output: PathBuf,
    /// Show each run's recorded use
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Sample inputs, each given to one run as its stdin (none: one run with stdin empty)
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The helper and its arguments
    #[arg(last = true, value_name = "COMMAND", required = true)]
    argv: Vec<String>,
}

/// What one or more recorded runs used.
#[derive(Default)]
struct Use {
    learned: Learned,
    max_rss_kib: u64,
    max_wall: Duration,
    max_cpu: Duration,
    runs: usize,
    failed: Vec<String>,
}

/// Runs `hatchery learn`.
pub fn execute(args: LearnArgs) -> i32 {
    let log = Log {
        level: Level::from_flags(u8::from(args.verbose), 0),
    };
    let mut sandbox = args.sandbox.clone();
    if sandbox.rootdir.is_none() && sandbox.rootfs.is_none() {
        sandbox.rootdir = Some("/".into());
    }
    for (list, path) in [(&mut sandbox.devfs, "/dev"), (&mut sandbox.tmpfs, "/tmp")] {
        if !list.iter().any(|p| p == path) {
            list.push(path.into());
        }
    }
    if sandbox.landlock_restrict_all
        || sandbox.landlock_restrict_fs
        || sandbox.landlock_restrict_tcp_bind
        || sandbox.landlock_restrict_tcp_connect
    {
        log.note("learn: landlock options are ignored while recording (the profile gets its own)");
        sandbox.landlock_restrict_all = false;
        sandbox.landlock_restrict_fs = false;
        sandbox.landlock_restrict_tcp_bind = false;
        sandbox.landlock_restrict_tcp_connect = false;
    }
    let mut applied = match apply(hatchery::Container::new(), &sandbox, None) {
        Ok(a) => a,
        Err(e) => {
            log.error(e);
            return 125;
        }
    };
    applied.container.learn(true);
    let mut argv = args.argv.clone();
    argv[0] = crate::run::host_program(&argv[0]);
    let inputs: Vec<Option<&PathBuf>> = if args.files.is_empty() {
        vec![None]
    } else {
        args.files.iter().map(Some).collect()
    };
    let mut total = Use::default();
    for input in inputs {
        let name = input.map_or("(no input)".to_string(), |p| p.display().to_string());
        let stdin = match input {
            None => Stdio::null(),
            Some(p) => match std::fs::File::open(p) {
                Ok(f) => Stdio::from(f),
                Err(e) => {
                    log.error(format!("{}: {e}", p.display()));
                    return 2;
                }
            },
        };
        let mut cmd = applied.container.command(&argv[0]);
        cmd.args(&argv[1..]);
        for (k, v) in &applied.env {
            cmd.env(k, v);
        }
        if let Some(w) = &applied.workdir {
            cmd.current_dir(Path::new(w));
        }
        cmd.wait_timeout(Duration::from_secs_f64(
            sandbox.limit_walltime.unwrap_or(300.0),
        ));
        cmd.stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let status = match cmd.status() {
            Ok(s) => s,
            Err(e) => {
                log.error(format!("{name}: {e}"));
                return e.exit_code();
            }
        };
        if !status.success() {
            log.note(format!(
                "{name}: {}: its use is recorded, but the profile may lack what success needs",
                status.reason
            ));
            total.failed.push(name.clone());
        }
        let Some(learned) = status.learned() else {
            log.error(format!("{name}: the shim reported no recorded use"));
            return 125;
        };
        if args.verbose {
            log.note(format!(
                "{name}: {} distinct calls, {} paths, families {:?}, ports {:?}",
                learned.syscalls.len(),
                learned.paths.len(),
                learned.families,
                learned.ports
            ));
        }
        total.learned.merge(learned);
        if let Some(r) = status.rusage() {
            total.max_rss_kib = total.max_rss_kib.max(r.max_rss);
            total.max_wall = total.max_wall.max(r.real_time);
            total.max_cpu = total.max_cpu.max(r.user_time + r.system_time);
        }
        total.runs += 1;
    }
    let (text, summary) = match profile(&argv, &sandbox, &total) {
        Ok(t) => t,
        Err(e) => {
            log.error(e);
            return 125;
        }
    };
    if let Err(e) = std::fs::write(&args.output, text) {
        log.error(format!("-o {}: {e}", args.output.display()));
        return 1;
    }
    eprintln!(
        "hatchery learn: wrote {} ({summary})",
        args.output.display()
    );
    0
}

/// Host directories a learned profile never mounts, whatever the helper read there.
const NEVER: &[&str] = &[
    "/home", "/root", "/proc", "/sys", "/dev", "/tmp", "/run", "/var/run",
];

/// The mount that gives a read path: `/usr`, a top-level system directory, `/etc/NAME`, or the
/// first two components elsewhere (`/opt/tool`, `/var/lib`). `None`: never mounted.
fn mount_for(path: &Path) -> Option<PathBuf> {
    if NEVER.iter().any(|n| path.starts_with(n)) {
        return None;
    }
    let parts: Vec<_> = path.components().skip(1).collect();
    let first = parts.first()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "usr" | "bin" | "sbin" | "lib" | "lib32" | "lib64" | "libx32" => {
            Some(PathBuf::from("/").join(first))
        }
        "etc" => {
            let p: PathBuf = path.components().take(3).collect();
            let s = p.to_str()?;
            (!hatchery::pool::etc_is_secret(s) && p != Path::new("/etc")).then_some(p)
        }
        _ => {
            let p: PathBuf = path.components().take(3).collect();
            Some(p)
        }
    }
}

/// The profile text and a one-line summary.
fn profile(argv: &[String], sandbox: &SandboxArgs, u: &Use) -> Result<(String, String), String> {
    use hatchery::seccomp::Profile;
    const WRITES: u64 = !(1 | 1 << 2 | 1 << 3); // anything but execute and reads
    let mut mounts: BTreeSet<PathBuf> = BTreeSet::new();
    let mut skipped: BTreeSet<PathBuf> = BTreeSet::new();
    let mut wrote_elsewhere: BTreeSet<PathBuf> = BTreeSet::new();
    let mut dev = false;
    for (path, access, exists) in &u.learned.paths {
        if path.starts_with("/dev") {
            dev = true;
        }
        if access & WRITES != 0 {
            if !["/tmp", "/dev", "/proc"]
                .iter()
                .any(|v| path.starts_with(v))
            {
                wrote_elsewhere.insert(path.clone());
            }
            continue;
        }
        if !exists {
            continue;
        }
        match mount_for(path) {
            // A merged /usr's links are recreated, not mounted.
            Some(m) if std::fs::read_link(&m).is_ok() && m.parent() == Some(Path::new("/")) => {}
            Some(m) if Path::new(&m).exists() => {
                mounts.insert(m);
            }
            Some(_) => {}
            None if !["/proc", "/dev", "/tmp", "/sys"]
                .iter()
                .any(|v| path.starts_with(v)) =>
            {
                skipped.insert(path.clone());
            }
            None => {}
        }
    }
    // A mount inside another one is redundant.
    let all: Vec<PathBuf> = mounts.iter().cloned().collect();
    mounts.retain(|m| !all.iter().any(|o| o != m && m.starts_with(o)));
    let podman = Profile::from_name("podman")
        .and_then(|p| p.filter())
        .ok_or("the podman seccomp profile is missing")?;
    let allowed = podman.allowed_syscalls();
    let mut calls: Vec<String> = u
        .learned
        .syscalls
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| allowed.contains(n))
        .collect();
    // What hatchery's own start of the helper makes after the filter is in place: the late
    // limits and the exec.
    calls.extend(["execve".to_string(), "prlimit64".to_string()]);
    calls.sort();
    calls.dedup();
    let outside: Vec<&String> = u
        .learned
        .syscalls
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !allowed.contains(*n))
        .collect();
    let forks = u
        .learned
        .syscalls
        .iter()
        .filter(|(n, _)| matches!(n.as_str(), "clone" | "clone3" | "fork" | "vfork"))
        .map(|(_, c)| *c as u64)
        .sum::<u64>();
    let inet = u
        .learned
        .families
        .iter()
        .any(|f| *f == libc::AF_INET || *f == libc::AF_INET6);

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Learned by `hatchery learn` from {} sample run(s) of:\n#   {}\n# Recorded on trusted \
         samples; it allows what they needed, for inputs like them. Run it with\n#   hatchery run \
         -c THIS_FILE [-- COMMAND]   or   hatchery map -c THIS_FILE ...",
        u.runs,
        shell_words(argv)
    );
    if !u.failed.is_empty() {
        let _ = writeln!(
            t,
            "# These samples failed while recorded (their use is included): {}",
            u.failed.join(", ")
        );
    }
    t.push_str("\nhostname = \"sandbox\"\n\n");
    for ns in ["cgroup", "ipc", "uts"] {
        let _ = writeln!(t, "[[namespaces]]\ntype = \"{ns}\"");
    }
    let network = sandbox.network.as_ref().map(|(m, _)| m.as_str());
    match network {
        Some(mode) if mode != "none" => {
            let _ = writeln!(t, "\n[network]\nmode = \"{mode}\"");
        }
        _ => {
            let _ = writeln!(t, "[[namespaces]]\ntype = \"network\"");
        }
    }
    t.push_str("\n# What the helper read (the system, its configuration and data).\n");
    // Paths are recorded resolved: a merged /usr's links are recreated as on the host.
    for d in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        if let Ok(target) = std::fs::read_link(d) {
            let _ = writeln!(
                t,
                "[[filesystem.symlinks]]\noriginal = {:?}\nlink = {d:?}",
                target.display().to_string()
            );
        }
    }
    for m in &mounts {
        let _ = writeln!(t, "[[mounts]]\nsource = {:?}", m.display().to_string());
    }
    if dev {
        t.push_str("[[mounts]]\nsource = \"/dev\"\ntype = \"devfs\"\n");
    }
    t.push_str("[[mounts]]\nsource = \"/tmp\"\ntype = \"tmpfs\"\n");
    for p in &skipped {
        let _ = writeln!(
            t,
            "# read, never mounted by learn (homes, secrets): {}",
            p.display()
        );
    }
    for p in &wrote_elsewhere {
        let _ = writeln!(
            t,
            "# written, not made writable (add a tmpfs or a writable bind if needed): {}",
            p.display()
        );
    }
    t.push_str(
        "\n# Landlock mirrors the mounts (read-only binds: read and execute; the tmpfs: \
         read-write).\n[landlock]\nresources = [{ type = \"fs\" }, { type = \"tcp.bind\" }, \
         { type = \"tcp.connect\" }]\n",
    );
    for (port, connect) in &u.learned.ports {
        let access = if *connect { "tcp.connect" } else { "tcp.bind" };
        let _ = writeln!(t, "[[landlock.net]]\nport = {port}\naccess = \"{access}\"");
    }
    let _ = writeln!(
        t,
        "\n# podman's policy, narrowed to the {} calls the samples made (of its {}).",
        calls.len(),
        allowed.len()
    );
    if !outside.is_empty() {
        let _ = writeln!(
            t,
            "# Made but outside podman's policy (stay refused): {}",
            outside
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(t, "[seccomp]\npath = \"podman\"\nsyscalls = [");
    for c in &calls {
        let _ = writeln!(t, "  {c:?},");
    }
    t.push_str("]\n");
    let mut families = u.learned.families.clone();
    families.sort_unstable();
    let _ = writeln!(
        t,
        "# Socket address families the samples created.\nfamilies = {families:?}"
    );
    if inet && network.map_or(true, |m| m == "none") {
        t.push_str("# The samples made internet sockets without a network: none is given.\n");
    }
    // Limits from the peaks, with headroom.
    let mem = (u.max_rss_kib * 1024 * 4).max(64 << 20);
    let wall = (u.max_wall.as_secs_f64() * 10.0).ceil().max(30.0) as u64;
    let cpu = (u.max_cpu.as_secs_f64() * 10.0).ceil().max(10.0) as u64;
    let pids = ((forks + 1) * 4).max(16);
    let _ = writeln!(
        t,
        "\n# Limits: 4x the peak memory ({} KiB), 10x the longest run ({:.2} s wall, {:.2} s \
         CPU), 4x the processes.\n[[limits]]\ntype = \"walltime\"\nvalue = {wall}\n[[limits]]\n\
         type = \"cpu\"\nvalue = {cpu}\n[[limits]]\ntype = \"nofile\"\nvalue = 1024\n\n[cgroup]\n\
         memory = {mem}\npids_limit = {pids}",
        u.max_rss_kib,
        u.max_wall.as_secs_f64(),
        u.max_cpu.as_secs_f64()
    );
    let _ = writeln!(t, "\n[command]\ncmdline = [");
    for a in argv {
        let _ = writeln!(t, "  {a:?},");
    }
    t.push_str("]\n");
    let summary = format!(
        "{} mounts, {} of podman's {} system calls, {} ports, from {} run(s)",
        mounts.len() + usize::from(dev) + 1,
        calls.len(),
        allowed.len(),
        u.learned.ports.len(),
        u.runs
    );
    Ok((t, summary))
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_the_system_etc_entries_and_two_components_elsewhere() {
        assert_eq!(mount_for(Path::new("/usr/lib/x/y.so")), Some("/usr".into()));
        assert_eq!(
            mount_for(Path::new("/etc/ImageMagick-6/policy.xml")),
            Some("/etc/ImageMagick-6".into())
        );
        assert_eq!(mount_for(Path::new("/etc/shadow")), None);
        assert_eq!(mount_for(Path::new("/etc")), None);
        assert_eq!(
            mount_for(Path::new("/opt/tool/share/a")),
            Some("/opt/tool".into())
        );
        assert_eq!(mount_for(Path::new("/home/me/.config")), None);
        assert_eq!(mount_for(Path::new("/root/.bashrc")), None);
        assert_eq!(mount_for(Path::new("/proc/self/maps")), None);
    }
}
