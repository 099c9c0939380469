//! Finding `hatchery-shim` and keeping an immutable copy of it.
//!
//! The guest must never be able to open the shim's binary for writing (the runc
//! `/proc/self/exe` overwrite, CVE-2019-5736). The host therefore copies the binary once per
//! process into a memfd, seals it against every change (`F_SEAL_WRITE | F_SEAL_GROW |
//! F_SEAL_SHRINK | F_SEAL_SEAL`) and executes that memfd with `execveat(AT_EMPTY_PATH)`. All
//! containers of the process share its page cache.
//!
//! Lookup order: `$HATCHERY_SHIM` (for packagers), then `hatchery-shim` next to the running
//! executable, in its parent directory (cargo puts test binaries in `target/*/deps` and examples
//! in `target/*/examples`), then on `$PATH`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// File name of the shim binary.
pub const SHIM_NAME: &str = "hatchery-shim";

/// The sealed copy of the shim, loaded on first use.
#[derive(Debug)]
pub struct ShimBinary {
    fd: OwnedFd,
    path: PathBuf,
}

impl ShimBinary {
    /// The memfd to execute.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Candidate paths, in lookup order.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("HATCHERY_SHIM") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(SHIM_NAME));
            if let Some(up) = dir.parent() {
                out.push(up.join(SHIM_NAME));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            out.push(dir.join(SHIM_NAME));
        }
    }
    out
}

fn load(path: &Path) -> Result<ShimBinary> {
    let err = |source| Error::ShimLoad {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mfd = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .allow_sealing(true)
        .create(SHIM_NAME)
        .map_err(|e| err(std::io::Error::other(e)))?;
    // A kernel-side copy (copy_file_range/sendfile), no userspace buffer.
    std::io::copy(&mut file, &mut mfd.as_file()).map_err(err)?;
    mfd.add_seals(&[
        memfd::FileSeal::SealShrink,
        memfd::FileSeal::SealGrow,
        memfd::FileSeal::SealWrite,
        memfd::FileSeal::SealSeal,
    ])
    .map_err(|e| err(std::io::Error::other(e)))?;
    Ok(ShimBinary {
        fd: OwnedFd::from(mfd.into_file()),
        path: path.to_path_buf(),
    })
}

/// The process-wide sealed shim, loaded on first call. A failure is returned again on every call
/// (it is not retried: fix the installation and restart).
pub fn get() -> Result<&'static ShimBinary> {
    static SHIM: OnceLock<std::result::Result<ShimBinary, String>> = OnceLock::new();
    let cached = SHIM.get_or_init(|| {
        let searched = candidates();
        match searched.iter().find(|p| p.is_file()) {
            Some(p) => load(p).map_err(|e| format!("{e}: {}", source_text(&e))),
            None => Err(Error::ShimNotFound { searched }.to_string()),
        }
    });
    match cached {
        Ok(s) => Ok(s),
        Err(msg) => {
            let searched = candidates();
            if searched.iter().any(|p| p.is_file()) {
                Err(Error::ShimLoad {
                    path: searched
                        .into_iter()
                        .find(|p| p.is_file())
                        .unwrap_or_default(),
                    source: std::io::Error::other(msg.clone()),
                })
            } else {
                Err(Error::ShimNotFound { searched })
            }
        }
    }
}

fn source_text(e: &Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default()
}
