//! User-namespace id maps: which host ids the container's ids stand for.
//!
//! One range is written straight to `/proc/<pid>/{uid,gid}_map` by the host. Several ranges go
//! through `newuidmap`/`newgidmap` (Debian's `uidmap` package), which check `/etc/subuid` and
//! `/etc/subgid`, unless the host runs as root. The guest is never host root: a map that includes
//! host id 0 is refused, and the default map for a root host points at `nobody`/`nogroup`.

use std::io::Write;

use crate::error::{Error, Result};

/// One contiguous range of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// The host uid/gid the guest becomes by default when the host runs as root.
pub const NOBODY: u32 = 65534;

/// The host uid a single-range map points at by default: the current effective uid, or
/// [`NOBODY`] when that is root.
pub fn default_host_uid() -> u32 {
    match nix::unistd::geteuid().as_raw() {
        0 => NOBODY,
        uid => uid,
    }
}

/// As [`default_host_uid`], for groups.
pub fn default_host_gid() -> u32 {
    if nix::unistd::geteuid().is_root() {
        NOBODY
    } else {
        nix::unistd::getegid().as_raw()
    }
}

/// Checks that no range includes host id 0 and that ranges are well formed.
pub fn validate(kind: &'static str, maps: &[IdMap]) -> Result<()> {
    if maps.is_empty() {
        return Err(Error::InvalidConfig {
            what: "id map",
            value: kind.to_string(),
            reason: "at least one range is needed",
        });
    }
    for m in maps {
        if m.size == 0
            || m.host_id.checked_add(m.size - 1).is_none()
            || m.container_id.checked_add(m.size - 1).is_none()
        {
            return Err(Error::InvalidConfig {
                what: "id map range",
                value: format!("{} {} {}", m.container_id, m.host_id, m.size),
                reason: "empty or overflowing range",
            });
        }
        if m.host_id == 0 {
            return Err(Error::HostRootMapped {
                kind,
                container: m.container_id,
                host: m.host_id,
                count: m.size,
            });
        }
    }
    Ok(())
}

/// The text of a `uid_map`/`gid_map` file.
pub fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Whether the host may write these maps itself (no helper program needed).
fn writable_directly(maps: &[IdMap], own_id: u32) -> bool {
    nix::unistd::geteuid().is_root()
        || (maps.len() == 1 && maps[0].size == 1 && maps[0].host_id == own_id)
}

fn write_proc(pid: i32, file: &'static str, text: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| Error::IdMap { file, source })
}

fn run_helper(program: &'static str, pid: i32, maps: &[IdMap]) -> Result<()> {
    let mut cmd = std::process::Command::new(program);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.arg(m.container_id.to_string())
            .arg(m.host_id.to_string())
            .arg(m.size.to_string());
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::IdMap {
            file: program,
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::NewIdMap {
            program,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Writes both maps of process `pid`. Returns whether `setgroups(2)` stays allowed inside.
pub fn write_maps(pid: i32, uid_maps: &[IdMap], gid_maps: &[IdMap]) -> Result<bool> {
    // Checked by every container's validation already; again here, where the maps are written,
    // since the disk caches (and the guarantee that a guest never acts as host root) rely on it.
    validate("uid", uid_maps)?;
    validate("gid", gid_maps)?;
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if writable_directly(uid_maps, euid) {
        write_proc(pid, "uid_map", &map_text(uid_maps))?;
    } else {
        run_helper("newuidmap", pid, uid_maps)?;
    }
    if writable_directly(gid_maps, egid) {
        if !nix::unistd::geteuid().is_root() {
            write_proc(pid, "setgroups", "deny")?;
        }
        write_proc(pid, "gid_map", &map_text(gid_maps))?;
    } else {
        run_helper("newgidmap", pid, gid_maps)?;
    }
    let setgroups = std::fs::read_to_string(format!("/proc/{pid}/setgroups")).unwrap_or_default();
    Ok(setgroups.trim() == "allow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_host_root() {
        let m = [IdMap {
            container_id: 0,
            host_id: 0,
            size: 1,
        }];
        assert!(matches!(
            validate("uid", &m),
            Err(Error::HostRootMapped { .. })
        ));
        let ok = [IdMap {
            container_id: 0,
            host_id: 1000,
            size: 1,
        }];
        assert!(validate("uid", &ok).is_ok());
        assert!(validate("uid", &[]).is_err());
        let overflow = [IdMap {
            container_id: 0,
            host_id: u32::MAX,
            size: 2,
        }];
        assert!(validate("uid", &overflow).is_err());
    }

    #[test]
    fn map_text_is_one_line_per_range() {
        let m = [
            IdMap {
                container_id: 0,
                host_id: 1000,
                size: 1,
            },
            IdMap {
                container_id: 1,
                host_id: 100000,
                size: 65536,
            },
        ];
        assert_eq!(map_text(&m), "0 1000 1\n1 100000 65536\n");
    }
}
