//! Sandbox options shared by `hatchery run` and `hatchery map`, named and parsed as in
//! `hakoniwa run` (hakoniwa-cli 1.8.0), plus hatchery's own (`--etc`, `--limit-walltime` with
//! fractions, `--seccomp strict`, `--dir PATH:MODE`).

use std::path::PathBuf;

use clap::Args;
use hatchery::landlock::{FsAccess, Resource};
use hatchery::{Container, Namespace, Rlimit, Runctl};

/// A uid or gid range `(container_id, host_id, count)`.
pub type IdRange = (u32, u32, u32);

/// Sandbox options shared by `hatchery run` and `hatchery map`, named as in `hakoniwa run`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
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
    /// Create a new NETWORK namespace: only a loopback device, down, as in hakoniwa (use
    /// --network pasta for a network). Without it `hatchery run` shares the host's network,
    /// abstract unix sockets included (hakoniwa's default); `hatchery map` always has its own
    #[arg(long)]
    pub unshare_network: bool,
    /// Create a new UTS namespace
    #[arg(long)]
    pub unshare_uts: bool,
    /// Use ROOTDIR as the container's root (read-only; `ROOTDIR:rw` for read-write). Unless
    /// ROOTDIR has a /bin, the default --rootfs / is bound into it too (as in hakoniwa)
    #[arg(long, value_name = "ROOTDIR[:rw]")]
    pub rootdir: Option<String>,
    /// Bind mount the subdirectories of ROOTFS read-only (`none` for an empty root; default `/`,
    /// where only bin etc lib lib64 lib32 sbin usr are taken)
    #[arg(long, value_name = "PATH|none")]
    pub rootfs: Option<String>,
    /// Bind mount HOST_PATH read-only at CONTAINER_PATH (default: HOST_PATH as given) (repeatable)
    #[arg(short = 'b', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    pub bindmount_ro: Vec<String>,
    /// Bind mount HOST_PATH read-write at CONTAINER_PATH (default: HOST_PATH as given)
    /// (repeatable). As root the guest is mapped to nobody: HOST_PATH must be writable by
    /// 65534 (hatchery warns otherwise)
    #[arg(short = 'B', long, value_name = "HOST_PATH[:CONTAINER_PATH]")]
    pub bindmount_rw: Vec<String>,
    /// Share the host's /etc/NAME read-only (e.g. `--etc fonts`); secrets such as shadow,
    /// sudoers or ssh keys are refused. An absolute HOST_DIR (`/etc`, not `/etc/NAME`) mirrors
    /// it into /etc entry by entry (hakurei's auto-etc, host entries under /etc/.host/PREFIX),
    /// secrets left out
    #[arg(long, value_name = "NAME|HOST_DIR[:PREFIX]")]
    pub etc: Vec<String>,
    /// Mount a new devfs at CONTAINER_PATH: a writable tmpfs with null zero full random urandom
    /// tty, a private devpts and shm (repeatable)
    #[arg(long, value_name = "CONTAINER_PATH")]
    pub devfs: Vec<String>,
    /// Mount a new tmpfs at CONTAINER_PATH (repeatable)
    #[arg(long, value_name = "CONTAINER_PATH")]
    pub tmpfs: Vec<String>,
    /// Create a directory at CONTAINER_PATH with mode 700, or MODE in octal (repeatable)
    #[arg(long, value_name = "CONTAINER_PATH[:MODE]")]
    pub dir: Vec<String>,
    /// Create a symbolic link LINK_PATH pointing to ORIGINAL_PATH (repeatable)
    #[arg(long, value_name = "ORIGINAL_PATH:LINK_PATH")]
    pub symlink: Vec<String>,
    /// Map a whole id range from /etc/subuid and /etc/subgid (`auto`). As root, the
    /// container's ids are the range of root (`root:START:COUNT` in /etc/subuid), never host root
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// UID map: HOST_ID defaults to yours (to nobody when you are root), COUNT to 1 (repeatable)
    #[arg(short = 'u', long, value_name = "CONTAINER_ID[:HOST_ID[:COUNT]]", value_parser = parse_uidmap)]
    pub uidmap: Vec<IdRange>,
    /// GID map: HOST_ID defaults to your group (to nogroup when you are root), COUNT to 1
    /// (repeatable)
    #[arg(short = 'g', long, value_name = "CONTAINER_ID[:HOST_ID[:COUNT]]", value_parser = parse_gidmap)]
    pub gidmap: Vec<IdRange>,
    /// Run as USER, with GROUP and supplementary groups, resolved in the container's /etc
    #[arg(long, value_name = "USER[:GROUP[:SUPPLEMENTARY,...]]")]
    pub user: Option<String>,
    /// Hostname in the container (implies --unshare-uts)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network mode: none (own namespace, loopback down), host, or pasta, pasta:OPTIONS (a
    /// user-mode stack by pasta(1), Debian package passt; OPTIONS comma-separated, e.g.
    /// pasta:-T,8080 to reach the host's 127.0.0.1:8080)
    #[arg(long, value_name = "MODE[:OPTIONS]", value_parser = parse_network)]
    pub network: Option<(String, Vec<String>)>,
    /// Set an environment variable; NAME alone copies it from the host (empty when unset)
    /// (repeatable)
    #[arg(short = 'e', long, value_name = "NAME[=VALUE]", value_parser = parse_setenv)]
    pub setenv: Vec<(String, String)>,
    /// Bind mount HOST_PATH read-write at the same path and run there; `:DIR` only changes
    /// into DIR
    #[arg(short = 'w', long, value_name = "HOST_PATH|:DIR")]
    pub workdir: Option<String>,
    /// Limit the virtual memory size, in bytes (1M = 10^6, 1MiB = 2^20)
    #[arg(long, value_name = "LIMIT", value_parser = parse_size_arg)]
    pub limit_as: Option<u64>,
    /// Limit the size of core files, in bytes
    #[arg(long, value_name = "LIMIT", value_parser = parse_size_arg)]
    pub limit_core: Option<u64>,
    /// Limit the CPU time, in seconds
    #[arg(long, value_name = "LIMIT")]
    pub limit_cpu: Option<u64>,
    /// Limit the size of files the command creates, in bytes (writing beyond fails with EFBIG)
    #[arg(long, value_name = "LIMIT", value_parser = parse_size_arg)]
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
    /// Seccomp: also allow system call NAME (with :ARG0, only when its first argument is
    /// ARG0, e.g. socket:17 for AF_PACKET sockets); what a denial's suggestion says
    #[arg(long, value_name = "NAME[:ARG0]")]
    pub seccomp_allow: Vec<String>,
    /// Seccomp: keep the policy's allowing rules for these calls only (a learned allowlist,
    /// within the policy); every other call gets the policy's default (ENOSYS for podman)
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub seccomp_only: Option<Vec<String>>,
    /// Seccomp, with --seccomp-only: sockets of these address families only (numbers: 1
    /// AF_UNIX, 2 AF_INET, 10 AF_INET6, 16 AF_NETLINK, …)
    #[arg(long, value_name = "FAMILY,...", value_delimiter = ',')]
    pub seccomp_families: Option<Vec<i32>>,
    /// Do not set the no_new_privs bit (setuid programs work inside the user namespace)
    #[arg(long)]
    pub allow_new_privs: bool,
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
    /// Landlock: allow reading beneath these container paths (separated by `,` or `:`;
    /// implies --landlock-restrict-fs)
    #[arg(long, value_name = "PATH,...")]
    pub landlock_fs_ro: Vec<String>,
    /// Landlock: allow reading and writing beneath these container paths
    #[arg(long, value_name = "PATH,...")]
    pub landlock_fs_rw: Vec<String>,
    /// Landlock: allow reading and executing beneath these container paths
    #[arg(long, value_name = "PATH,...")]
    pub landlock_fs_rx: Vec<String>,
    /// Landlock: allow binding these TCP ports (comma-separated)
    #[arg(long, value_name = "PORT,...", value_delimiter = ',')]
    pub landlock_tcp_bind: Vec<u16>,
    /// Landlock: allow connecting to these TCP ports (comma-separated)
    #[arg(long, value_name = "PORT,...", value_delimiter = ',')]
    pub landlock_tcp_connect: Vec<u16>,
    /// Memory limit in bytes (256M = 256*10^6, 256MiB = 256*2^20): a cgroup, RLIMIT_AS without one
    #[arg(long, value_name = "VALUE", value_parser = parse_size_arg)]
    pub cgroup_memory: Option<u64>,
    /// Memory plus swap limit in bytes (the total, as in hakoniwa)
    #[arg(long, value_name = "VALUE", value_parser = parse_size_arg)]
    pub cgroup_memory_swap: Option<u64>,
    /// Limit on processes and threads: a cgroup, RLIMIT_NPROC without one
    #[arg(long, value_name = "VALUE")]
    pub cgroup_pids_limit: Option<u64>,
    /// CPU bandwidth in CPUs (e.g. 0.5); needs a cgroup
    #[arg(long, value_name = "VALUE")]
    pub cgroup_cpus: Option<f64>,

    // What only a profile (-c FILE) can say.
    /// Files to place: (container path, contents, mode).
    #[arg(skip)]
    pub files: Vec<(String, String, u32)>,
    /// Namespaces shared again.
    #[arg(skip)]
    pub share: Vec<Namespace>,
    /// Extra rlimits (soft = hard).
    #[arg(skip)]
    pub rlimits: Vec<(Rlimit, u64)>,
    /// Landlock: resources restricted (true) or lifted (false), in order; path and port rules
    /// that imply nothing.
    #[arg(skip)]
    pub landlock_resources: Vec<(Resource, bool)>,
    #[arg(skip)]
    pub landlock_fs: Vec<(String, FsAccess)>,
    #[arg(skip)]
    pub landlock_net: Vec<(u16, hatchery::landlock::NetAccess)>,
    /// No rootfs default: a profile starts from an empty container (as hakoniwa's).
    #[arg(skip)]
    pub from_profile: bool,
    /// hakurei's ops and parameters.
    #[command(flatten)]
    pub hakurei: crate::hakurei::HakureiArgs,
}

