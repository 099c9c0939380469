//! Sandbox options shared by `hatchery run` and `hatchery map`, named as in `hakoniwa run`.

use std::path::PathBuf;

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
    /// Create a new NETWORK namespace (loopback only). Without it `hatchery run` shares the
    /// host's network, abstract unix sockets included (hakoniwa's default); `hatchery map`
    /// always has its own
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
    /// Share the host's /etc/NAME read-only (e.g. `--etc fonts`); secrets such as shadow,
    /// sudoers or ssh keys are refused
    #[arg(long, value_name = "NAME")]
    pub etc: Vec<String>,
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
    /// Seccomp policy: podman (default), strict, audit, unconfined, or an OCI/Docker JSON file
    #[arg(long, value_name = "PROFILE|FILE.json")]
    pub seccomp: Option<String>,
    /// Landlock: restrict the file system, TCP bind and connect, signals and abstract sockets
    #[arg(long)]
    pub landlock_restrict_all: bool,
    /// Landlock: restrict the file system to the mounts and --landlock-fs-* paths
    #[arg(long)]
    pub landlock_restrict_fs: bool,
    /// Landlock: deny binding TCP ports except --landlock-tcp-bind
    #[arg(long)]
    pub landlock_restrict_tcp_bind: bool,
    /// Landlock: deny connecting to TCP ports except --landlock-tcp-connect
    #[arg(long)]
    pub landlock_restrict_tcp_connect: bool,
    /// Landlock: allow reading beneath these container paths (comma-separated)
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub landlock_fs_ro: Vec<String>,
    /// Landlock: allow reading and writing beneath these container paths
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub landlock_fs_rw: Vec<String>,
    /// Landlock: allow reading and executing beneath these container paths
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub landlock_fs_rx: Vec<String>,
    /// Landlock: allow binding these TCP ports (comma-separated)
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub landlock_tcp_bind: Vec<u16>,
    /// Landlock: allow connecting to these TCP ports (comma-separated)
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub landlock_tcp_connect: Vec<u16>,
    /// Memory limit (bytes, or with a K/M/G suffix): a cgroup, RLIMIT_AS without one
    #[arg(long, value_name = "BYTES")]
    pub cgroup_memory: Option<String>,
    /// Limit on processes and threads: a cgroup, RLIMIT_NPROC without one
    #[arg(long, value_name = "N")]
    pub cgroup_pids_limit: Option<u64>,
    /// CPU bandwidth in CPUs (e.g. 0.5); needs a cgroup
    #[arg(long, value_name = "CPUS")]
    pub cgroup_cpus: Option<f64>,
}

