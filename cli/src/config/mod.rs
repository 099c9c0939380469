//! `hatchery run -c FILE`: hakoniwa's TOML profiles (hakoniwa-cli 1.8.0's format, read with
//! the same template engine, minijinja), plus fields for what hatchery adds.
//!
//! ```text
//!  FILE ──render (minijinja: __dir__, printenv, mkdir_p, touch, find, readlink,
//!        │        xdg_user_dir, path_exists, path_is_dir, path_is_symlink; {% include %}
//!        │        relative to FILE's directory)
//!        ▼
//!      TOML ──parse (unknown fields are errors)──▶ CfgFile
//!        │ "@include" = ["a.toml", ...]  (relative to the including file; rendered and parsed
//!        │                                 the same way; nested includes and cycles checked)
//!        ▼
//!      merge as hakoniwa: namespaces, mounts, envs (and hatchery's etc and ops)
//!      concatenated, the includes first in order; network: the last one given; filesystem and landlock lists
//!      concatenated; the other fields only from FILE itself
//!        ▼
//!      check every value (paths exist, types are known) ──▶ SandboxArgs, command
//! ```
//!
//! Every error names the file, the line and the field (`a.toml:7: mounts.source: path
//! "/nope" does not exist`). A line is one of the rendered profile, which is the file's own
//! unless template statements add or remove lines.

mod fields;
mod functions;
mod hakurei;

use std::path::{Path, PathBuf};

use hatchery::landlock::{FsAccess, NetAccess, Resource};
use hatchery::{Namespace, Rlimit};
use minijinja::Environment;

use crate::log::Log;
use crate::sandbox::SandboxArgs;
use fields::*;

/// A loaded profile: the sandbox, as options, and the command.
#[derive(Debug)]
pub struct Profile {
    /// The sandbox (with [`SandboxArgs::from_profile`] set: no default rootfs).
    pub sandbox: SandboxArgs,
    /// `command.cmdline` and `command.cwd`.
    pub command: Command,
}

/// The profile's command.
#[derive(Debug, Default, Clone)]
pub struct Command {
    /// The program and its arguments (empty: the default shell).
    pub cmdline: Vec<String>,
    /// The working directory inside the container.
    pub cwd: Option<String>,
}

/// One rendered profile file.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// `FILE:LINE` for a byte offset of the rendered text.
    fn at(&self, offset: usize) -> String {
        let line = self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1;
        format!("{}:{line}", self.path.display())
    }

    /// `FILE:LINE` of the first line that sets or opens `key`, or `FILE` alone.
    fn at_key(&self, key: &str) -> String {
        for (i, l) in self.text.lines().enumerate() {
            let t = l.trim_start().trim_start_matches('[').trim_start();
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with(['=', ']', '.']) {
                    return format!("{}:{}", self.path.display(), i + 1);
                }
            }
        }
        self.path.display().to_string()
    }

    /// The dotted name of the field at `offset`: the table header above it and the key
    /// before it (`mounts.source`).
    fn field_at(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(['[', ']']).trim().to_string());
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = &before[line_start..];
        // The key whose `=` comes last before the offset, on this line.
        let key = line.rfind('=').map(|eq| {
            line[..eq]
                .trim_end()
                .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        });
        let key = key.filter(|k| !k.is_empty()).or_else(|| {
            // At the start of a key (an unknown field): the key itself.
            let rest = &self.text[offset.min(self.text.len())..];
            let k: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || "_-@.\"".contains(*c))
                .collect();
            Some(k.trim_matches('"').to_string()).filter(|k| !k.is_empty())
        });
        match (table, key) {
            (Some(t), Some(k)) if !line.trim_start().starts_with('[') => format!("{t}.{k}"),
            (Some(t), _) => t,
            (None, Some(k)) => k,
            (None, None) => "(top level)".to_string(),
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_function("printenv", functions::printenv);
    env.add_function("mkdir_p", functions::mkdir_p);
    env.add_function("touch", functions::touch);
    env.add_function("find", functions::find);
    env.add_function("readlink", functions::readlink);
    env.add_function("xdg_user_dir", functions::xdg_user_dir);
    for (name, f) in [
        ("path_exists", functions::path_exists as fn(String) -> bool),
        ("path_is_dir", functions::path_is_dir),
        ("path_is_symlink", functions::path_is_symlink),
    ] {
        env.add_function(name, f);
        env.add_test(name, f);
    }
    env
}

