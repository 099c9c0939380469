//! `hatchery run` as root executes the embedded shim from a copy in the cache
//! (`$XDG_CACHE_HOME/hatchery/shim-<digest>`), read-only, instead of a sealed memfd per run: the
//! copy is written once, repaired when damaged, never used from an unsafe place, and the running
//! shim's file cannot be reopened for writing (the CVE-2019-5736 pattern), not even by the host.
//! An unprivileged user's runs keep no cache at all: their containers run as that user, and one
//! given the cache could rewrite what later runs execute.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use hatchery_tests::{bin_dir, is_root, process_tree, require, text, user_namespaces_work};

fn ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    require(
        *OK.get_or_init(user_namespaces_work),
        "user namespaces unavailable",
    )
}

/// A fresh cache home for one test (removed first).
fn cache_home(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hatchery-shim-cache-{tag}-{}", std::process::id()));
    if d.exists() {
        make_writable(&d);
        std::fs::remove_dir_all(&d).unwrap();
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Gives the owner write access to everything below `d` (the cached copy is 0500), so the
/// directory can be removed.
fn make_writable(d: &Path) {
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
        if p.is_dir() {
            make_writable(&p);
        }
    }
}

/// Removes a cache home (its copies are 0500).
fn remove_home(home: &Path) {
    make_writable(home);
    std::fs::remove_dir_all(home).unwrap();
}

/// Whether a root-only test skips here (printing why): the unprivileged pass.
fn skip_unless_root(why: &str) -> bool {
    if !is_root() {
        eprintln!("{why}");
    }
    !is_root()
}

/// What a root-only test says in the unprivileged pass.
const ROOT_CACHE_ONLY: &str =
    "root only (an unprivileged run keeps no cache: tested by its own test)";

fn run_in(home: &Path, extra_env: &[(&str, &str)], argv: &[&str]) -> Output {
    run_with(home, extra_env, &[], argv)
}

/// `hatchery run --profile default OPTIONS -- ARGV` with `home` as its cache home.
fn run_with(home: &Path, extra_env: &[(&str, &str)], options: &[&str], argv: &[&str]) -> Output {
    let mut cmd = Command::new(bin_dir().join("hatchery"));
    cmd.arg("run")
        .arg("--profile")
        .arg("default")
        .args(options)
        .arg("--")
        .args(argv)
        .env_remove("HATCHERY_SHIM")
        .env("XDG_CACHE_HOME", home);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the hatchery binary")
}

/// The names in `home`'s cache directory (none when it is missing).
fn entries(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("hatchery"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The cached copies (`shim-*`) in `home`'s cache directory.
fn copies(home: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = entries(home)
        .into_iter()
        .filter(|n| n.starts_with("shim-"))
        .map(|n| home.join("hatchery").join(n))
        .collect();
    v.sort();
    v
}

fn embedded() -> &'static [u8] {
    hatchery::shim_binary::embedded().expect("the test build embeds the shim")
}

/// Starts `hatchery run -- sleep 30` with `home` as its cache home, finds its shim (the
/// `hatchery` process's descendant titled `hatchery:oneshot`) and calls `look(shim pid)` while it
/// runs; then kills the run and waits until the shim is gone.
fn while_a_shim_runs<T>(home: &Path, look: impl FnOnce(i32) -> T) -> T {
    let mut child = Command::new(bin_dir().join("hatchery"))
        .args(["run", "--profile", "default", "--", "/bin/sleep", "30"])
        .env_remove("HATCHERY_SHIM")
        .env("XDG_CACHE_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let me = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shim = loop {
        let found = process_tree(me).into_iter().skip(1).find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"hatchery:oneshot"))
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no shim appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let seen = look(shim);
    let _ = child.kill();
    let _ = child.wait();
    // The shim dies with its control socket: wait until it is gone.
    while std::fs::read_to_string(format!("/proc/{shim}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z'))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the shim outlived its host"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    seen
}

/// What an unprivileged user's run leaves in its cache home: nothing, and its shim is the
/// sealed memfd even when a file of the copy's name is there (planted by a container that was
/// given the cache, say).
#[test]
fn an_unprivileged_run_keeps_no_cache_and_never_executes_a_file_from_it() {
    if !ready() {
        return;
    }
    if is_root() {
        eprintln!("the unprivileged pass runs this (root keeps a cache)");
        return;
    }
    let home = cache_home("unprivileged");
    let out = run_in(&home, &[], &["/bin/sh", "-c", "echo ran"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left = entries(&home);
    assert!(left.is_empty(), "an unprivileged run cached {left:?}");
    // A planted copy under the name a root run would use, exactly the embedded bytes and mode,
    // in a private directory: not used.
    let dir = home.join("hatchery");
    let _ = std::fs::create_dir(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let name = hatchery::shim_binary::cached_copy_name().expect("an embedded shim");
    let planted = dir.join(name);
    std::fs::write(&planted, embedded()).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o500)).unwrap();
    let exe = while_a_shim_runs(&home, |shim| {
        std::fs::read_link(format!("/proc/{shim}/exe")).map(|p| p.display().to_string())
    });
    let exe = exe.expect("the user's own shim's exe");
    assert!(
        exe.starts_with("/memfd:hatchery-shim"),
        "the shim ran from {exe}"
    );
    // And nothing was written there.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        assert_eq!(
            e.path(),
            planted,
            "an unprivileged run wrote {}",
            e.path().display()
        );
    }
    remove_home(&home);
}

/// Uid 0 of a user namespace other than the host's (`unshare -r`, a rootless container) is an
/// ordinary user of the host: its runs keep no cache either (a container of that user given the
/// directory could rewrite it: found by a review's attack).
#[test]
fn root_of_another_user_namespace_keeps_no_cache() {
    if !ready() {
        return;
    }
    let home = cache_home("userns-root");
    let hatchery = bin_dir().join("hatchery");
    // The default profile, whose limits the host's cgroups cannot take from a namespace's root
    // (rlimits instead).
    let out = if is_root() {
        // Root has no /etc/subuid range for unshare's --map-auto: make the namespace by hand,
        // mapping its root onto host root and `nobody` onto itself (the guest's default ids).
        let mut sh = Command::new("unshare")
            .args(["--user", "--", "/bin/sh", "-c"])
            .arg("echo ready; read go; exec \"$0\" run --profile default -- /bin/sh -c 'echo ran'")
            .arg(&hatchery)
            .env_remove("HATCHERY_SHIM")
            .env("XDG_CACHE_HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut stdout = sh.stdout.take().unwrap();
        let mut ready = [0u8; 6];
        std::io::Read::read_exact(&mut stdout, &mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(
                format!("/proc/{}/{file}", sh.id()),
                "0 0 1\n65534 65534 1\n",
            )
            .unwrap();
        }
        std::io::Write::write_all(sh.stdin.as_mut().unwrap(), b"go\n").unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
        let mut out = sh.wait_with_output().unwrap();
        out.stdout = rest;
        out
    } else {
        // Its root is this user, the rest of its ids this user's /etc/subuid range.
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--map-auto", "--"])
            .arg(&hatchery)
            .args([
                "run",
                "--profile",
                "default",
                "--",
                "/bin/sh",
                "-c",
                "echo ran",
            ])
            .env_remove("HATCHERY_SHIM")
            .env("XDG_CACHE_HOME", &home)
            .output()
            .expect("unshare (util-linux)")
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let left = entries(&home);
    assert!(left.is_empty(), "uid 0 of a user namespace cached {left:?}");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_root_run_writes_one_private_copy_and_executes_it_read_only() {
    if !ready() {
        return;
    }
    if skip_unless_root(ROOT_CACHE_ONLY) {
        return;
    }
    let home = cache_home("write");
    let out = run_in(&home, &[], &["/bin/sh", "-c", "echo ran"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let found = copies(&home);
    assert_eq!(found.len(), 1, "{found:?}");
    let meta = std::fs::metadata(&found[0]).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o500);
    assert_eq!(std::fs::read(&found[0]).unwrap(), embedded());

    // While a run is going on, its shim runs from that copy through a read-only mount: an fd to
    // its exe, kept until the shim is gone, reopens for writing nowhere, not even for the host's
    // root. (The copy made writable by its owner first, so that only the mount can refuse.)
    std::fs::set_permissions(&found[0], std::fs::Permissions::from_mode(0o700)).unwrap();
    let exe = while_a_shim_runs(&home, |shim| {
        std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(format!("/proc/{shim}/exe"))
            .expect("root opens the shim's exe")
    });
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&exe));
    assert!(
        !std::fs::read_link(&path)
            .unwrap()
            .to_string_lossy()
            .starts_with("/memfd:"),
        "the run did not use its cached copy"
    );
    let reopened = std::fs::OpenOptions::new().write(true).open(&path);
    assert_eq!(
        reopened.map(drop).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EROFS)),
        "the shim's file was reopened for writing"
    );
    assert_eq!(copies(&home), found, "the writable copy was not used");
    assert_eq!(std::fs::read(&found[0]).unwrap(), embedded());
    remove_home(&home);
}

/// A root run's container, given the cache directory read-write, can change nothing in it: its
/// ids never map to root, who owns the directory (0700) and the copy (0500).
#[test]
fn a_container_given_roots_cache_cannot_change_the_copy() {
    if !ready() {
        return;
    }
    if skip_unless_root(ROOT_CACHE_ONLY) {
        return;
    }
    let home = cache_home("guest");
    let out = run_in(&home, &[], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copy = copies(&home).pop().expect("a cached copy");
    let name = copy.file_name().unwrap().to_string_lossy().into_owned();
    let bind = format!("{}:/c", home.join("hatchery").display());
    let script = format!(
        "cat /c/{name} > /c/x; echo >> /c/{name}; chmod 700 /c/{name}; rm -f /c/{name}; \
         mv /c/x /c/{name}; ls /c >/dev/null && echo listed"
    );
    let out = run_with(&home, &[], &["-B", &bind], &["/bin/sh", "-c", &script]);
    assert!(
        !text(&out.stdout).contains("listed"),
        "the container listed root's cache: {}",
        text(&out.stderr)
    );
    assert_eq!(copies(&home), vec![copy.clone()]);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        embedded(),
        "the copy was changed"
    );
    remove_home(&home);
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn a_damaged_copy_is_replaced_and_other_builds_copies_removed() {
    if !ready() {
        return;
    }
    if skip_unless_root(ROOT_CACHE_ONLY) {
        return;
    }
    let home = cache_home("damaged");
    let out = run_in(&home, &[], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copy = copies(&home).pop().expect("a cached copy");
    // Same length, other bytes (an `exit 0` script would run as well as the shim: the check
    // must not be "it executes").
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut bytes = std::fs::read(&copy).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o500)).unwrap();
    let stale = home.join("hatchery").join("shim-0000000000000000000000ff");
    std::fs::write(&stale, b"an older build's copy").unwrap();
    let out = run_in(&home, &[], &["/bin/sh", "-c", "echo again"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "again\n");
    assert_eq!(
        copies(&home),
        vec![copy.clone()],
        "the other build's copy stayed"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), embedded(), "not repaired");
    remove_home(&home);
}

#[test]
fn an_unsafe_or_disabled_cache_is_not_used_and_runs_still_work() {
    if !ready() {
        return;
    }
    // Turned off: nothing written.
    let home = cache_home("off");
    let out = run_in(&home, &[("HATCHERY_SHIM_CACHE", "0")], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(copies(&home).is_empty(), "{:?}", copies(&home));
    // A cache directory others may write: not used (the memfd instead). (The first run made
    // it, for its seccomp filters.)
    let _ = std::fs::create_dir(home.join("hatchery"));
    std::fs::set_permissions(
        home.join("hatchery"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = run_in(&home, &[], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(copies(&home).is_empty(), "{:?}", copies(&home));
    // A cache directory that is a link: not used.
    std::fs::remove_dir_all(home.join("hatchery")).unwrap();
    let elsewhere = cache_home("off-target");
    std::os::unix::fs::symlink(&elsewhere, home.join("hatchery")).unwrap();
    let out = run_in(&home, &[], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "wrote through a linked cache directory"
    );
    std::fs::remove_dir_all(&home).unwrap();
    std::fs::remove_dir_all(&elsewhere).unwrap();
}

#[test]
fn a_copy_on_a_noexec_mount_falls_back_to_the_sealed_memfd() {
    if !ready() {
        return;
    }
    if skip_unless_root("root only (mounts a noexec tmpfs); the unprivileged pass skips it") {
        return;
    }
    let home = cache_home("noexec");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "noexec,mode=0755", "tmpfs"])
        .arg(&home)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount a noexec tmpfs");
    let out = run_in(&home, &[], &["/bin/sh", "-c", "echo fine"]);
    let cached = copies(&home);
    let _ = Command::new("umount").arg(&home).status();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fine\n");
    assert!(cached.is_empty(), "cached where it cannot run: {cached:?}");
    std::fs::remove_dir_all(&home).unwrap();
}

/// `HATCHERY_SECCOMP_CACHE=user`: compiled filters are kept for any user (who then must not give
/// a sandbox the directory), the shim's copy still for the host's root only. (The default
/// profile's filter, unchanged, is precompiled where these tests run and needs no cache: a
/// changed one is compiled, and kept.)
#[test]
fn a_user_may_choose_to_keep_filters_but_never_the_shim() {
    if !ready() {
        return;
    }
    let home = cache_home("filters");
    let bpf = |home: &Path| -> Vec<String> {
        entries(home)
            .into_iter()
            .filter(|n| n.ends_with(".bpf"))
            .collect()
    };
    let out = run_in(&home, &[("HATCHERY_SECCOMP_CACHE", "user")], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        bpf(&home).is_empty(),
        "the precompiled default filter was compiled and cached: {:?}",
        bpf(&home)
    );
    for _ in 0..2 {
        let out = run_with(
            &home,
            &[("HATCHERY_SECCOMP_CACHE", "user")],
            &["--seccomp-allow", "personality"],
            &["/bin/true"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    assert_eq!(
        bpf(&home).len(),
        1,
        "the changed filter kept: {:?}",
        bpf(&home)
    );
    let names = entries(&home);
    assert_eq!(
        names.iter().any(|n| n.starts_with("shim-")),
        is_root(),
        "the shim's copy is root's only: {names:?}"
    );
    remove_home(&home);
}