fn parse_bytes(flag: &str, s: &str) -> Result<u64, String> {
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

fn apply_confinement(c: &mut Container, args: &SandboxArgs) -> Result<(), String> {
    use hatchery::landlock::{CompatMode, FsAccess, NetAccess, Resource, Ruleset};
    use hatchery::seccomp::{Filter, Profile};
    let name = args.seccomp.as_deref().unwrap_or("podman");
    match Profile::from_name(name) {
        Some(profile) => match profile.filter() {
            Some(f) => c.seccomp_filter(f),
            None => c.seccomp_unconfined(),
        },
        None => {
            let f = Filter::from_oci_file(name).map_err(|e| format!("--seccomp: {e}"))?;
            c.seccomp_filter(f)
        }
    };
    let fs_paths = !(args.landlock_fs_ro.is_empty()
        && args.landlock_fs_rw.is_empty()
        && args.landlock_fs_rx.is_empty());
    let wants = [
        (
            Resource::Fs,
            args.landlock_restrict_all || args.landlock_restrict_fs || fs_paths,
        ),
        (
            Resource::TcpBind,
            args.landlock_restrict_all
                || args.landlock_restrict_tcp_bind
                || !args.landlock_tcp_bind.is_empty(),
        ),
        (
            Resource::TcpConnect,
            args.landlock_restrict_all
                || args.landlock_restrict_tcp_connect
                || !args.landlock_tcp_connect.is_empty(),
        ),
        (Resource::Scope, args.landlock_restrict_all),
    ];
    if wants.iter().any(|(_, w)| *w) {
        // Asked for on the command line: enforced, or the container does not start.
        let mut r = Ruleset::new();
        for (res, w) in wants {
            if w {
                r.restrict(res, CompatMode::Enforce);
            }
        }
        for (list, access) in [
            (&args.landlock_fs_ro, FsAccess::R),
            (&args.landlock_fs_rw, FsAccess::R | FsAccess::W),
            (&args.landlock_fs_rx, FsAccess::R | FsAccess::X),
        ] {
            for p in list {
                r.add_fs_rule(p, access);
            }
        }
        for p in &args.landlock_tcp_bind {
            r.add_net_rule(*p, NetAccess::TcpBind);
        }
        for p in &args.landlock_tcp_connect {
            r.add_net_rule(*p, NetAccess::TcpConnect);
        }
        c.landlock_ruleset(r);
    }
    if let Some(m) = &args.cgroup_memory {
        c.cgroup_memory(parse_bytes("--cgroup-memory", m)?);
    }
    if let Some(n) = args.cgroup_pids_limit {
        c.cgroup_pids_limit(n);
    }
    if let Some(cpus) = args.cgroup_cpus {
        if !(cpus > 0.0 && cpus.is_finite()) {
            return Err(format!("--cgroup-cpus: {cpus} is not a positive number"));
        }
        c.cgroup_cpus(cpus);
    }
    Ok(())
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

/// The host directories the guest can change (the writable rootdir, `-B` sources and the
/// workdir), canonical.
fn guest_writable(args: &SandboxArgs) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    if let Some((path, Some("rw"))) = args.rootdir.as_deref().map(split_pair) {
        out.push(canonical("--rootdir", path)?.into());
    }
    for b in &args.bindmount_rw {
        out.push(canonical("--bindmount-rw", split_pair(b).0)?.into());
    }
    if let Some(w) = args.workdir.as_deref().filter(|w| !w.starts_with(':')) {
        out.push(canonical("--workdir", w)?.into());
    }
    Ok(out)
}

/// Like [`canonical`], except that no link below a directory of `writable` (see
/// [`guest_writable`]) is followed: once the path reaches one, the rest is kept as written, and
/// the shim opens it from there without following links. A guest that swapped a directory of
/// its writable bind for a link to a host path must not get that host path bound next time.
fn resolve_host(flag: &str, p: &str, writable: &[PathBuf]) -> Result<String, String> {
    use std::path::Component;
    let err = |e: std::io::Error| format!("{flag}: path {p:?}: {e}");
    let abs = std::path::absolute(p).map_err(err)?;
    let mut cur = PathBuf::from("/");
    for c in abs.components() {
        let below = writable.iter().any(|w| cur.starts_with(w));
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir if below => {
                return Err(format!(
                    "{flag}: path {p:?}: `..` below a writable bind is not allowed"
                ))
            }
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) if below => cur.push(n),
            Component::Normal(n) => {
                cur.push(n);
                cur = std::fs::canonicalize(&cur).map_err(err)?;
            }
        }
    }
    Ok(cur.to_string_lossy().into_owned())
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

/// `/etc/NAME` for `--etc NAME` (or `--etc /etc/NAME`): an existing entry, inside `/etc`, not
/// a secret.
fn etc_path(name: &str) -> Result<String, String> {
    let rel = name
        .strip_prefix("/etc/")
        .unwrap_or(name)
        .trim_end_matches('/');
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || std::path::Path::new(rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad {
        return Err(format!(
            "--etc {name:?}: expected a name inside /etc, such as fonts"
        ));
    }
    let path = format!("/etc/{rel}");
    if hatchery::pool::etc_is_secret(&path) {
        return Err(format!(
            "--etc {name:?}: {path} holds secrets or credentials and is never shared"
        ));
    }
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(format!(
            "--etc {name:?}: {path} does not exist on this host"
        ));
    }
    Ok(path)
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
    let writable = guest_writable(args)?;
    if let Some(r) = &args.rootdir {
        let (path, opt) = split_pair(r);
        let path = resolve_host("--rootdir", path, &writable)?;
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
            let host = resolve_host(flag, host, &writable)?;
            let ctr = ctr.map(str::to_string).unwrap_or_else(|| host.clone());
            if rw {
                c.bindmount_rw(&host, &ctr);
            } else {
                c.bindmount_ro(&host, &ctr);
            }
        }
    }
    for name in &args.etc {
        let path = etc_path(name)?;
        c.bindmount_ro(&path, &path);
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
                let dir = resolve_host("--workdir", w, &writable)?;
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
    apply_confinement(&mut c, args)?;
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
