//! Builds `hatchery-shim` (the `hatchery-guest` crate's binary) and embeds it in the library, so
//! that a plain `cargo add hatchery` gives a working pool: no second binary to build, install or
//! point to. `src/shim_binary.rs` copies the embedded bytes into a sealed memfd at run time.
//!
//! How: the guest crate's build script exports its source directory (`links =
//! "hatchery_guest"`, so it arrives here as `DEP_HATCHERY_GUEST_MANIFEST_DIR`), for a workspace
//! path dependency and a crates.io dependency alike. This script runs a nested
//! `cargo build --release --bin hatchery-shim --target $TARGET` on that manifest, in a target
//! directory of its own (never the outer build's, whose lock the outer cargo holds while this
//! runs), copies the binary to `$OUT_DIR/hatchery-shim` and hands its path to the crate as
//! `HATCHERY_EMBEDDED_SHIM` (`include_bytes!`). Host and shim come from the same sources, so their
//! protocol versions always match.
//!
//! - The nested target directory is shared by every build of this crate in one outer target
//!   directory (debug, release, test, doc, one per guest source directory): `<target>/hatchery-shim-
//!   build/<hash>`, next to the outer profile directories; cargo's own lock serialises the nested
//!   builds. When `OUT_DIR` is not laid out as expected, the directory is `$OUT_DIR/shim-target`.
//! - Environment: the nested cargo is `$CARGO` (the outer one); the variables cargo sets for build
//!   scripts are removed, and so are the outer build's flags (`RUSTFLAGS`,
//!   `CARGO_ENCODED_RUSTFLAGS`, `CARGO_BUILD_RUSTFLAGS`, `CARGO_TARGET_<triple>_RUSTFLAGS`), the
//!   clippy wrapper and `CARGO_TARGET_DIR`: the shim is built with its own release profile.
//!   `--locked` when the guest's workspace has a `Cargo.lock` (the published crate ships one),
//!   `--offline` when `CARGO_NET_OFFLINE` is true (cargo does not tell a build script about
//!   `--offline`; with a lock file and the dependencies already downloaded the nested build needs
//!   no network anyway). The outer jobserver is inherited, so both builds share `-j`.
//! - Skipped, embedding nothing (the library then falls back to looking for the file, see
//!   `shim_binary.rs`): without the `embed-shim` feature (on by default), on docs.rs (`DOCS_RS`),
//!   and under clippy (`RUSTC_WORKSPACE_WRAPPER` is `clippy-driver`), which produce no program.
//!   The reason is compiled in (`HATCHERY_SHIM_NOT_EMBEDDED`) and shown by `Error::ShimNotFound`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM: &str = "hatchery-shim";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // Switching between clippy and a real build must rerun this script: cargo shares a build
    // script's output between `check` and `build`.
    for var in ["DOCS_RS", "RUSTC_WORKSPACE_WRAPPER", "CARGO_NET_OFFLINE"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let embedded = out_dir.join(SHIM);
    let skipped = skip_reason();
    match &skipped {
        Some(_) => std::fs::write(&embedded, b"").expect("write the empty shim placeholder"),
        None => build_shim(&out_dir, &embedded),
    }
    println!(
        "cargo::rustc-env=HATCHERY_EMBEDDED_SHIM={}",
        embedded.display()
    );
    println!(
        "cargo::rustc-env=HATCHERY_SHIM_NOT_EMBEDDED={}",
        skipped.unwrap_or_default()
    );
    // Keys compiled filters in the disk cache: the seccomp compiler and the built-in profiles'
    // rules are these sources.
    let mut sources: Vec<PathBuf> = std::fs::read_dir("src/seccomp")
        .expect("src/seccomp")
        .map(|e| e.expect("src/seccomp entry").path())
        .collect();
    sources.sort();
    // In the workspace, the evaluator the compiler checks its dispatch with (from crates.io,
    // hatchery-sys's version in the key stands for it).
    let evaluator = PathBuf::from("../sys/src/seccomp.rs");
    if evaluator.is_file() {
        sources.push(evaluator);
    }
    let mut hasher = DefaultHasher::new();
    for path in &sources {
        println!("cargo::rerun-if-changed={}", path.display());
        std::fs::read(path)
            .expect("a seccomp source")
            .hash(&mut hasher);
    }
    println!(
        "cargo::rustc-env=HATCHERY_SECCOMP_SOURCES_DIGEST={:016x}",
        hasher.finish()
    );
    // Names the shim's copy in a disk cache (`shim_binary::enable_disk_cache`): a digest of its
    // bytes, so that every build has its own entry.
    let bytes = std::fs::read(&embedded).expect("read the embedded shim");
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    println!(
        "cargo::rustc-env=HATCHERY_EMBEDDED_SHIM_DIGEST={:016x}{:08x}",
        hasher.finish(),
        bytes.len()
    );
}

fn env(name: &str) -> OsString {
    std::env::var_os(name).unwrap_or_else(|| panic!("cargo sets {name} for build scripts"))
}

/// Why nothing is embedded, or `None` to embed the shim.
fn skip_reason() -> Option<String> {
    if std::env::var_os("CARGO_FEATURE_EMBED_SHIM").is_none() {
        return Some("hatchery was built without its `embed-shim` feature".into());
    }
    if std::env::var_os("DOCS_RS").is_some() {
        return Some("hatchery was built for docs.rs".into());
    }
    let clippy = std::env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some_and(|w| {
        Path::new(&w)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("clippy-driver"))
    });
    if clippy {
        return Some("hatchery was built by clippy".into());
    }
    None
}

