//! The TOML fields of a profile: every field of hakoniwa-cli 1.8.0's format, plus hatchery's
//! (marked "hatchery"). Unknown fields are errors. Strings that are checked later keep their
//! place in the file ([`Spanned`]) so an error can name the line.

use serde::Deserialize;
use toml::Spanned;

/// One profile file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CfgFile {
    /// Profiles merged before this one (relative to this file's directory). hakoniwa's name is
    /// `@include`; `includes` is accepted too.
    #[serde(rename = "@include", alias = "includes", default)]
    pub includes: Vec<Spanned<String>>,
    #[serde(default)]
    pub namespaces: Vec<CfgNamespace>,
    #[serde(default)]
    pub mounts: Vec<CfgMount>,
    #[serde(default)]
    pub envs: Vec<CfgEnv>,
    pub network: Option<Spanned<CfgNetwork>>,
    pub filesystem: Option<CfgFileSystem>,
    pub landlock: Option<CfgLandlock>,

    // Only in the top profile (as hakoniwa, which rejects them in an included one).
    pub rootdir: Option<Spanned<CfgRootDir>>,
    #[serde(default)]
    pub uidmaps: Vec<CfgIdMap>,
    #[serde(default)]
    pub gidmaps: Vec<CfgIdMap>,
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub limits: Vec<CfgLimit>,
    pub seccomp: Option<CfgSeccomp>,
    pub command: Option<CfgCommand>,

    /// hatchery: `/etc/NAME` entries shared read-only (`--etc`); merged like mounts.
    #[serde(default)]
    pub etc: Vec<Spanned<String>>,
    /// hatchery: memory, swap, pids and CPU limits.
    pub cgroup: Option<CfgCgroup>,
    /// hatchery: the user to run as (`--user`).
    pub user: Option<CfgUser>,
    /// hatchery: `auto` (`--userns auto`).
    pub userns: Option<Spanned<String>>,
    /// hatchery: `--allow-new-privs`.
    pub allow_new_privs: Option<bool>,
    /// hatchery: hakurei's ops (`[[ops]]`, see `config::hakurei`); merged like mounts.
    #[serde(default)]
    pub ops: Vec<Spanned<super::hakurei::CfgOp>>,
    /// hatchery: hakurei's parameters (`[hakurei]`).
    pub hakurei: Option<super::hakurei::CfgHakurei>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgNamespace {
    #[serde(rename = "type")]
    pub nstype: Spanned<String>,
    #[serde(default)]
    pub share: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgMount {
    pub source: Spanned<String>,
    pub destination: Option<String>,
    /// `""` (a bind), `devfs` or `tmpfs` (hatchery: `bind` too).
    #[serde(rename = "type")]
    pub fstype: Option<Spanned<String>>,
    #[serde(default)]
    pub rw: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgEnv {
    pub name: String,
    /// Without a value, the host's (empty when unset).
    pub value: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgNetwork {
    /// `none`, `host` or `pasta`.
    pub mode: String,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct CfgFileSystem {
    #[serde(default)]
    pub files: Vec<CfgFile1>,
    #[serde(default)]
    pub dirs: Vec<CfgDir>,
    #[serde(default)]
    pub symlinks: Vec<CfgSymlink>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgFile1 {
    pub destination: String,
    pub contents: String,
    /// hatchery: permission bits (default 0o644), e.g. `mode = 0o755`.
    pub mode: Option<u32>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgDir {
    pub destination: String,
    /// hatchery: permission bits (default 0o700, as hakoniwa), e.g. `mode = 0o755`.
    pub mode: Option<u32>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgSymlink {
    pub original: String,
    pub link: String,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct CfgLandlock {
    #[serde(default)]
    pub resources: Vec<CfgLandlockResource>,
    #[serde(default)]
    pub fs: Vec<CfgLandlockFs>,
    #[serde(default)]
    pub net: Vec<CfgLandlockNet>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgLandlockResource {
    /// `fs`, `tcp.bind`, `tcp.connect` (hatchery: `scope`).
    #[serde(rename = "type")]
    pub rtype: Spanned<String>,
    #[serde(default)]
    pub unrestrict: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgLandlockFs {
    pub path: String,
    /// `r`, `w`, `x` and `-`, e.g. `r-x`.
    pub access: Spanned<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgLandlockNet {
    pub port: u16,
    /// `tcp.bind` or `tcp.connect`.
    pub access: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgRootDir {
    pub path: String,
    #[serde(default)]
    pub rw: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgIdMap {
    pub container_id: u32,
    /// Default: yours (nobody when you are root).
    pub host_id: Option<u32>,
    /// Default: 1.
    pub count: Option<u32>,
}

/// A number: an integer, or (hatchery, for `walltime`) a float.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(untagged)]
pub enum Number {
    Int(u64),
    Float(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgLimit {
    /// `as`, `core`, `cpu`, `fsize`, `nofile`, `walltime` (hatchery: every rlimit by name).
    #[serde(rename = "type")]
    pub rtype: Spanned<String>,
    pub value: Spanned<Number>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CfgSeccomp {
    /// `podman` (default), `audit`, `unconfined` (hatchery: `strict`) or a JSON profile file.
    pub path: Option<Spanned<String>>,
    /// hatchery: `--seccomp-allow`, one `NAME[:ARG0]` each.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// hatchery: `--seccomp-only` (a learned allowlist).
    pub syscalls: Option<Vec<String>>,
    /// hatchery: `--seccomp-families` (socket address families, with `syscalls`).
    pub families: Option<Vec<i32>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct CfgCommand {
    pub cmdline: Vec<String>,
    pub cwd: Option<String>,
}

/// A size: bytes, or a string read as hakoniwa reads sizes (`256M`, `1GiB`).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgCgroup {
    pub memory: Option<Spanned<Size>>,
    pub memory_swap: Option<Spanned<Size>>,
    pub pids_limit: Option<u64>,
    pub cpus: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgUser {
    pub name: String,
    pub group: Option<String>,
    #[serde(default)]
    pub supplementary: Vec<String>,
}