/// Renders and parses one file.
fn read(env: &Environment<'_>, path: &Path) -> Result<(Source, CfgFile), String> {
    let shown = path.display();
    let path = std::fs::canonicalize(path).map_err(|e| format!("{shown}: {e}"))?;
    let raw = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = path.display().to_string();
    let text = env
        .render_named_str(&name, &raw, minijinja::context! { __dir__ => dir })
        .map_err(|e| {
            let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
            let mut msg = format!("{name}{line}: template: {}", e.kind());
            if let Some(d) = e.detail() {
                msg.push_str(&format!(": {d}"));
            }
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
    let source = Source { path, text };
    let cfg: CfgFile = toml::from_str(&source.text).map_err(|e| match e.span() {
        Some(span) => format!(
            "{}: {}: {}",
            source.at(span.start),
            source.field_at(span.start),
            e.message().trim()
        ),
        None => format!("{}: {}", source.path.display(), e.message().trim()),
    })?;
    Ok((source, cfg))
}

/// Reads `path` and, before it, its includes (depth first), into `out`. `stack` holds the
/// files being read, to find cycles.
fn flatten(
    env: &Environment<'_>,
    path: &Path,
    top: bool,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<(Source, CfgFile)>,
    log: &Log,
) -> Result<(), String> {
    log.debug(if top {
        format!("CONFIG: {}", path.display())
    } else {
        format!("CONFIG: Including {}", path.display())
    });
    let (source, mut cfg) = read(env, path)?;
    if !top {
        only_in_top(&source, &cfg)?;
    }
    stack.push(source.path.clone());
    let dir = source.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    for inc in std::mem::take(&mut cfg.includes) {
        let p = dir.join(inc.get_ref());
        let canon = std::fs::canonicalize(&p).map_err(|e| {
            format!(
                "{}: @include: {}: {e}",
                source.at(inc.span().start),
                p.display()
            )
        })?;
        if let Some(i) = stack.iter().position(|s| *s == canon) {
            let chain: Vec<String> = stack[i..]
                .iter()
                .chain(std::iter::once(&canon))
                .map(|p| p.display().to_string())
                .collect();
            return Err(format!(
                "{}: @include: include cycle: {}",
                source.at(inc.span().start),
                chain.join(" -> ")
            ));
        }
        flatten(env, &p, false, stack, out, log)?;
    }
    stack.pop();
    out.push((source, cfg));
    Ok(())
}

/// hakoniwa merges only namespaces, mounts, envs, network, filesystem and landlock from an
/// included profile (hatchery: and etc).
fn only_in_top(src: &Source, cfg: &CfgFile) -> Result<(), String> {
    let given = [
        ("rootdir", cfg.rootdir.is_some()),
        ("uidmaps", !cfg.uidmaps.is_empty()),
        ("gidmaps", !cfg.gidmaps.is_empty()),
        ("hostname", cfg.hostname.is_some()),
        ("limits", !cfg.limits.is_empty()),
        ("seccomp", cfg.seccomp.is_some()),
        ("command", cfg.command.is_some()),
        ("cgroup", cfg.cgroup.is_some()),
        ("user", cfg.user.is_some()),
        ("userns", cfg.userns.is_some()),
        ("allow_new_privs", cfg.allow_new_privs.is_some()),
        ("hakurei", cfg.hakurei.is_some()),
    ];
    match given.iter().find(|(_, g)| *g) {
        None => Ok(()),
        Some((key, _)) => Err(format!(
            "{}: {key}: only the top profile may set it (an included profile brings \
             namespaces, mounts, envs, network, filesystem, landlock, etc and ops, as in \
             hakoniwa)",
            src.at_key(key)
        )),
    }
}

fn size(src: &Source, field: &str, v: &toml::Spanned<Size>) -> Result<u64, String> {
    match v.get_ref() {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => crate::sandbox::parse_size_arg(t)
            .map_err(|e| format!("{}: {field}: {e}", src.at(v.span().start))),
    }
}

fn no_colon<'a>(src: &Source, field: &str, span: usize, p: &'a str) -> Result<&'a str, String> {
    if p.contains(':') {
        Err(format!(
            "{}: {field}: {p:?}: paths with ':' are not supported",
            src.at(span)
        ))
    } else {
        Ok(p)
    }
}