/// Sizes as hakoniwa reads them (the parse-size crate: `1K` = 1000, `1KiB` = 1024).
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{e} (bytes, e.g. 64M or 64MiB)"))
}

fn parse_idmap(s: &str, default_host: u32) -> Result<IdRange, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut ids = Vec::with_capacity(3);
    for p in &parts {
        ids.push(
            p.parse::<u32>()
                .map_err(|_| format!("{p:?} is not an id (CONTAINER_ID[:HOST_ID[:COUNT]])"))?,
        );
    }
    match ids.as_slice() {
        [c] => Ok((*c, default_host, 1)),
        [c, h] => Ok((*c, *h, 1)),
        [c, h, n] => Ok((*c, *h, *n)),
        _ => Err("expected CONTAINER_ID[:HOST_ID[:COUNT]]".to_string()),
    }
}

/// `-u CONTAINER_ID[:HOST_ID[:COUNT]]`: the host id defaults to the caller's (to nobody for
/// root: the guest is never host root).
pub fn parse_uidmap(s: &str) -> Result<IdRange, String> {
    parse_idmap(s, hatchery::idmap::default_host_uid())
}

/// `-g CONTAINER_ID[:HOST_ID[:COUNT]]`.
pub fn parse_gidmap(s: &str) -> Result<IdRange, String> {
    parse_idmap(s, hatchery::idmap::default_host_gid())
}

