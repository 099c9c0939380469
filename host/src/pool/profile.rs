//! The pool's secure default profile (DESIGN.md, "Confinement, secure by default").

use std::path::Path;

use crate::container::{Container, Namespace};
use crate::landlock::{CompatMode, Ruleset};
use crate::seccomp::Profile;

/// Memory of a zygote's container (its one request by default): a cgroup limit where one is
/// available, `RLIMIT_AS` otherwise.
pub const DEFAULT_MEMORY_BYTES: u64 = 1 << 30;

/// Processes and threads of a zygote's container.
pub const DEFAULT_PIDS: u64 = 256;

/// Open files per process.
pub const DEFAULT_NOFILE: u64 = 1024;

/// Size of the private `/tmp` every request gets by default.
pub const DEFAULT_TMP_BYTES: u64 = 64 << 20;

const PASSWD: &str =
    "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// `/etc` entries shared read-only from the host when they exist: the dynamic linker's cache and
/// configuration, the time zone, TLS certificates, and Debian's alternatives links (which
/// commands such as `awk` go through).
const ETC_SHARED: [&str; 6] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/ssl/certs",
    "/etc/alternatives",
];

/// Adds the host's `/usr` read-only and recreates `/bin /sbin /lib*` as on the host: links
/// when they are links (merged /usr), read-only binds otherwise.
pub fn add_system_dirs(c: &mut Container) {
    c.bindmount_ro("/usr", "/usr");
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let p = Path::new("/").join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&p) {
                    c.symlink(&target.to_string_lossy(), &format!("/{name}"));
                }
            }
            Ok(m) if m.is_dir() => {
                c.bindmount_ro(&p.to_string_lossy(), &format!("/{name}"));
            }
            _ => {}
        }
    }
}

/// The default profile of a pool: every namespace (no network but loopback), a read-only
/// minimal root (`/usr` and the `/bin /lib*` links), an `/etc` with only a synthetic
/// passwd/group naming the sandbox's users plus the linker cache, time zone and certificates,
/// a fresh `/proc`, a minimal `/dev`, and a 64 MiB `/tmp` that every request gets afresh;
/// 1 GiB of memory, 256 processes and 1024 open files per process;
/// the [`podman`](crate::seccomp::Profile::Podman) seccomp policy (violations reported), and
/// landlock restricting everything ([`Ruleset::restrict_all`]: the file system as the mounts
/// allow, no TCP bind or connect, signals and abstract unix sockets scoped to each request)
/// with [`CompatMode::BestEffort`]: what the kernel cannot enforce is reported in
/// [`Pool::features`](crate::Pool::features). Use `CompatMode::Enforce` to demand it.
pub fn default_profile() -> Container {
    let mut c = Container::new();
    c.unshare(Namespace::Ipc)
        .unshare(Namespace::Network)
        .unshare(Namespace::Cgroup)
        .hostname("hatchery");
    add_system_dirs(&mut c);
    for p in ETC_SHARED {
        if Path::new(p).exists() {
            c.bindmount_ro(p, p);
        }
    }
    c.file("/etc/passwd", PASSWD)
        .file("/etc/group", GROUP)
        .devfsmount("/dev")
        .tmpfsmount_sized("/tmp", DEFAULT_TMP_BYTES);
    c.cgroup_memory(DEFAULT_MEMORY_BYTES)
        .cgroup_pids_limit(DEFAULT_PIDS)
        .setrlimit(crate::Rlimit::Nofile, DEFAULT_NOFILE, DEFAULT_NOFILE);
    if let Some(f) = Profile::Podman.filter() {
        c.seccomp_filter(f);
    }
    let mut rules = Ruleset::new();
    rules.restrict_all(CompatMode::BestEffort);
    c.landlock_ruleset(rules);
    c
}