/// Loads the profile at `path` (see the module docs).
pub fn load(path: &Path, log: &Log) -> Result<Profile, String> {
    let env = environment();
    let mut files = Vec::new();
    flatten(&env, path, true, &mut Vec::new(), &mut files, log)?;
    let mut a = SandboxArgs {
        from_profile: true,
        ..SandboxArgs::default()
    };
    let mut command = Command::default();
    let mut namespaces: Vec<(Namespace, bool)> = Vec::new();
    let n = files.len();
    for (i, (src, cfg)) in files.iter().enumerate() {
        let top = i + 1 == n;
        for ns in &cfg.namespaces {
            let kind = match ns.nstype.get_ref().as_str() {
                "cgroup" => Namespace::Cgroup,
                "ipc" => Namespace::Ipc,
                "network" => Namespace::Network,
                "uts" => Namespace::Uts,
                other => {
                    return Err(format!(
                        "{}: namespaces.type: unknown namespace type {other:?} (cgroup, ipc, \
                         network or uts; the user, mount and pid namespaces are always new)",
                        src.at(ns.nstype.span().start)
                    ))
                }
            };
            namespaces.retain(|(k, _)| *k != kind);
            namespaces.push((kind, ns.share));
        }
        for m in &cfg.mounts {
            let at = m.source.span().start;
            let source = m.source.get_ref();
            let dest = m.destination.clone().unwrap_or_else(|| source.clone());
            let kind = m
                .fstype
                .as_ref()
                .map(|t| (t.get_ref().as_str(), t.span().start));
            match kind {
                Some(("devfs", _)) => a.devfs.push(dest),
                Some(("tmpfs", _)) => a.tmpfs.push(dest),
                None | Some(("" | "bind", _)) => {
                    let host = std::fs::canonicalize(source).map_err(|e| {
                        format!("{}: mounts.source: path {source:?}: {e}", src.at(at))
                    })?;
                    let host = host.to_string_lossy();
                    let host = no_colon(src, "mounts.source", at, &host)?;
                    let dest = no_colon(src, "mounts.destination", at, &dest)?;
                    let spec = format!("{host}:{dest}");
                    if m.rw {
                        a.bindmount_rw.push(spec);
                    } else {
                        a.bindmount_ro.push(spec);
                    }
                }
                Some((other, at)) => {
                    return Err(format!(
                    "{}: mounts.type: unknown mount type {other:?} (\"\" or bind, devfs, tmpfs)",
                    src.at(at)
                ))
                }
            }
        }
        for e in &cfg.envs {
            let value = e
                .value
                .clone()
                .unwrap_or_else(|| std::env::var(&e.name).unwrap_or_default());
            a.setenv.push((e.name.clone(), value));
        }
        for name in &cfg.etc {
            a.etc.push(name.get_ref().clone());
        }
        for op in &cfg.ops {
            hakurei::add_op(&mut a, op, &src.at(op.span().start))?;
        }
        if let Some(net) = &cfg.network {
            let mode = net.get_ref().mode.as_str();
            if !matches!(mode, "none" | "host" | "pasta") {
                return Err(format!(
                    "{}: network.mode: unknown mode {mode:?} (none, host or pasta)",
                    src.at(net.span().start)
                ));
            }
            a.network = Some((mode.to_string(), net.get_ref().options.clone()));
        }
        if let Some(fs) = &cfg.filesystem {
            for f in &fs.files {
                a.files.push((
                    f.destination.clone(),
                    f.contents.clone(),
                    f.mode.unwrap_or(0o644),
                ));
            }
            for d in &fs.dirs {
                a.dir
                    .push(format!("{}:{:o}", d.destination, d.mode.unwrap_or(0o700)));
            }
            for l in &fs.symlinks {
                a.symlink.push(format!("{}:{}", l.original, l.link));
            }
        }
        if let Some(l) = &cfg.landlock {
            for r in &l.resources {
                let res = match r.rtype.get_ref().as_str() {
                    "fs" => Resource::Fs,
                    "tcp.bind" => Resource::TcpBind,
                    "tcp.connect" => Resource::TcpConnect,
                    "scope" => Resource::Scope,
                    other => {
                        return Err(format!(
                            "{}: landlock.resources.type: unknown resource type {other:?} (fs, \
                             tcp.bind, tcp.connect or scope)",
                            src.at(r.rtype.span().start)
                        ))
                    }
                };
                a.landlock_resources.push((res, !r.unrestrict));
            }
            for r in &l.fs {
                let access: FsAccess = r.access.get_ref().parse().map_err(|e| {
                    format!("{}: landlock.fs.access: {e}", src.at(r.access.span().start))
                })?;
                a.landlock_fs.push((r.path.clone(), access));
            }
            for r in &l.net {
                let access = match r.access.get_ref().as_str() {
                    "tcp.bind" => NetAccess::TcpBind,
                    "tcp.connect" => NetAccess::TcpConnect,
                    other => {
                        return Err(format!(
                            "{}: landlock.net.access: unknown net access {other:?} (tcp.bind or \
                             tcp.connect)",
                            src.at(r.access.span().start)
                        ))
                    }
                };
                a.landlock_net.push((r.port, access));
            }
        }
        if !top {
            continue;
        }
        if let Some(r) = &cfg.rootdir {
            let path = std::fs::canonicalize(&r.get_ref().path).map_err(|e| {
                format!(
                    "{}: rootdir.path: path {:?}: {e}",
                    src.at(r.span().start),
                    r.get_ref().path
                )
            })?;
            let path = path.to_string_lossy();
            let path = no_colon(src, "rootdir.path", r.span().start, &path)?;
            a.rootdir = Some(if r.get_ref().rw {
                format!("{path}:rw")
            } else {
                path.to_string()
            });
        }
        for m in &cfg.uidmaps {
            a.uidmap.push((
                m.container_id,
                m.host_id.unwrap_or_else(hatchery::idmap::default_host_uid),
                m.count.unwrap_or(1),
            ));
        }
        for m in &cfg.gidmaps {
            a.gidmap.push((
                m.container_id,
                m.host_id.unwrap_or_else(hatchery::idmap::default_host_gid),
                m.count.unwrap_or(1),
            ));
        }
        a.hostname = cfg.hostname.as_ref().map(|h| h.get_ref().clone());
        for l in &cfg.limits {
            let kind = l.rtype.get_ref().as_str();
            let at = src.at(l.value.span().start);
            let value = *l.value.get_ref();
            if kind == "walltime" {
                let secs = match value {
                    Number::Int(n) => n as f64,
                    Number::Float(f) => f,
                };
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(format!(
                        "{at}: limits.value: walltime must be a positive number of seconds"
                    ));
                }
                a.limit_walltime = Some(secs);
                continue;
            }
            let res = Rlimit::ALL
                .into_iter()
                .find(|r| r.name() == kind)
                .ok_or_else(|| {
                    format!(
                        "{}: limits.type: unknown limit type {kind:?} (as, core, cpu, fsize, \
                         nofile, walltime, or another rlimit by name)",
                        src.at(l.rtype.span().start)
                    )
                })?;
            let Number::Int(v) = value else {
                return Err(format!("{at}: limits.value: {kind} takes a whole number"));
            };
            a.rlimits.push((res, v));
        }
        if let Some(s) = cfg.seccomp.as_ref().and_then(|s| s.path.as_ref()) {
            let p = s.get_ref();
            let preset = hatchery::seccomp::Profile::from_name(p).is_some();
            if !preset && !Path::new(p).is_file() {
                return Err(format!(
                    "{}: seccomp.path: {p:?} is neither a profile (podman, strict, audit, \
                     unconfined) nor a file",
                    src.at(s.span().start)
                ));
            }
            a.seccomp = Some(p.clone());
        }
        if let Some(s) = &cfg.seccomp {
            for spec in &s.allow {
                crate::sandbox::parse_seccomp_allow(spec.get_ref())
                    .map_err(|e| format!("{}: seccomp.allow: {e}", src.at(spec.span().start)))?;
                a.seccomp_allow.push(spec.get_ref().clone());
            }
            if let Some(names) = &s.syscalls {
                a.seccomp_only = Some(names.clone());
            }
            if let Some(f) = &s.families {
                if s.syscalls.is_none() {
                    return Err(format!(
                        "{}: seccomp.families narrows seccomp.syscalls: give both",
                        src.at_key("seccomp")
                    ));
                }
                a.seccomp_families = Some(f.clone());
            }
        }
        if let Some(c) = &cfg.command {
            command.cmdline = c.cmdline.clone();
            command.cwd = c.cwd.clone();
        }
        if let Some(c) = &cfg.cgroup {
            if let Some(m) = &c.memory {
                a.cgroup_memory = Some(size(src, "cgroup.memory", m)?);
            }
            if let Some(m) = &c.memory_swap {
                a.cgroup_memory_swap = Some(size(src, "cgroup.memory_swap", m)?);
            }
            a.cgroup_pids_limit = c.pids_limit;
            if let Some(cpus) = &c.cpus {
                let v = *cpus.get_ref();
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "{}: cgroup.cpus: {v} is not a positive number",
                        src.at(cpus.span().start)
                    ));
                }
                a.cgroup_cpus = Some(v);
            }
        }
        if let Some(u) = &cfg.user {
            let mut spec = u.name.clone();
            if u.group.is_some() || !u.supplementary.is_empty() {
                spec.push(':');
                spec.push_str(u.group.as_deref().unwrap_or(""));
            }
            if !u.supplementary.is_empty() {
                spec.push(':');
                spec.push_str(&u.supplementary.join(","));
            }
            a.user = Some(spec);
        }
        if let Some(m) = &cfg.userns {
            if m.get_ref() != "auto" {
                return Err(format!(
                    "{}: userns: unknown mode {:?} (only auto)",
                    src.at(m.span().start),
                    m.get_ref()
                ));
            }
            a.userns = Some("auto".into());
        }
        a.allow_new_privs = cfg.allow_new_privs.unwrap_or(false);
        if let Some(p) = &cfg.hakurei {
            hakurei::set_params(&mut a, p);
        }
    }
    for (ns, share) in namespaces {
        if share {
            a.share.push(ns);
            continue;
        }
        match ns {
            Namespace::Cgroup => a.unshare_cgroup = true,
            Namespace::Ipc => a.unshare_ipc = true,
            Namespace::Network => a.unshare_network = true,
            _ => a.unshare_uts = true,
        }
    }
    Ok(Profile {
        sandbox: a,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Log {
        Log {
            level: crate::log::Level::Quiet,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hatchery-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn includes_merge_as_hakoniwa() {
        let d = dir("merge");
        std::fs::write(
            d.join("base.toml"),
            "[[namespaces]]\ntype = \"ipc\"\n[[mounts]]\nsource = \"/usr\"\n\
             [network]\nmode = \"none\"\n[[envs]]\nname = \"A\"\nvalue = \"1\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("main.toml"),
            "\"@include\" = [\"base.toml\"]\n[[mounts]]\nsource = \"/etc\"\nrw = false\n\
             [[envs]]\nname = \"B\"\nvalue = \"{{ __dir__ }}\"\n[network]\nmode = \"host\"\n\
             [[limits]]\ntype = \"walltime\"\nvalue = 1.5\n[command]\ncmdline = [\"/bin/true\"]\n",
        )
        .unwrap();
        let p = load(&d.join("main.toml"), &quiet()).unwrap();
        assert_eq!(p.sandbox.bindmount_ro, ["/usr:/usr", "/etc:/etc"]);
        assert_eq!(
            p.sandbox.setenv,
            [
                ("A".to_string(), "1".to_string()),
                (
                    "B".to_string(),
                    d.canonicalize().unwrap().display().to_string()
                )
            ]
        );
        assert_eq!(p.sandbox.network, Some(("host".to_string(), vec![])));
        assert!(p.sandbox.unshare_ipc);
        assert_eq!(p.sandbox.limit_walltime, Some(1.5));
        assert_eq!(p.command.cmdline, ["/bin/true"]);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let d = dir("errors");
        let f = d.join("bad.toml");
        std::fs::write(
            &f,
            "hostname = \"x\"\n\n[[mounts]]\nsource = \"/no/such/dir\"\n",
        )
        .unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(
            e.contains("bad.toml:4: mounts.source") && e.contains("/no/such/dir"),
            "{e}"
        );
        std::fs::write(&f, "[[limits]]\ntype = \"as\"\nvalue = \"lots\"\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(e.contains("bad.toml:3: limits.value"), "{e}");
        std::fs::write(&f, "[[namespaces]]\ntype = \"user\"\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(
            e.contains("bad.toml:2: namespaces.type: unknown namespace type"),
            "{e}"
        );
        std::fs::write(&f, "[landlock]\nbogus = 1\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(
            e.contains("bad.toml:2: landlock.bogus: unknown field"),
            "{e}"
        );
        std::fs::write(&f, "hostname = \"{{ nope(\"\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(e.contains("bad.toml:1: template"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn hakurei_ops_merge_like_mounts_and_params_come_from_the_top() {
        let d = dir("hakurei");
        std::fs::write(
            d.join("base.toml"),
            "[[ops]]\ntype = \"overlay\"\ntarget = \"/o\"\nlower = [\"/usr\"]\n\
             ephemeral = true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("main.toml"),
            "\"@include\" = [\"base.toml\"]\n\
             [[ops]]\ntype = \"bind\"\nsource = \"/dev/dri\"\nflags = [\"dev\", \"optional\"]\n\
             [[ops]]\ntype = \"remount\"\ntarget = \"/o\"\nflags = [\"noexec\"]\n\
             [[ops]]\ntype = \"daemon\"\nready = \"/tmp/r\"\ncmdline = [\"/bin/d\", \"-f\"]\n\
             [[ops]]\ntype = \"auto-etc\"\nsource = \"/etc\"\nprefix = \"h\"\n\
             [hakurei]\nforward_cancel = true\nwait_delay = 2.5\nscheduler = \"batch\"\n\
             seccomp_presets = [\"strict\"]\n",
        )
        .unwrap();
        let p = load(&d.join("main.toml"), &quiet()).unwrap();
        let h = &p.sandbox.hakurei;
        assert_eq!(h.overlay_tmp, ["/usr:/o"]);
        assert_eq!(h.bind, ["/dev/dri:/dev/dri:dev,optional"]);
        assert_eq!(h.remount, ["/o:noexec"]);
        assert_eq!(h.daemon, ["/tmp/r:/bin/d:-f"]);
        assert_eq!(p.sandbox.etc, ["/etc:h"]);
        assert!(h.forward_cancel);
        assert_eq!(h.wait_delay, Some(2.5));
        assert_eq!(h.scheduler.as_deref(), Some("batch"));
        assert_eq!(h.seccomp_preset.as_deref(), Some("strict"));
        // Errors name the file and the line; parameters only in the top profile.
        let f = d.join("bad.toml");
        std::fs::write(
            &f,
            "\n[[ops]]\ntype = \"overlay\"\ntarget = \"/o\"\nlower = [\"/a\"]\nupper = \"/u\"\n",
        )
        .unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(
            e.contains("bad.toml:") && e.contains("upper and work"),
            "{e}"
        );
        std::fs::write(&f, "[[ops]]\ntype = \"bogus\"\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(e.contains("bad.toml:") && e.contains("bogus"), "{e}");
        std::fs::write(d.join("inc.toml"), "[hakurei]\nprivileged = true\n").unwrap();
        std::fs::write(&f, "\"@include\" = [\"inc.toml\"]\n").unwrap();
        let e = load(&f, &quiet()).unwrap_err();
        assert!(e.contains("hakurei: only the top profile"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn include_cycles_are_found() {
        let d = dir("cycle");
        std::fs::write(d.join("a.toml"), "\"@include\" = [\"b.toml\"]\n").unwrap();
        std::fs::write(d.join("b.toml"), "includes = [\"a.toml\"]\n").unwrap();
        let e = load(&d.join("a.toml"), &quiet()).unwrap_err();
        assert!(
            e.contains("b.toml:1: @include: include cycle") && e.contains("a.toml -> "),
            "{e}"
        );
        std::fs::write(d.join("b.toml"), "hostname = \"x\"\n").unwrap();
        let e = load(&d.join("a.toml"), &quiet()).unwrap_err();
        assert!(
            e.contains("b.toml:1: hostname: only the top profile"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn template_functions_and_tests_work() {
        let d = dir("fns");
        let made = d.join("made/deep");
        let f = d.join("t.toml");
        std::fs::write(
            &f,
            format!(
                "# {{{{ mkdir_p(\"{m}\") }}}}{{{{ touch(\"{m}/f\") }}}}\n\
                 {{% if \"{m}\" is path_is_dir and path_exists(\"{m}/f\") %}}hostname = \"yes\"{{% endif %}}\n\
                 [[envs]]\nname = \"N\"\nvalue = \"{{{{ find(\"{m}/*\") | length }}}}\"\n",
                m = made.display()
            ),
        )
        .unwrap();
        let p = load(&f, &quiet()).unwrap();
        assert_eq!(p.sandbox.hostname.as_deref(), Some("yes"));
        assert_eq!(p.sandbox.setenv, [("N".to_string(), "1".to_string())]);
        std::fs::remove_dir_all(&d).ok();
    }
}
