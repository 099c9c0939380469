//! Sandbox options shared by `hatchery run` and `hatchery map`, named as in `hakoniwa run`.

use clap::Args;
use hatchery::{Container, Namespace, Rlimit};

/// Sandbox options shared by `hatchery run` and `hatchery map`, named as in `hakoniwa run`.
#[derive(Args, Debug, Default)]
pub struct SandboxArgs {
    /// Create new CGROUP, IPC, NETWORK and UTS namespaces
    #[arg(long)]
    pub unshare_all: bool,
    /// Create a new CGROUP namespace
    #[arg(long)]
    pub unshare_cgroup: bool,
    /// Create a new IPC namespace
    #[arg(long)]
    pub unshare_ipc: bool,
    /// Create a new NETWORK namespace (loopback only)
    #[arg(long)]
    pub unshare_network: bool,
    /// Create a new UTS namespace
    #[arg(long)]
    pub unshare_uts: bool,
    /// Use ROOTDIR as the container's root (read-only; `ROOTDIR:rw` for read-write)
    #[arg(long, value_name = "ROOTDIR[:rw]")]
    pub rootdir: Option<String>,
    /// Bind mount the subdirectories of ROOTFS read-only (`none` for an empty root; default `/`)
    #[arg(long, value_name = "PATH|none")]
    pub rootfs: Option<String>,
    /// Bind mount HOST_PATH read-only at CONTAINER_PATH (default: the same path)
    #[arg(short = 'b', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    pub bindmount_ro: Vec<String>,
    /// Bind mount HOST_PATH read-write at CONTAINER_PATH (default: the same path)
    #[arg(short = 'B', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    pub bindmount_rw: Vec<String>,
    /// Mount a minimal devfs at CONTAINER_PATH
    #[arg(long, value_name = "CONTAINER_PATH")]
    pub devfs: Vec<String>,
    /// Mount a new tmpfs at CONTAINER_PATH
    #[arg(long, value_name = "CONTAINER_PATH")]
    pub tmpfs: Vec<String>,
    /// Create a directory at CONTAINER_PATH (mode in octal, default 755)
    #[arg(long, value_name = "CONTAINER_PATH[:MODE]")]
    pub dir: Vec<String>,
    /// Create a symbolic link LINK pointing to ORIGINAL
    #[arg(long, value_name = "ORIGINAL:LINK")]
    pub symlink: Vec<String>,
    /// Run as UID in the container (mapped to you; to nobody when you are root)
    #[arg(short = 'u', long, value_name = "UID")]
    pub uidmap: Option<u32>,
    /// Run as GID in the container (mapped to your group; to nogroup when you are root)
    #[arg(short = 'g', long, value_name = "GID")]
    pub gidmap: Option<u32>,
    /// Map a whole id range from /etc/subuid and /etc/subgid (needs newuidmap/newgidmap)
    #[arg(long, value_name = "auto")]
    pub userns: Option<String>,
    /// Run as USER, with GROUP and supplementary groups, resolved in the container's /etc
    #[arg(long, value_name = "USER[:GROUP[:SUPPLEMENTARY,...]]")]
    pub user: Option<String>,
    /// Hostname in the container (implies --unshare-uts)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set an environment variable (NAME alone copies it from the host)
    #[arg(short = 'e', long, value_name = "NAME[=VALUE]")]
    pub setenv: Vec<String>,
    /// Bind mount HOST_PATH read-write at the same path and run there; `:DIR` only changes
    /// into DIR
    #[arg(short = 'w', long, value_name = "HOST_PATH|:DIR")]
    pub workdir: Option<String>,
    /// Limit the virtual memory size, in bytes
    #[arg(long, value_name = "LIMIT")]
    pub limit_as: Option<u64>,
    /// Limit the size of core files, in bytes
    #[arg(long, value_name = "LIMIT")]
    pub limit_core: Option<u64>,
    /// Limit the CPU time, in seconds
    #[arg(long, value_name = "LIMIT")]
    pub limit_cpu: Option<u64>,
    /// Limit the size of files the command creates, in bytes
    #[arg(long, value_name = "LIMIT")]
    pub limit_fsize: Option<u64>,
    /// Limit the number of open files
    #[arg(long, value_name = "LIMIT")]
    pub limit_nofile: Option<u64>,
    /// Limit the wall time, in seconds (fractions allowed)
    #[arg(long, value_name = "LIMIT")]
    pub limit_walltime: Option<f64>,
}

pub fn split_pair(s: &str) -> (&str, Option<&str>) {
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

/// Applies the options to `c`. `rootfs_default` is the root used when neither --rootfs nor
/// --rootdir is given (`None`: keep what `c` has).
pub fn apply(
    mut c: Container,
    args: &SandboxArgs,
    rootfs_default: Option<&str>,
) -> Result<(Container, Vec<String>, Option<String>), String> {
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
    let rootfs = args.rootfs.as_deref().or(rootfs_default);
    if let Some(r) = rootfs.filter(|r| *r != "none" && args.rootdir.is_none()) {
        let p = canonical("--rootfs", r)?;
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
