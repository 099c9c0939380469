//! hakurei's ops and parameters in a profile (hatchery fields): `[[ops]]` tables, each with a
//! `type`, merged like mounts (the includes' first), and a `[hakurei]` table of parameters,
//! top profile only. They become the same options as the flags (`--overlay`, `--bind`, …,
//! [`HakureiArgs`]), so they are checked and applied the same way, in the flags' order.
//!
//! ```toml
//! [[ops]]
//! type = "overlay"            # upper + work: persistent; ephemeral = true; neither: read-only
//! target = "/usr"
//! lower = ["/srv/layer", "/usr"]
//! ephemeral = true
//!
//! [[ops]]
//! type = "bind"               # also: tmpfs, tmpfs-ro, dev, place, link, remount, auto-root,
//! source = "/dev/dri"         #       auto-etc, daemon
//! flags = ["dev", "optional"]
//!
//! [hakurei]
//! forward_cancel = true
//! wait_delay = 2.5
//! scheduler = "batch"
//! seccomp_presets = ["strict"]
//! ```

use serde::Deserialize;
use toml::Spanned;

use hatchery::{BindFlags, RemountFlags};

use super::fields::{Number, Size};
use crate::hakurei::HakureiArgs;
use crate::sandbox::SandboxArgs;

/// One op (`[[ops]]`).
#[derive(Deserialize, Clone)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CfgOp {
    /// `--overlay`, `--overlay-tmp` or `--overlay-ro`.
    Overlay {
        target: String,
        lower: Vec<String>,
        upper: Option<String>,
        work: Option<String>,
        #[serde(default)]
        ephemeral: bool,
    },
    /// `--tmpfs-sized`.
    Tmpfs {
        target: String,
        size: Size,
        mode: Option<u32>,
    },
    /// `--tmpfs-ro`.
    #[serde(rename = "tmpfs-ro")]
    TmpfsRo { target: String },
    /// `--dev` or `--dev-writable`.
    Dev {
        target: String,
        #[serde(default)]
        mqueue: bool,
        #[serde(default)]
        writable: bool,
    },
    /// `--bind`.
    Bind {
        source: String,
        target: Option<String>,
        #[serde(default)]
        flags: Vec<String>,
    },
    /// `--place`: the host file `source` at `target`.
    Place { target: String, source: String },
    /// `--link-deref`, or (without `dereference`) `--symlink`.
    Link {
        target: String,
        linkname: String,
        #[serde(default)]
        dereference: bool,
    },
    /// `--remount`.
    Remount { target: String, flags: Vec<String> },
    /// `--auto-root`.
    AutoRoot {
        source: String,
        #[serde(default)]
        flags: Vec<String>,
    },
    /// `--etc HOST_DIR[:PREFIX]`.
    AutoEtc {
        source: String,
        #[serde(default)]
        prefix: String,
    },
    /// `--daemon`.
    Daemon { ready: String, cmdline: Vec<String> },
}

/// The parameters (`[hakurei]`), named as the flags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CfgHakurei {
    #[serde(default)]
    pub forward_cancel: bool,
    pub wait_delay: Option<Number>,
    pub adopt_wait_delay: Option<Number>,
    pub daemon_timeout: Option<Number>,
    /// `POLICY[:PRIORITY]`.
    pub scheduler: Option<String>,
    #[serde(default)]
    pub retain_session: bool,
    #[serde(default)]
    pub host_net: bool,
    #[serde(default)]
    pub host_abstract: bool,
    #[serde(default)]
    pub privileged: bool,
    /// No process of the container may create a user namespace (`--disable-userns`).
    #[serde(default)]
    pub disable_userns: bool,
    /// A cgroup v2 directory.
    pub cgroup: Option<String>,
    #[serde(default)]
    pub seccomp_presets: Vec<String>,
    #[serde(default)]
    pub seccomp_preset_flags: Vec<String>,
}

fn secs(n: Number) -> f64 {
    match n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    }
}

/// Refuses a path with ':' (the options are colon-separated), naming `at` and the field.
fn plain<'a>(at: &str, field: &str, p: &'a str) -> Result<&'a str, String> {
    if p.contains(':') {
        Err(format!(
            "{at}: ops.{field}: {p:?}: paths with ':' are not supported"
        ))
    } else {
        Ok(p)
    }
}

