//! `hatchery run [OPTIONS] [-- COMMAND...]`.
//!
//! Exit codes: the command's own, 128+n when it was killed by signal n (a wall-time kill is
//! 128+9), 125 when the container failed, 126 when the command could not be executed, 127 when
//! it was not found.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use hatchery::{Container, Namespace, Rlimit};

const SHELL: &str = "/bin/sh";

/// Options of `hatchery run`, named as in `hakoniwa run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Create new CGROUP, IPC, NETWORK and UTS namespaces
    #[arg(long)]
    unshare_all: bool,
    /// Create a new CGROUP namespace
    #[arg(long)]
    unshare_cgroup: bool,
    /// Create a new IPC namespace
    #[arg(long)]
    unshare_ipc: bool,
    /// Create a new NETWORK namespace (loopback only)
    #[arg(long)]
    unshare_network: bool,
    /// Create a new UTS namespace
    #[arg(long)]
    unshare_uts: bool,
    /// Use ROOTDIR as the container's root (read-only; `ROOTDIR:rw` for read-write)
    #[arg(long, value_name = "ROOTDIR[:rw]")]
    rootdir: Option<String>,
    /// Bind mount the subdirectories of ROOTFS read-only (`none` for an empty root)
    #[arg(long, value_name = "PATH|none", default_value = "/")]
    rootfs: String,
    /// Bind mount HOST_PATH read-only at CONTAINER_PATH (default: the same path)
    #[arg(short = 'b', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    bindmount_ro: Vec<String>,
    /// Bind mount HOST_PATH read-write at CONTAINER_PATH (default: the same path)
    #[arg(short = 'B', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    bindmount_rw: Vec<String>,
    /// Mount a minimal devfs at CONTAINER_PATH
    #[arg(long, value_name = "CONTAINER_PATH")]
    devfs: Vec<String>,
    /// Mount a new tmpfs at CONTAINER_PATH
    #[arg(long, value_name = "CONTAINER_PATH")]
    tmpfs: Vec<String>,
    /// Create a directory at CONTAINER_PATH (mode in octal, default 755)
    #[arg(long, value_name = "CONTAINER_PATH[:MODE]")]
    dir: Vec<String>,
    /// Create a symbolic link LINK pointing to ORIGINAL
    #[arg(long, value_name = "ORIGINAL:LINK")]
    symlink: Vec<String>,
    /// Run as UID in the container (mapped to you; to nobody when you are root)
    #[arg(short = 'u', long, value_name = "UID")]
    uidmap: Option<u32>,
    /// Run as GID in the container (mapped to your group; to nogroup when you are root)
    #[arg(short = 'g', long, value_name = "GID")]
    gidmap: Option<u32>,
    /// Map a whole id range from /etc/subuid and /etc/subgid (needs newuidmap/newgidmap)
    #[arg(long, value_name = "auto")]
    userns: Option<String>,
    /// Run as USER, with GROUP and supplementary groups, resolved in the container's /etc
    #[arg(long, value_name = "USER[:GROUP[:SUPPLEMENTARY,...]]")]
    user: Option<String>,
    /// Hostname in the container (implies --unshare-uts)
    #[arg(long)]
    hostname: Option<String>,
    /// Set an environment variable (NAME alone copies it from the host)
    #[arg(short = 'e', long, value_name = "NAME[=VALUE]")]
    setenv: Vec<String>,
    /// Bind mount HOST_PATH read-write at the same path and run there; `:DIR` only changes
    /// into DIR
    #[arg(short = 'w', long, value_name = "HOST_PATH|:DIR")]
    workdir: Option<String>,
    /// Limit the virtual memory size, in bytes
    #[arg(long, value_name = "LIMIT")]
    limit_as: Option<u64>,
    /// Limit the size of core files, in bytes
    #[arg(long, value_name = "LIMIT")]
    limit_core: Option<u64>,
    /// Limit the CPU time, in seconds
    #[arg(long, value_name = "LIMIT")]
    limit_cpu: Option<u64>,
    /// Limit the size of files the command creates, in bytes
    #[arg(long, value_name = "LIMIT")]
    limit_fsize: Option<u64>,
    /// Limit the number of open files
    #[arg(long, value_name = "LIMIT")]
    limit_nofile: Option<u64>,
    /// Limit the wall time, in seconds (fractions allowed)
    #[arg(long, value_name = "LIMIT")]
    limit_walltime: Option<f64>,
    /// Print the plan (mounts, id maps, environment, limits) before running
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Print nothing but the command's own output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The command and its arguments (default: /bin/sh)
    #[arg(last = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