/// The nested build's own target directory (see the module docs).
fn nested_target_dir(out_dir: &Path, guest: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    guest.hash(&mut hasher);
    let key = format!("{:016x}", hasher.finish());
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out (or .../build/<pkg>/<hash>/out).
    let shared = out_dir
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent()?.parent());
    match shared {
        Some(root) => root.join("hatchery-shim-build").join(key),
        None => out_dir.join("shim-target"),
    }
}

/// A cargo command for the nested build: the outer cargo, without what the outer build set.
fn cargo(guest: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(guest);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_build_scripts = [
            "CARGO_CFG_",
            "CARGO_FEATURE_",
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "DEP_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "OUT_DIR",
                "TARGET",
                "HOST",
                "NUM_JOBS",
                "OPT_LEVEL",
                "DEBUG",
                "PROFILE",
                "RUSTC_LINKER",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name);
        let outer_build_only = [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CLIPPY_ARGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "CARGO_BUILD_BUILD_DIR",
            "CARGO_BUILD_TARGET",
        ]
        .contains(&name)
            || (name.starts_with("CARGO_TARGET_") && name.ends_with("_RUSTFLAGS"));
        if set_for_build_scripts || outer_build_only {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The `Cargo.lock` the nested build uses: its workspace root's, if there is one.
fn lock_file(guest: &Path) -> Option<PathBuf> {
    let out = cargo(guest)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let root = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim_end());
    println!("cargo::rerun-if-changed={}", root.display());
    Some(root.parent()?.join("Cargo.lock")).filter(|l| l.is_file())
}

fn build_shim(out_dir: &Path, embedded: &Path) {
    let guest = PathBuf::from(std::env::var_os("DEP_HATCHERY_GUEST_MANIFEST_DIR").expect(
        "hatchery-guest's build script exports its directory (DEP_HATCHERY_GUEST_MANIFEST_DIR)",
    ));
    let target = env("TARGET");
    let target_dir = nested_target_dir(out_dir, &guest);
    let lock = lock_file(&guest);

    let mut cmd = cargo(&guest);
    // Every container execs the shim and every `hatchery run` copies it into a sealed memfd:
    // small beats fast here (measured: LTO, one codegen unit, opt-level "s" and no symbols cut
    // it from 2.3 to 1.3 MB and a one-shot container by ~10%). The guest's own profile settings
    // are overridden for this build only.
    for (name, value) in [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
        ("CARGO_PROFILE_RELEASE_LTO", "true"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
        ("CARGO_PROFILE_RELEASE_STRIP", "symbols"),
    ] {
        cmd.env(name, value);
    }
    // Statically linked against glibc: the shim then starts without the dynamic loader (no
    // ld.so.cache, libc and libgcc_s to map and relocate). Measured as fork + exec + exit of the
    // shim: 280 us dynamic, 140 us static, on the latency path of every container start; the
    // binary grows from 1.5 to 2.4 MB. The shim uses no NSS (it parses the guest's passwd and
    // group files itself), the one part of glibc that does not link statically. With `--target`
    // the flag reaches the shim only, never build scripts.
    if std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu") {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    }
    cmd.args(["build", "--release", "--bin", SHIM])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(lock) = &lock {
        cmd.arg("--locked");
        println!("cargo::rerun-if-changed={}", lock.display());
    }
    let offline = std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true" || v == "1");
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the nested cargo ({cmd:?}): {e}"));
    if !out.status.success() {
        panic!(
            "building {SHIM} for embedding failed ({cmd:?}, {}):\n{}\n\
             (to build hatchery without an embedded shim, turn off its default `embed-shim` \
             feature and install {SHIM} yourself)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let built = target_dir.join(&target).join("release").join(SHIM);
    std::fs::copy(&built, embedded)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), embedded.display()));
    for path in sources(&built.with_extension("d")) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// What the shim was built from, for `rerun-if-changed`: the files of its dep-info file and the
/// manifest and build script of each local package among them. Sources under `$CARGO_HOME`
/// (registry and git checkouts) never change in place and are left out.
fn sources(dep_info: &Path) -> BTreeSet<PathBuf> {
    let text = std::fs::read_to_string(dep_info)
        .unwrap_or_else(|e| panic!("read {}: {e}", dep_info.display()));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let immutable = |p: &Path| {
        cargo_home
            .as_ref()
            .is_some_and(|h| p.starts_with(h.join("registry")) || p.starts_with(h.join("git")))
    };
    let mut out = BTreeSet::new();
    let Some((_, deps)) = text.lines().next().and_then(|l| l.split_once(": ")) else {
        return out;
    };
    for file in split_escaped(deps).map(PathBuf::from) {
        if immutable(&file) {
            continue;
        }
        if let Some(pkg) = file.ancestors().find(|a| a.join("Cargo.toml").is_file()) {
            out.insert(pkg.join("Cargo.toml"));
            let build = pkg.join("build.rs");
            if build.is_file() {
                out.insert(build);
            }
        }
        out.insert(file);
    }
    out
}

/// The space-separated paths of a make-style dependency line (`\ ` is a space in a path).
fn split_escaped(line: &str) -> impl Iterator<Item = String> + '_ {
    let mut chars = line.chars().peekable();
    std::iter::from_fn(move || {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        chars.peek()?;
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => word.push(chars.next().unwrap_or(' ')),
                ' ' => break,
                c => word.push(c),
            }
        }
        Some(word)
    })
}