/// Adds `op` (at `at`, `FILE:LINE` of its table) to the options `a`.
pub fn add_op(a: &mut SandboxArgs, op: &Spanned<CfgOp>, at: &str) -> Result<(), String> {
    let h: &mut HakureiArgs = &mut a.hakurei;
    let joined = |field: &str, list: &[String]| -> Result<String, String> {
        list.iter()
            .map(|p| plain(at, field, p))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(":"))
    };
    match op.get_ref() {
        CfgOp::Remount { target, flags }
            if RemountFlags::from_names(&flags.join(",")).is_none() =>
        {
            return Err(format!(
                "{at}: ops.flags: unknown remount flags {flags:?} (ro, nosuid, nodev, noexec)"
            ))
        }
        CfgOp::Bind { flags, .. } | CfgOp::AutoRoot { flags, .. }
            if BindFlags::from_names(&flags.join(",")).is_none() =>
        {
            return Err(format!(
                "{at}: ops.flags: unknown bind flags {flags:?} (rw, dev, optional)"
            ))
        }
        CfgOp::Overlay {
            target,
            lower,
            upper,
            work,
            ephemeral,
        } => {
            let lower = joined("lower", lower)?;
            let target = plain(at, "target", target)?;
            match (upper, work, ephemeral) {
                (Some(u), Some(w), false) => h.overlay.push(format!(
                    "{}:{}:{lower}:{target}",
                    plain(at, "upper", u)?,
                    plain(at, "work", w)?
                )),
                (None, None, true) => h.overlay_tmp.push(format!("{lower}:{target}")),
                (None, None, false) => h.overlay_ro.push(format!("{lower}:{target}")),
                _ => {
                    return Err(format!(
                        "{at}: ops: an overlay has upper and work (persistent), or ephemeral = \
                         true, or neither (read-only)"
                    ))
                }
            }
        }
        CfgOp::Tmpfs { target, size, mode } => {
            let size = match size {
                Size::Bytes(b) => b.to_string(),
                Size::Text(t) => t.clone(),
            };
            h.tmpfs_sized.push(format!(
                "{}:{size}:{:o}",
                plain(at, "target", target)?,
                mode.unwrap_or(0o755)
            ));
        }
        CfgOp::TmpfsRo { target } => h.tmpfs_ro.push(target.clone()),
        CfgOp::Dev {
            target,
            mqueue,
            writable,
        } => {
            let spec = if *mqueue {
                format!("{}:mqueue", plain(at, "target", target)?)
            } else {
                target.clone()
            };
            if *writable {
                h.dev_writable.push(spec);
            } else {
                h.dev.push(spec);
            }
        }
        CfgOp::Bind {
            source,
            target,
            flags,
        } => {
            let target = target.as_deref().unwrap_or(source);
            h.bind.push(format!(
                "{}:{}:{}",
                plain(at, "source", source)?,
                plain(at, "target", target)?,
                flags.join(",")
            ));
        }
        CfgOp::Place { target, source } => h.place.push(format!(
            "{}:{}",
            plain(at, "target", target)?,
            plain(at, "source", source)?
        )),
        CfgOp::Link {
            target,
            linkname,
            dereference: true,
        } => h.link_deref.push(format!(
            "{}:{}",
            plain(at, "target", target)?,
            plain(at, "linkname", linkname)?
        )),
        CfgOp::Link {
            target, linkname, ..
        } => a.symlink.push(format!(
            "{}:{}",
            plain(at, "linkname", linkname)?,
            plain(at, "target", target)?
        )),
        CfgOp::Remount { target, flags } => h.remount.push(format!(
            "{}:{}",
            plain(at, "target", target)?,
            flags.join(",")
        )),
        CfgOp::AutoRoot { source, flags } => {
            if h.auto_root.is_some() {
                return Err(format!(
                    "{at}: ops: the auto-root op may appear only once in a container"
                ));
            }
            h.auto_root = Some(format!(
                "{}:{}",
                plain(at, "source", source)?,
                flags.join(",")
            ));
        }
        CfgOp::AutoEtc { source, prefix } => a.etc.push(format!(
            "{}:{}",
            plain(at, "source", source)?,
            plain(at, "prefix", prefix)?
        )),
        CfgOp::Daemon { ready, cmdline } => {
            if cmdline.is_empty() {
                return Err(format!("{at}: ops.cmdline: a daemon needs a program"));
            }
            h.daemon.push(format!(
                "{}:{}",
                plain(at, "ready", ready)?,
                joined("cmdline", cmdline)?
            ));
        }
    }
    Ok(())
}

/// Sets the parameters of `[hakurei]` on the options `a`.
pub fn set_params(a: &mut SandboxArgs, p: &CfgHakurei) {
    let h = &mut a.hakurei;
    h.forward_cancel = p.forward_cancel;
    h.wait_delay = p.wait_delay.map(secs);
    h.adopt_wait_delay = p.adopt_wait_delay.map(secs);
    h.daemon_timeout = p.daemon_timeout.map(secs);
    h.scheduler = p.scheduler.clone();
    h.retain_session = p.retain_session;
    h.host_net = p.host_net;
    h.host_abstract = p.host_abstract;
    h.privileged = p.privileged;
    h.disable_userns = p.disable_userns;
    h.cgroup = p.cgroup.clone();
    if !p.seccomp_presets.is_empty() {
        h.seccomp_preset = Some(p.seccomp_presets.join(","));
    }
    if !p.seccomp_preset_flags.is_empty() {
        h.seccomp_preset_flags = Some(p.seccomp_preset_flags.join(","));
    }
}