/// `--network MODE[:OPTIONS]`, OPTIONS split on commas (everything after the first `:`).
pub fn parse_network(s: &str) -> Result<(String, Vec<String>), String> {
    match s.split_once(':') {
        None => Ok((s.to_string(), Vec::new())),
        Some((mode, opts)) => Ok((
            mode.to_string(),
            opts.split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        )),
    }
}

/// `-e NAME=VALUE`, or `NAME` alone: the host's value, empty when unset (as hakoniwa).
pub fn parse_setenv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Ok((s.to_string(), std::env::var(s).unwrap_or_default())),
    }
}

/// Splits `a:b` once.
pub fn split_pair(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// A landlock path list as hakoniwa splits it: on `,` and on `:`.
fn landlock_paths(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .flat_map(|l| l.split([',', ':']))
        .filter(|p| !p.is_empty())
}

/// `NAME` or `NAME:ARG0` (decimal or 0x hex) of `--seccomp-allow`.
pub fn parse_seccomp_allow(spec: &str) -> Result<(String, Option<u64>), String> {
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (spec, None),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("--seccomp-allow {spec:?}: not a system call name"));
    }
    let arg0 = match arg {
        None => None,
        Some(a) => Some(
            match a.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => a.parse(),
            }
            .map_err(|_| format!("--seccomp-allow {spec:?}: ARG0 {a:?} is not a number"))?,
        ),
    };
    Ok((name.to_string(), arg0))
}