struct Cli {
    quiet: bool,
}

impl Cli {
    fn error(&self, msg: impl std::fmt::Display) -> i32 {
        if !self.quiet {
            eprintln!("hatchery: {msg}");
        }
        125
    }
}

fn split_pair(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

fn canonical(flag: &str, p: &str) -> Result<String, String> {
    std::fs::canonicalize(p)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("{flag}: path {p:?}: {e}"))
}

fn subid_range(file: &str, name: &str, id: u32) -> Result<(u32, u32), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("--userns auto: {file}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .find(|(who, _, _)| *who == name || who.parse::<u32>().ok() == Some(id))
        .map(|(_, start, count)| (start, count))
        .ok_or_else(|| format!("--userns auto: no range for {name} in {file}"))
}

fn build(args: &RunArgs) -> Result<(Container, Vec<String>, Option<String>), String> {
    let mut c = Container::new();
    if args.unshare_all || args.unshare_cgroup {
        c.unshare(Namespace::Cgroup);
    }
    if args.unshare_all || args.unshare_ipc {
        c.unshare(Namespace::Ipc);
    }
    if args.unshare_all || args.unshare_network {
        c.unshare(Namespace::Network);
    }
    if args.unshare_all || args.unshare_uts {
        c.unshare(Namespace::Uts);
    }
    if let Some(r) = &args.rootdir {
        let (path, opt) = split_pair(r);
        let path = canonical("--rootdir", path)?;
        match opt {
            None | Some("ro") => c.rootdir(&path),
            Some("rw") => c.rootdir_rw(&path),
            Some(o) => return Err(format!("--rootdir: unknown option {o:?} (use :rw)")),
        };
    }
    if args.rootfs != "none" && args.rootdir.is_none() {
        let p = canonical("--rootfs", &args.rootfs)?;
        c.rootfs(&p);
    }
    for (flag, list, rw) in [
        ("--bindmount-ro", &args.bindmount_ro, false),
        ("--bindmount-rw", &args.bindmount_rw, true),
    ] {
        for b in list {
            let (host, ctr) = split_pair(b);
            let host = canonical(flag, host)?;
            let ctr = ctr.map(str::to_string).unwrap_or_else(|| host.clone());
            if rw {
                c.bindmount_rw(&host, &ctr);
            } else {
                c.bindmount_ro(&host, &ctr);
            }
        }
    }
    for d in &args.devfs {
        c.devfsmount(d);
    }
    for t in &args.tmpfs {
        c.tmpfsmount(t);
    }
    for d in &args.dir {
        let (path, mode) = split_pair(d);
        let mode = match mode {
            None => 0o755,
            Some(m) => u32::from_str_radix(m, 8).map_err(|_| format!("--dir: bad mode {m:?}"))?,
        };
        c.dir(path, mode);
    }
    for s in &args.symlink {
        match s.split_once(':') {
            Some((orig, link)) => c.symlink(orig, link),
            None => return Err(format!("--symlink: expected ORIGINAL:LINK, got {s:?}")),
        };
    }
    let workdir = match &args.workdir {
        None => None,
        Some(w) => match w.strip_prefix(':') {
            Some(dir) => Some(dir.to_string()),
            None => {
                let dir = canonical("--workdir", w)?;
                c.bindmount_rw(&dir, &dir);
                Some(dir)
            }
        },
    };
    if let Some(mode) = &args.userns {
        if mode != "auto" {
            return Err(format!("--userns: unknown mode {mode:?} (only `auto`)"));
        }
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let uid = nix::unistd::geteuid().as_raw();
        let (us, un) = subid_range("/etc/subuid", &user, uid)?;
        let (gs, gn) = subid_range("/etc/subgid", &user, nix::unistd::getegid().as_raw())?;
        let own_u = hatchery::idmap::default_host_uid();
        let own_g = hatchery::idmap::default_host_gid();
        c.uidmaps(&[(0, own_u, 1), (1, us, un)]);
        c.gidmaps(&[(0, own_g, 1), (1, gs, gn)]);
    }
    if let Some(u) = args.uidmap {
        c.uidmap(u);
    }
    if let Some(g) = args.gidmap {
        c.gidmap(g);
    }
    if let Some(spec) = &args.user {
        let mut parts = spec.splitn(3, ':');
        let user = parts.next().unwrap_or_default();
        let group = parts.next().filter(|g| !g.is_empty());
        let supp: Vec<&str> = parts
            .next()
            .map(|s| s.split(',').filter(|g| !g.is_empty()).collect())
            .unwrap_or_default();
        c.user(user, group, &supp);
    }
    if let Some(h) = &args.hostname {
        c.hostname(h);
    }
    for (r, v) in [
        (Rlimit::As, args.limit_as),
        (Rlimit::Core, args.limit_core),
        (Rlimit::Cpu, args.limit_cpu),
        (Rlimit::Fsize, args.limit_fsize),
        (Rlimit::Nofile, args.limit_nofile),
    ] {
        if let Some(v) = v {
            c.setrlimit(r, v, v);
        }
    }
    let mut env = Vec::new();
    for e in &args.setenv {
        match e.split_once('=') {
            Some(_) => env.push(e.clone()),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok((c, env, workdir))
}

/// Runs `hatchery run` and returns the process exit code.
pub fn execute(args: RunArgs) -> i32 {
    let cli = Cli { quiet: args.quiet };
    let (container, env, workdir) = match build(&args) {
        Ok(x) => x,
        Err(e) => return cli.error(e),
    };
    let argv: Vec<String> = if args.argv.is_empty() {
        vec![SHELL.to_string()]
    } else {
        args.argv.clone()
    };
    let mut cmd = container.command(&argv[0]);
    cmd.args(&argv[1..]);
    for e in &env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(w) = &workdir {
        cmd.current_dir(Path::new(w));
    }
    if let Some(t) = args.limit_walltime {
        if !(t.is_finite() && t > 0.0) {
            return cli.error(format!(
                "--limit-walltime: {t} is not a positive number of seconds"
            ));
        }
        cmd.wait_timeout(Duration::from_secs_f64(t));
    }
    if args.verbose && !args.quiet {
        for line in container.describe() {
            eprintln!("hatchery: {line}");
        }
        eprintln!("hatchery: command: {argv:?}");
        eprintln!("hatchery: env: {env:?}");
        if let Some(w) = &workdir {
            eprintln!("hatchery: workdir: {w}");
        }
        if let Some(t) = args.limit_walltime {
            eprintln!("hatchery: wall-time limit: {t}s");
        }
    }
    match cmd.status() {
        Ok(status) => {
            if status.exit_code.is_none() && !args.quiet {
                eprintln!("hatchery: {}", status.reason);
            }
            if args.verbose && !args.quiet {
                if let Some(r) = &status.rusage {
                    eprintln!(
                        "hatchery: real {:?} user {:?} sys {:?} maxrss {} KiB",
                        r.real_time, r.user_time, r.system_time, r.max_rss
                    );
                }
            }
            status.code
        }
        Err(e) => {
            let code = e.exit_code();
            if !args.quiet {
                eprintln!("hatchery: {e}");
            }
            code
        }
    }
}
