//! The functions and tests a profile template can use, with hakoniwa's names and meaning:
//! `printenv(NAME)`, `mkdir_p(PATH)`, `touch(PATH)`, `find(GLOB)`, `readlink(PATH)`,
//! `xdg_user_dir(NAME)`, and `path_exists(PATH)`, `path_is_dir(PATH)`, `path_is_symlink(PATH)`
//! (also usable as tests: `{% if "/x" is path_exists %}`).

use minijinja::{Error, ErrorKind::InvalidOperation};
use std::path::Path;

fn failed(call: String, e: impl std::fmt::Display) -> Error {
    Error::new(InvalidOperation, format!("{call} => {e}"))
}

/// The host's value of an environment variable, or "".
pub fn printenv(name: String) -> Result<String, Error> {
    Ok(std::env::var(name).unwrap_or_default())
}

/// Creates a directory and its parents on the host (for a bind that must exist).
pub fn mkdir_p(path: String) -> Result<(), Error> {
    std::fs::create_dir_all(&path).map_err(|e| failed(format!("mkdir_p({path:?})"), e))
}

/// Creates a file on the host if it is missing (its contents are kept).
pub fn touch(path: String) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map(drop)
        .map_err(|e| failed(format!("touch({path:?})"), e))
}

/// The host paths matching a glob pattern.
pub fn find(pattern: String) -> Result<Vec<String>, Error> {
    let paths = glob::glob(&pattern).map_err(|e| failed(format!("find({pattern:?})"), e))?;
    Ok(paths
        .filter_map(|p| p.ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// The target of a symbolic link on the host.
pub fn readlink(path: String) -> Result<String, Error> {
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| failed(format!("readlink({path:?})"), e))
}

/// An XDG user directory (`DOWNLOAD`, `DOCUMENTS`, …) from `~/.config/user-dirs.dirs`.
pub fn xdg_user_dir(name: String) -> Result<String, Error> {
    let dirs = xdg_user_dirs::new().map_err(|e| failed(format!("xdg_user_dir({name:?})"), e))?;
    Ok(dirs.get(&name).to_string_lossy().into_owned())
}

/// Whether a host path exists (following links).
pub fn path_exists(path: String) -> bool {
    Path::new(&path).try_exists().unwrap_or(false)
}

/// Whether a host path is a directory (following links).
pub fn path_is_dir(path: String) -> bool {
    Path::new(&path).is_dir()
}

/// Whether a host path is a symbolic link.
pub fn path_is_symlink(path: String) -> bool {
    Path::new(&path).is_symlink()
}