fn apply_confinement(c: &mut Container, args: &SandboxArgs) -> Result<(), String> {
    use hatchery::landlock::{CompatMode, NetAccess, Ruleset};
    use hatchery::seccomp::{Filter, Profile};
    let name = args.seccomp.as_deref().unwrap_or("podman");
    let filter = match Profile::from_name(name) {
        Some(profile) => profile.filter(),
        None => Some(Filter::from_oci_file(name).map_err(|e| format!("--seccomp: {e}"))?),
    };
    match filter {
        Some(mut f) => {
            if let Some(only) = &args.seccomp_only {
                f = f
                    .only_allowing(only, args.seccomp_families.as_deref())
                    .map_err(|e| format!("--seccomp-only: {e}"))?;
            } else if args.seccomp_families.is_some() {
                return Err("--seccomp-families narrows --seccomp-only: give both".into());
            }
            for spec in &args.seccomp_allow {
                let (call, arg0) = parse_seccomp_allow(spec)?;
                f.allow_syscall(&call, arg0);
            }
            c.seccomp_filter(f)
        }
        None if args.seccomp_only.is_some() || !args.seccomp_allow.is_empty() => {
            return Err(
                "--seccomp-only and --seccomp-allow need a seccomp policy, not \
                        --seccomp unconfined"
                    .into(),
            )
        }
        None => c.seccomp_unconfined(),
    };
    let fs_paths = !(args.landlock_fs_ro.is_empty()
        && args.landlock_fs_rw.is_empty()
        && args.landlock_fs_rx.is_empty());
    let mut wants = vec![
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
    for (res, on) in &args.landlock_resources {
        for w in wants.iter_mut().filter(|w| w.0 == *res) {
            w.1 = *on;
        }
    }
    let any_rule = !(args.landlock_fs.is_empty() && args.landlock_net.is_empty());
    if wants.iter().any(|(_, w)| *w) || any_rule || !args.landlock_resources.is_empty() {
        // Asked for: enforced, or the container does not start.
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
            for p in landlock_paths(list) {
                r.add_fs_rule(p, access);
            }
        }
        for (p, access) in &args.landlock_fs {
            r.add_fs_rule(p, *access);
        }
        for p in &args.landlock_tcp_bind {
            r.add_net_rule(*p, NetAccess::TcpBind);
        }
        for p in &args.landlock_tcp_connect {
            r.add_net_rule(*p, NetAccess::TcpConnect);
        }
        for (p, access) in &args.landlock_net {
            r.add_net_rule(*p, *access);
        }
        c.landlock_ruleset(r);
    }
    if let Some(m) = args.cgroup_memory {
        c.cgroup_memory(m);
    }
    if let Some(m) = args.cgroup_memory_swap {
        c.cgroup_memory_swap(m);
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

fn canonical(flag: &str, p: &str) -> Result<String, String> {
    std::fs::canonicalize(p)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("{flag}: path {p:?}: {e}"))
}

/// The host directories the guest can change (the writable rootdir, `-B` sources and the
/// workdir), canonical.
pub fn guest_writable(args: &SandboxArgs) -> Result<Vec<PathBuf>, String> {
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

/// The first range of `name` (or `id`) in a subordinate-id file.
pub fn subid_range(file: &str, name: &str, id: u32) -> Result<(u32, u32), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("--userns auto: {file}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .find(|(who, _, _)| *who == name || who.parse::<u32>().ok() == Some(id))
        .map(|(_, start, count)| (start, count))
        .ok_or_else(|| {
            if id == 0 {
                format!(
                    "--userns auto: no range for root in {file}: add one (e.g. \
                     `root:200000:65536`) so the container's ids are that range, never host root"
                )
            } else {
                format!("--userns auto: no range for {name} in {file}")
            }
        })
}

/// The id maps of `--userns auto`: for a user, container 0 is the user and 1.. the user's
/// subordinate range (as hakoniwa); for root, the whole container is root's subordinate range
/// (hakoniwa maps container 0 to host root, which hatchery never does).
pub fn userns_auto() -> Result<(Vec<IdRange>, Vec<IdRange>), String> {
    let euid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(euid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let uid = euid.as_raw();
    let (us, un) = subid_range("/etc/subuid", &user, uid)?;
    let (gs, gn) = subid_range("/etc/subgid", &user, uid)?;
    if euid.is_root() {
        return Ok((vec![(0, us, un)], vec![(0, gs, gn)]));
    }
    let own_g = nix::unistd::getegid().as_raw();
    Ok((
        vec![(0, uid, 1), (1, us, un)],
        vec![(0, own_g, 1), (1, gs, gn)],
    ))
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

/// What [`apply`] made: the container, the environment and the working directory.
pub struct Applied {
    /// The container.
    pub container: Container,
    /// The command's environment, in order.
    pub env: Vec<(String, String)>,
    /// The command's working directory inside the container.
    pub workdir: Option<String>,
}

/// Applies the options to `c`. `rootfs_default` is the root used when neither --rootfs nor
/// --rootdir is given (`None`: keep what `c` has).
pub fn apply(
    mut c: Container,
    args: &SandboxArgs,
    rootfs_default: Option<&str>,
) -> Result<Applied, String> {
    if args.allow_new_privs {
        c.runctl(Runctl::AllowNewPrivs);
    }
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
    for ns in &args.share {
        c.share(*ns);
    }
    let writable = guest_writable(args)?;
    let mut rootfs = args.rootfs.as_deref().or(rootfs_default);
    if let Some(r) = &args.rootdir {
        let (path, opt) = split_pair(r);
        let path = resolve_host("--rootdir", path, &writable)?;
        // As hakoniwa: a root with a file-system hierarchy of its own gets no default rootfs
        // (a /bin link counts even when it dangles on the host, e.g. `bin -> usr/bin` before
        // /usr is bound).
        let has_bin = std::fs::symlink_metadata(std::path::Path::new(&path).join("bin")).is_ok();
        if args.rootfs.is_none() && has_bin {
            rootfs = None;
        }
        match opt {
            None | Some("ro") | Some("") => c.rootdir(&path),
            Some("rw") => c.rootdir_rw(&path),
            Some(o) => return Err(format!("--rootdir: unknown option {o:?} (use :rw)")),
        };
    }
    if let Some(r) = rootfs.filter(|r| *r != "none" && args.hakurei.auto_root.is_none()) {
        let p = canonical("--rootfs", r)?;
        c.rootfs(&p).map_err(|e| format!("--rootfs: {e}"))?;
    }
    for (flag, list, rw) in [
        ("--bindmount-ro", &args.bindmount_ro, false),
        ("--bindmount-rw", &args.bindmount_rw, true),
    ] {
        for b in list {
            let (given, ctr) = split_pair(b);
            let host = resolve_host(flag, given, &writable)?;
            // As hakoniwa: the container path defaults to the path as given (`-b /bin` on a
            // merged-/usr host binds /usr/bin at /bin).
            let ctr = ctr.unwrap_or(given);
            if rw {
                c.bindmount_rw(&host, ctr);
            } else {
                c.bindmount_ro(&host, ctr);
            }
        }
    }
    for name in args.etc.iter().filter(|e| !crate::hakurei::is_auto_etc(e)) {
        let path = etc_path(name)?;
        c.bindmount_ro(&path, &path);
    }
    for d in &args.devfs {
        c.devfsmount(d);
    }
    for t in &args.tmpfs {
        c.tmpfsmount(t);
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
    for d in &args.dir {
        let (path, mode) = split_pair(d);
        let mode = match mode {
            None => 0o700,
            Some(m) => u32::from_str_radix(m, 8).map_err(|_| format!("--dir: bad mode {m:?}"))?,
        };
        c.dir(path, mode);
    }
    for (path, contents, mode) in &args.files {
        c.file_with_mode(path, contents, *mode);
    }
    for s in &args.symlink {
        match s.split_once(':') {
            Some((orig, link)) => c.symlink(orig, link),
            None => return Err(format!("--symlink: expected ORIGINAL:LINK, got {s:?}")),
        };
    }
    if let Some(mode) = &args.userns {
        if mode != "auto" {
            return Err(format!("--userns: unknown mode {mode:?} (only `auto`)"));
        }
        let (u, g) = userns_auto()?;
        c.uidmaps(&u);
        c.gidmaps(&g);
    }
    if !args.uidmap.is_empty() {
        c.uidmaps(&args.uidmap);
    }
    if !args.gidmap.is_empty() {
        c.gidmaps(&args.gidmap);
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
    if let Some((mode, options)) = &args.network {
        match mode.as_str() {
            "none" => {
                c.unshare(Namespace::Network);
            }
            "host" => {
                c.share(Namespace::Network);
            }
            "pasta" => {
                let mut pasta = hatchery::Pasta::default();
                pasta.args(options);
                c.unshare(Namespace::Network).network(pasta);
            }
            other => {
                return Err(format!(
                    "--network: unknown mode {other:?} (none, host or pasta[:OPTIONS])"
                ))
            }
        }
        if mode != "pasta" && !options.is_empty() {
            return Err(format!("--network: mode {mode} takes no options"));
        }
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
    for (r, v) in &args.rlimits {
        c.setrlimit(*r, *v, *v);
    }
    crate::hakurei::apply(
        &mut c,
        &args.hakurei,
        &args.etc,
        args.unshare_all
            || args.unshare_network
            || args
                .network
                .as_ref()
                .is_some_and(|(mode, _)| mode != "host"),
    )?;
    apply_confinement(&mut c, args)?;
    crate::hakurei::apply_seccomp(&mut c, &args.hakurei, args.seccomp.is_some())?;
    Ok(Applied {
        container: c,
        env: args.setenv.clone(),
        workdir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_parse_as_hakoniwa() {
        let own = hatchery::idmap::default_host_uid();
        assert_eq!(parse_uidmap("0"), Ok((0, own, 1)));
        assert_eq!(parse_uidmap("0:1000"), Ok((0, 1000, 1)));
        assert_eq!(parse_uidmap("1:100000:65536"), Ok((1, 100000, 65536)));
        assert!(parse_uidmap("x").is_err());
        assert!(parse_uidmap("1:2:3:4").is_err());
    }

    #[test]
    fn landlock_lists_split_on_colons_and_commas() {
        let l = vec!["/bin:/lib,/usr".to_string(), "/etc".to_string()];
        assert_eq!(
            landlock_paths(&l).collect::<Vec<_>>(),
            ["/bin", "/lib", "/usr", "/etc"]
        );
    }

    #[test]
    fn network_and_env_and_sizes_parse_as_hakoniwa() {
        assert_eq!(parse_network("none"), Ok(("none".into(), vec![])));
        assert_eq!(
            parse_network("pasta:-T,8080"),
            Ok(("pasta".into(), vec!["-T".into(), "8080".into()]))
        );
        assert_eq!(
            parse_setenv("HATCHERY_SURELY_UNSET_VAR"),
            Ok(("HATCHERY_SURELY_UNSET_VAR".into(), String::new()))
        );
        assert_eq!(parse_setenv("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_size_arg("1M"), Ok(1_000_000));
        assert_eq!(parse_size_arg("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size_arg("4096"), Ok(4096));
        assert!(parse_size_arg("lots").is_err());
    }
}
