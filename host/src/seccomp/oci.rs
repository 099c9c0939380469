//! The OCI runtime-spec / Docker JSON seccomp profile format (`hatchery run --seccomp FILE.json`).
//!
//! Docker's conditional entries are evaluated for a sandbox without capabilities on the native
//! architecture: an entry that `includes` capabilities is skipped, one that `excludes` them is
//! kept; `includes.arches`/`excludes.arches` are matched against the native architecture; kernel
//! version conditions are taken as met.

use serde::Deserialize;

use super::{Action, Arch, ArgCmp, ArgCmpOp, Filter};

/// Reading an OCI/Docker seccomp profile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The file could not be read.
    #[error("reading seccomp profile {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed or does not have the profile's shape.
    #[error("parsing seccomp profile: {0}")]
    Parse(#[from] serde_json::Error),
    /// An action this sandbox does not implement (`SCMP_ACT_TRACE` needs a tracer).
    #[error("unsupported seccomp action {0:?}")]
    Action(String),
    /// An unknown comparison operator.
    #[error("unknown seccomp comparison {0:?}")]
    Operator(String),
    /// An unknown architecture name.
    #[error("unknown seccomp architecture {0:?}")]
    Arch(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<i32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<SyscallEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallEntry {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<i32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Conditions,
    #[serde(default)]
    excludes: Conditions,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Conditions {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

fn action(name: &str, errno: Option<i32>) -> Result<Action, OciError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(libc::EPERM)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => Action::Notify,
        "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(0) as u16),
        other => return Err(OciError::Action(other.to_string())),
    })
}

fn arch(name: &str) -> Result<Arch, OciError> {
    Ok(match name {
        "SCMP_ARCH_X86_64" => Arch::X8664,
        "SCMP_ARCH_X86" => Arch::X86,
        "SCMP_ARCH_X32" => Arch::X32,
        "SCMP_ARCH_AARCH64" => Arch::Aarch64,
        "SCMP_ARCH_ARM" => Arch::Arm,
        "SCMP_ARCH_RISCV64" => Arch::Riscv64,
        // The rest by their libseccomp names (SCMP_ARCH_MIPS64N32 is hakoniwa's mips64n32, ...).
        other => other
            .strip_prefix("SCMP_ARCH_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| OciError::Arch(other.to_string()))?,
    })
}

/// Docker's short names of the native architecture.
fn native_arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["amd64", "x86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64"]
    } else {
        &[]
    }
}

fn native_scmp_arch() -> Option<&'static str> {
    if cfg!(target_arch = "x86_64") {
        Some("SCMP_ARCH_X86_64")
    } else if cfg!(target_arch = "aarch64") {
        Some("SCMP_ARCH_AARCH64")
    } else {
        None
    }
}

/// Parses a profile.
pub fn parse(json: &str, name: &str) -> Result<Filter, OciError> {
    let p: Profile = serde_json::from_str(json)?;
    let mut f = Filter::new(action(&p.default_action, p.default_errno_ret)?)
        .named(name)
        .lenient();
    let mut archs: Vec<&str> = p.architectures.iter().map(String::as_str).collect();
    for m in &p.arch_map {
        if Some(m.architecture.as_str()) == native_scmp_arch() {
            archs.push(&m.architecture);
            archs.extend(m.sub_architectures.iter().map(String::as_str));
        }
    }
    for a in archs {
        let a = arch(a)?;
        f.add_arch(a);
    }
    let native = native_arch_names();
    for entry in &p.syscalls {
        let arch_ok = (entry.includes.arches.is_empty()
            || entry
                .includes
                .arches
                .iter()
                .any(|a| native.contains(&a.as_str())))
            && !entry
                .excludes
                .arches
                .iter()
                .any(|a| native.contains(&a.as_str()));
        // No capabilities inside: entries for holders of a capability never apply.
        if !arch_ok || !entry.includes.caps.is_empty() {
            continue;
        }
        let act = action(&entry.action, entry.errno_ret)?;
        let mut conds = Vec::with_capacity(entry.args.len());
        for a in &entry.args {
            let (op, datum_b) = match a.op.as_str() {
                "SCMP_CMP_NE" => (ArgCmpOp::Ne, 0),
                "SCMP_CMP_LT" => (ArgCmpOp::Lt, 0),
                "SCMP_CMP_LE" => (ArgCmpOp::Le, 0),
                "SCMP_CMP_EQ" => (ArgCmpOp::Eq, 0),
                "SCMP_CMP_GE" => (ArgCmpOp::Ge, 0),
                "SCMP_CMP_GT" => (ArgCmpOp::Gt, 0),
                "SCMP_CMP_MASKED_EQ" => (ArgCmpOp::MaskedEq, a.value_two),
                other => return Err(OciError::Operator(other.to_string())),
            };
            conds.push(ArgCmp::new(a.index, op, a.value, datum_b));
        }
        for n in entry.names.iter().chain(entry.name.as_ref()) {
            f.add_rule_conditional(act, n, &conds);
        }
    }
    Ok(f)
}

/// Reads and parses a profile file.
pub fn load(path: &std::path::Path) -> Result<Filter, OciError> {
    let json = std::fs::read_to_string(path).map_err(|source| OciError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&json, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_style_profile() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                           "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_PTRACE"]}},
                {"names": ["some_future_call"], "action": "SCMP_ACT_ALLOW"}
            ]
        }"#;
        let f = parse(json, "test.json").unwrap();
        assert_eq!(f.default_action(), Action::Errno(libc::EPERM));
        // ptrace (capability-only) is not among the rules.
        assert!(f
            .rules
            .iter()
            .all(|r| r.syscall != super::super::Syscall::Name("ptrace".into())));
        assert!(f.compile(false).is_ok());
    }

    #[test]
    fn bad_profiles_are_typed_errors() {
        assert!(matches!(parse("{", "x"), Err(OciError::Parse(_))));
        assert!(matches!(
            parse(r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#, "x"),
            Err(OciError::Action(_))
        ));
        // SCMP_ACT_TRACE is hakoniwa's Action::Trace.
        let f = parse(r#"{"defaultAction": "SCMP_ACT_TRACE"}"#, "x").unwrap();
        assert_eq!(f.default_action(), Action::Trace(0));
        let bad_op = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_XX"}]}]}"#;
        assert!(matches!(parse(bad_op, "x"), Err(OciError::Operator(_))));
    }
}
