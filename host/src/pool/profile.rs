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

/// `/etc` entries shared read-only from the host when they exist: the configuration real
/// helpers read to behave as they do outside the sandbox, and never a secret.
///
/// - the dynamic linker's cache and configuration, Debian's alternatives links (which commands
///   such as `awk` go through);
/// - security policies: ImageMagick's `policy.xml` (Debian's refuses PostScript/PDF coders
///   that hand input to Ghostscript; without it a sandboxed `convert` would be *weaker* than
///   the same `convert` outside), Ghostscript's and libpaper's configuration;
/// - fonts (fontconfig), MIME types and magic databases, the locale and time zone, TLS
///   certificates, the name-service and resolver configuration files (read-only, harmless
///   without a network).
///
/// Never shared (and never added by this list): `shadow`, `gshadow`, `sudoers`, `ssh`, machine
/// credentials (`machine-id`, keytabs, `.pwd.lock`) — the synthetic `passwd` and `group` stand
/// in for the account databases. [`ETC_NEVER`] is checked by the pool's `--etc` additions too.
pub const ETC_SHARED: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    // Security policies.
    "/etc/ImageMagick-6",
    "/etc/ImageMagick-7",
    "/etc/ghostscript",
    "/etc/papersize",
    "/etc/libpaper.d",
    // Fonts, MIME and magic.
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/magic",
    "/etc/magic.mime",
    // Locale and time.
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/default/locale",
    // Certificates.
    "/etc/ssl/certs",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    // Name service (no network by default: only what libc reads at start-up).
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// Read-only caches the shared configuration points to: fontconfig's system cache (without it
/// every request rebuilds the font cache in memory: ~200 ms for an ImageMagick `label:`).
pub const CACHES_SHARED: &[&str] = &["/var/cache/fontconfig"];

/// The container's `/etc/hosts`: only the loopback names (the host's file names its network).
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// `/etc` entries that are secrets or credentials: never bound into a container by the
/// defaults, and refused by the CLI's `--etc`.
pub const ETC_NEVER: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/machine-id",
    "/etc/krb5.keytab",
    "/etc/security/opasswd",
    "/etc/.pwd.lock",
    "/etc/subuid",
    "/etc/subgid",
];

/// Whether `path` (absolute, under `/etc`) is or lies inside one of [`ETC_NEVER`].
pub fn etc_is_secret(path: &str) -> bool {
    let p = Path::new(path);
    ETC_NEVER.iter().any(|n| p.starts_with(n))
}

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
/// minimal root (`/usr` and the `/bin /lib*` links), an `/etc` with a synthetic passwd/group
/// naming the sandbox's users plus the host's read-only configuration in [`ETC_SHARED`]
/// (security policies, fonts, MIME and magic, locale, time zone, certificates — no secrets),
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
        .loopback(true)
        .hostname("hatchery");
    add_system_dirs(&mut c);
    for &p in ETC_SHARED {
        if Path::new(p).exists() {
            c.bindmount_ro(p, p);
        }
    }
    for &p in CACHES_SHARED {
        if Path::new(p).exists() {
            c.bindmount_ro(p, p);
        }
    }
    c.file("/etc/passwd", PASSWD)
        .file("/etc/group", GROUP)
        .file("/etc/hosts", HOSTS)
        .devfsmount("/dev")
        .tmpfsmount_sized("/tmp", DEFAULT_TMP_BYTES);
    c.disable_userns(true);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shared_etc_entry_is_a_secret() {
        for p in ETC_SHARED {
            assert!(!etc_is_secret(p), "{p}");
        }
        assert!(etc_is_secret("/etc/shadow"));
        assert!(etc_is_secret("/etc/ssh/ssh_host_ed25519_key"));
        assert!(!etc_is_secret("/etc/sshd_not_really"));
    }
}
