//! `hatchery` used as a library user uses it: a fresh cargo project with
//! `hatchery = { path = ".../host" }` and nothing else, built with `cargo build --offline`, run with
//! `HATCHERY_SHIM` unset, `PATH=/usr/bin:/bin` and nothing next to the binary (it is copied alone
//! into an empty directory). Its pool (exec mode, default profile) and a one-shot container must
//! run `/bin/true` from the shim embedded at build time.
//!
//! One test, and a slow one: it builds hatchery, its dependencies and the embedded shim from
//! scratch, in a target directory inside the temporary project (never `$CARGO_TARGET_DIR`, whose
//! lock the running `cargo test` holds). As root, the program runs as root and again as `nobody`
//! (an unprivileged user without /etc/subuid ranges). As an unprivileged user, the test builds and
//! runs it when that user can run cargo; `scripts/test.sh`'s unprivileged pass cannot (the toolchain
//! is in /root), which the test says and passes: the root pass covered the unprivileged run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hatchery_tests::{is_root, require, text, user_namespaces_work};

const MAIN: &str = r#"
use hatchery::shim_binary::{self, ShimOrigin};
use hatchery::{Container, Outcome, Pool, Request};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder().build()?;
    let r = pool.run(Request::exec("/bin/true"))?;
    if r.outcome != Outcome::Exited(0) {
        return Err(format!("pool: /bin/true ended {:?}", r.outcome).into());
    }
    let mut c = Container::new();
    c.rootfs("/");
    let status = c.command("/bin/true").status()?;
    if !status.success() {
        return Err(format!("one-shot: /bin/true ended {status:?}").into());
    }
    if shim_binary::get()?.origin() != &ShimOrigin::Embedded {
        return Err(format!("the shim came from {:?}", shim_binary::get()?.origin()).into());
    }
    Ok(())
}

fn main() {
    match run() {
        Ok(()) => println!("library-user: ok (pool and one-shot ran /bin/true, embedded shim)"),
        Err(e) => {
            eprintln!("library-user: {e}");
            std::process::exit(1);
        }
    }
}
"#;

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The cargo that runs this test (cargo sets `CARGO` for test processes), if this user can run it.
fn cargo() -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO")));
    Command::new(&cargo)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| cargo)
}

/// A new empty directory under the system's temporary directory, readable by every user.
fn fresh_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("hatchery-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).expect("create the temporary directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temporary directory");
    dir
}

/// Writes the project and builds it; returns the program.
fn build(cargo: &Path, project: &Path) -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host")
        .canonicalize()
        .expect("the host crate's directory");
    std::fs::create_dir(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"library-user\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nhatchery = {{ path = {:?} }}\n\n[workspace]\n",
            host.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(project.join("src/main.rs"), MAIN).unwrap();
    let target = project.join("target");
    let t0 = std::time::Instant::now();
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--target-dir"])
        .arg(&target)
        .current_dir(project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("HATCHERY_SHIM")
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "{}", report("cargo build", &out));
    eprintln!("library-user: built in {:?}", t0.elapsed());
    target.join("debug/library-user")
}

/// Copies the program alone into an empty directory and runs it there, as `uid:gid` if given,
/// with a minimal environment (no HATCHERY_SHIM, no cargo directories on PATH).
fn run_alone(program: &Path, dir: &Path, ids: Option<(u32, u32)>) {
    let exe = dir.join("library-user");
    std::fs::copy(program, &exe).expect("copy the program");
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["library-user"], "the program is not alone");
    for p in ["/usr/bin", "/bin"] {
        assert!(
            !Path::new(p).join("hatchery-shim").exists(),
            "{p}/hatchery-shim is installed: the test cannot tell the embedded shim apart"
        );
    }
    let mut cmd = match ids {
        Some((uid, gid)) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the program");
    let who = ids.map_or("as this user".to_string(), |(u, _)| format!("as uid {u}"));
    assert!(
        out.status.success(),
        "{}",
        report(&format!("library-user {who}"), &out)
    );
    assert!(
        text(&out.stdout).contains("library-user: ok"),
        "{}",
        report(&who, &out)
    );
    eprintln!("library-user {who}: {}", text(&out.stdout).trim());
}

#[test]
fn a_fresh_project_depending_on_hatchery_runs_a_pool_with_no_shim_installed() {
    if !require(user_namespaces_work(), "user namespaces unavailable") {
        return;
    }
    let Some(cargo) = cargo() else {
        assert!(!is_root(), "root cannot run cargo");
        eprintln!(
            "library-user: cargo is not runnable by this user, so the project is not built here; \
             the root run of this test also runs the built program unprivileged"
        );
        return;
    };
    let project = fresh_dir("library-user");
    let program = build(&cargo, &project);
    let alone = project.join("run");
    std::fs::create_dir(&alone).unwrap();
    run_alone(&program, &alone, None);
    if is_root() {
        let unprivileged = project.join("run-nobody");
        std::fs::create_dir(&unprivileged).unwrap();
        std::fs::set_permissions(&unprivileged, std::fs::Permissions::from_mode(0o755)).unwrap();
        run_alone(&program, &unprivileged, Some((65534, 65534)));
    }
    std::fs::remove_dir_all(&project).expect("remove the temporary project");
}
