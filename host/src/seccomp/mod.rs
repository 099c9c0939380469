//! Seccomp policies: described as plain data ([`Filter`], the API of hakoniwa's
//! `seccomp::Filter`), compiled once with libseccomp in the host into raw BPF, installed raw by
//! the shim after the fork (no libseccomp in a forked child: SECURITY and STYLE rule 2). The
//! program is a dispatch on the call number in front of libseccomp's program of the rules that
//! look at arguments (the `dispatch` module: podman's policy in 181 instructions instead of 523,
//! which halves what installing it costs each command), checked against libseccomp's program of
//! the whole policy before it is used.
//!
//! ```text
//!  Filter (data) ──compile() once, cached──▶ Program { BPF words, notify }
//!        │                                           │ SetupPlan.seccomp
//!        ▼                                           ▼
//!  presets: podman (default), strict, audit    shim: seccomp(SET_MODE_FILTER[, NEW_LISTENER])
//!  OCI/Docker JSON profiles                      right before execve; the shim (never the
//!  hakurei's presets (Filter::from_presets)      guest) keeps the listener and turns a
//!                                                notified call into Outcome::Violation
//! ```
//!
//! Actions: [`Action::Notify`] is how a policy says "report and kill": the shim that holds the
//! listener kills the request and reports [`Outcome::Violation`](crate::Outcome) with the
//! syscall's name, number and arguments. [`Action::Errno`] denies quietly (the call fails, the
//! program goes on); [`Action::KillProcess`] kills without a report (the outcome is
//! `Signaled(SIGSYS)`). Calls from a foreign ABI (i386 via `int 0x80`, x32) kill the process:
//! only the native architecture is in a filter unless [`Filter::add_arch`] adds another.

mod cache;
mod dispatch;
mod oci;
mod precompiled;
#[rustfmt::skip]
mod precompiled_programs;
mod presets;
mod profiles;

use std::io::{Read, Seek};
use std::sync::{Arc, OnceLock};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};

pub use cache::{enable_disk_cache, enable_disk_cache_any_user};
pub use oci::OciError;
pub use presets::{PresetFlags, Presets};
pub use profiles::Profile;

/// What a rule (or the default) does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Run it.
    Allow,
    /// Fail it with this errno; the program goes on.
    Errno(i32),
    /// Kill the process (`SIGSYS`), without a report.
    KillProcess,
    /// Kill the thread, without a report.
    KillThread,
    /// Run it and log it to the kernel audit log.
    Log,
    /// Deliver `SIGSYS` to the process (which may handle it).
    Trap,
    /// Report and kill: the shim that holds the notification listener kills the request and
    /// reports `Outcome::Violation { syscall, nr, args }`. Where no trusted supervisor exists
    /// (call-mode helpers) this compiles to [`Action::KillProcess`].
    Notify,
    /// Notify a ptrace tracer with this message (`SECCOMP_RET_TRACE`); without a tracer, which
    /// a sandboxed command never has, the call fails with `ENOSYS`.
    Trace(u16),
}

impl Action {
    fn to_scmp(self, notify_as_kill: bool) -> ScmpAction {
        match self {
            Action::Allow => ScmpAction::Allow,
            Action::Errno(e) => ScmpAction::Errno(e),
            Action::KillProcess => ScmpAction::KillProcess,
            Action::KillThread => ScmpAction::KillThread,
            Action::Log => ScmpAction::Log,
            Action::Trap => ScmpAction::Trap,
            Action::Notify if notify_as_kill => ScmpAction::KillProcess,
            Action::Notify => ScmpAction::Notify,
            Action::Trace(msg) => ScmpAction::Trace(msg),
        }
    }
}

/// An architecture a filter accepts calls from (hakoniwa's list, libseccomp's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// the host's own.
    Native,
    /// i386.
    X86,
    /// x86-64.
    X8664,
    /// x32.
    X32,
    /// 32-bit ARM.
    Arm,
    /// 64-bit ARM.
    Aarch64,
    /// LoongArch 64.
    Loongarch64,
    /// Motorola 68000.
    M68k,
    /// MIPS.
    Mips,
    /// MIPS64.
    Mips64,
    /// MIPS64 n32.
    Mips64n32,
    /// little-endian MIPS.
    Mipsel,
    /// little-endian MIPS64.
    Mipsel64,
    /// little-endian MIPS64 n32.
    Mipsel64n32,
    /// PowerPC.
    Ppc,
    /// PowerPC 64.
    Ppc64,
    /// little-endian PowerPC 64.
    Ppc64le,
    /// S/390.
    S390,
    /// z/Architecture.
    S390x,
    /// PA-RISC.
    Parisc,
    /// PA-RISC 64.
    Parisc64,
    /// 64-bit RISC-V.
    Riscv64,
    /// big-endian SuperH.
    Sheb,
    /// SuperH.
    Sh,
}

impl Arch {
    fn to_scmp(self) -> ScmpArch {
        match self {
            Arch::Native => ScmpArch::Native,
            Arch::X86 => ScmpArch::X86,
            Arch::X8664 => ScmpArch::X8664,
            Arch::X32 => ScmpArch::X32,
            Arch::Arm => ScmpArch::Arm,
            Arch::Aarch64 => ScmpArch::Aarch64,
            Arch::Loongarch64 => ScmpArch::Loongarch64,
            Arch::M68k => ScmpArch::M68k,
            Arch::Mips => ScmpArch::Mips,
            Arch::Mips64 => ScmpArch::Mips64,
            Arch::Mips64n32 => ScmpArch::Mips64N32,
            Arch::Mipsel => ScmpArch::Mipsel,
            Arch::Mipsel64 => ScmpArch::Mipsel64,
            Arch::Mipsel64n32 => ScmpArch::Mipsel64N32,
            Arch::Ppc => ScmpArch::Ppc,
            Arch::Ppc64 => ScmpArch::Ppc64,
            Arch::Ppc64le => ScmpArch::Ppc64Le,
            Arch::S390 => ScmpArch::S390,
            Arch::S390x => ScmpArch::S390X,
            Arch::Parisc => ScmpArch::Parisc,
            Arch::Parisc64 => ScmpArch::Parisc64,
            Arch::Riscv64 => ScmpArch::Riscv64,
            Arch::Sheb => ScmpArch::Sheb,
            Arch::Sh => ScmpArch::Sh,
        }
    }
}

/// An architecture name that is not one of [`Arch`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seccomp: unsupported architecture {0:?}")]
pub struct UnknownArch(pub String);

impl std::str::FromStr for Arch {
    type Err = UnknownArch;

    /// hakoniwa's names, case-insensitive (`x86_64`, `amd64`, `aarch64`, `arm64`, ...).
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        Ok(match s.to_lowercase().as_str() {
            "x86" => Arch::X86,
            "amd64" | "x86-64" | "x86_64" | "x64" => Arch::X8664,
            "x32" => Arch::X32,
            "arm" => Arch::Arm,
            "arm64" | "aarch64" => Arch::Aarch64,
            "loong64" | "loongarch64" => Arch::Loongarch64,
            "m68k" => Arch::M68k,
            "mips" => Arch::Mips,
            "mips64" => Arch::Mips64,
            "mips64n32" => Arch::Mips64n32,
            "mipsel" => Arch::Mipsel,
            "mipsel64" => Arch::Mipsel64,
            "mipsel64n32" => Arch::Mipsel64n32,
            "ppc" => Arch::Ppc,
            "ppc64" => Arch::Ppc64,
            "ppc64le" => Arch::Ppc64le,
            "s390" => Arch::S390,
            "s390x" => Arch::S390x,
            "parisc" => Arch::Parisc,
            "parisc64" => Arch::Parisc64,
            "riscv64" => Arch::Riscv64,
            "sheb" => Arch::Sheb,
            "sh" => Arch::Sh,
            _ => return Err(UnknownArch(s.to_string())),
        })
    }
}

/// A comparison operator for [`ArgCmp`] (hakoniwa's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArgCmpOp {
    /// `arg != datum_a`
    Ne,
    /// `arg < datum_a`
    Lt,
    /// `arg <= datum_a`
    Le,
    /// `arg == datum_a`
    Eq,
    /// `arg >= datum_a`
    Ge,
    /// `arg > datum_a`
    Gt,
    /// `arg & datum_a == datum_b` (`datum_a` is the mask)
    MaskedEq,
}

/// A condition on one argument of a system call (hakoniwa's: [`scmp_argcmp!`](crate::scmp_argcmp)
/// writes them as `arg0 != 123`, `arg1 & 0b10 == 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCmp {
    /// Argument index, 0 to 5.
    pub arg: u32,
    /// Operator.
    pub op: ArgCmpOp,
    /// The value compared with, or the mask of [`ArgCmpOp::MaskedEq`].
    pub datum_a: u64,
    /// The value the masked argument must equal ([`ArgCmpOp::MaskedEq`] only; 0 otherwise).
    pub datum_b: u64,
}

impl ArgCmp {
    /// `arg <op> datum_a`, or `arg & datum_a == datum_b` for [`ArgCmpOp::MaskedEq`].
    pub fn new(arg: u32, op: ArgCmpOp, datum_a: u64, datum_b: u64) -> ArgCmp {
        ArgCmp {
            arg,
            op,
            datum_a,
            datum_b,
        }
    }

    /// Whether a first argument of `v` meets this condition (for conditions on it).
    fn matches_first(&self, v: u64) -> bool {
        match self.op {
            ArgCmpOp::Ne => v != self.datum_a,
            ArgCmpOp::Lt => v < self.datum_a,
            ArgCmpOp::Le => v <= self.datum_a,
            ArgCmpOp::Eq => v == self.datum_a,
            ArgCmpOp::Ge => v >= self.datum_a,
            ArgCmpOp::Gt => v > self.datum_a,
            ArgCmpOp::MaskedEq => v & self.datum_a == self.datum_b,
        }
    }

    fn to_scmp(self) -> ScmpArgCompare {
        let (op, datum) = match self.op {
            ArgCmpOp::Ne => (ScmpCompareOp::NotEqual, self.datum_a),
            ArgCmpOp::Lt => (ScmpCompareOp::Less, self.datum_a),
            ArgCmpOp::Le => (ScmpCompareOp::LessOrEqual, self.datum_a),
            ArgCmpOp::Eq => (ScmpCompareOp::Equal, self.datum_a),
            ArgCmpOp::Ge => (ScmpCompareOp::GreaterEqual, self.datum_a),
            ArgCmpOp::Gt => (ScmpCompareOp::Greater, self.datum_a),
            ArgCmpOp::MaskedEq => (ScmpCompareOp::MaskedEqual(self.datum_a), self.datum_b),
        };
        ScmpArgCompare::new(self.arg, op, datum)
    }
}

impl std::fmt::Display for ArgCmp {
    /// hakoniwa's form: `$0 != 123`, `$1 & 2 = 2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (arg, a) = (self.arg, self.datum_a);
        match self.op {
            ArgCmpOp::Ne => write!(f, "${arg} != {a}"),
            ArgCmpOp::Lt => write!(f, "${arg} < {a}"),
            ArgCmpOp::Le => write!(f, "${arg} <= {a}"),
            ArgCmpOp::Eq => write!(f, "${arg} == {a}"),
            ArgCmpOp::Ge => write!(f, "${arg} >= {a}"),
            ArgCmpOp::Gt => write!(f, "${arg} > {a}"),
            ArgCmpOp::MaskedEq => write!(f, "${arg} & {a} = {}", self.datum_b),
        }
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! scmp_argcmp_arg {
    (arg0) => {
        0
    };
    (arg1) => {
        1
    };
    (arg2) => {
        2
    };
    (arg3) => {
        3
    };
    (arg4) => {
        4
    };
    (arg5) => {
        5
    };
}

/// An [`ArgCmp`] written as hakoniwa writes it: `scmp_argcmp!(arg0 != 123)`,
/// `scmp_argcmp!(arg1 <= 4)`, `scmp_argcmp!(arg2 & 0b10 == 2)`.
///
/// ```
/// use hatchery::scmp_argcmp;
/// use hatchery::seccomp::{ArgCmp, ArgCmpOp};
/// assert_eq!(scmp_argcmp!(arg0 != 123), ArgCmp::new(0, ArgCmpOp::Ne, 123, 0));
/// assert_eq!(scmp_argcmp!(arg3 & 0b0010 == 2), ArgCmp::new(3, ArgCmpOp::MaskedEq, 2, 2));
/// ```
#[macro_export]
macro_rules! scmp_argcmp {
    ($arg:ident != $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Ne,
            $datum,
            0,
        )
    };
    ($arg:ident < $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Lt,
            $datum,
            0,
        )
    };
    ($arg:ident <= $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Le,
            $datum,
            0,
        )
    };
    ($arg:ident == $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Eq,
            $datum,
            0,
        )
    };
    ($arg:ident > $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Gt,
            $datum,
            0,
        )
    };
    ($arg:ident >= $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::Ge,
            $datum,
            0,
        )
    };
    ($arg:ident & $mask:literal == $datum:expr) => {
        $crate::seccomp::ArgCmp::new(
            $crate::scmp_argcmp_arg!($arg),
            $crate::seccomp::ArgCmpOp::MaskedEq,
            $mask,
            $datum,
        )
    };
}

/// Which syscall a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Syscall {
    Name(String),
    /// A raw number of the native architecture (for calls newer than the system's libseccomp).
    Number(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RuleSpec {
    action: Action,
    syscall: Syscall,
    conditions: Vec<ArgCmp>,
}

/// One rule of a [`Filter`], as hakoniwa shows it (`personality($0 == 8, ..) -> Allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the call gets.
    pub action: Action,
    /// The system call's name (`#N` for a raw number).
    pub sysname: String,
    pub(crate) argcmps: Vec<ArgCmp>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conds: Vec<String> = self.argcmps.iter().map(|c| c.to_string()).collect();
        if conds.is_empty() {
            write!(f, "{}(..) -> {:?}", self.sysname, self.action)
        } else {
            write!(
                f,
                "{}({}, ..) -> {:?}",
                self.sysname,
                conds.join(", "),
                self.action
            )
        }
    }
}

/// The calls an explaining filter notifies although the policy allows them: those that reach
/// paths, ports, abstract sockets and other processes, which landlock may refuse.
pub const WATCHED: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "execve",
    "execveat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "connect",
    "bind",
    "kill",
    "tkill",
    "tgkill",
    // Lookups (landlock does not check them; a path they miss may be a missing mount).
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "chdir",
];

/// A seccomp policy, as data. Cheap to clone; clones share the compiled program, so a policy is
/// compiled once however many containers use it.
#[derive(Debug, Clone)]
pub struct Filter {
    default: Action,
    archs: Vec<Arch>,
    rules: Vec<RuleSpec>,
    /// ioctl requests (low 32 bits) and their actions, checked before every other rule.
    ioctls: Vec<(u32, Action)>,
    /// Skip rule names this system's libseccomp does not know (profiles written for several
    /// kernels and architectures list such names); explicit rules report them as errors.
    lenient: bool,
    name: String,
    /// The built-in profile this filter is, unchanged (`None` once a rule is added): its rules
    /// are this build's code, so the disk cache keys it by name instead of by its rules.
    built_in: Option<&'static str>,
    compiled: Arc<[OnceLock<Result<Program, SeccompError>>; 3]>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.default == other.default
            && self.archs == other.archs
            && self.rules == other.rules
            && self.ioctls == other.ioctls
            && self.lenient == other.lenient
    }
}

/// A compiled filter, ready for the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Packed `struct sock_filter` words (`code | jt << 16 | jf << 24 | k << 32`).
    pub words: Arc<[u64]>,
    /// Some rule notifies (the shim installs it with a listener).
    pub notify: bool,
    /// `execve` (the call the shim starts every command with) may notify: some rule for it
    /// notifies, or the default does and no unconditional rule overrides it.
    pub notify_exec: bool,
    /// The program allows the listener hand-over form of `sendmsg` in front of its rules (a
    /// notifying policy that does not allow `sendmsg` outright): the shim revokes that
    /// allowance with a second filter before exec.
    pub handover: bool,
}

/// A rule as libseccomp takes it.
#[derive(Debug, Clone)]
struct ScmpRule {
    action: ScmpAction,
    syscall: libseccomp::ScmpSyscall,
    label: String,
    conds: Vec<ScmpArgCompare>,
    /// Added by an explaining filter for a watched call (other architectures' names fail).
    watched: bool,
}

/// A libseccomp context and the rules it took.
struct Context {
    ctx: ScmpFilterContext,
    added: Vec<ScmpRule>,
}

/// Compiling a [`Filter`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// libseccomp refused the filter context, an architecture or a rule.
    #[error("libseccomp refused {operation}")]
    Libseccomp {
        /// What was being done (`add_rule read`, …).
        operation: String,
        /// libseccomp's error (shared, so the error stays `Clone`).
        #[source]
        source: Arc<libseccomp::error::SeccompError>,
    },
    /// A filter that allows every call by default cannot be narrowed to an allowlist.
    #[error("seccomp profile {0:?} allows by default: it has no allowlist to narrow")]
    AllowsByDefault(String),
    /// A rule names a system call this system's libseccomp does not know.
    #[error("unknown system call {0:?} (not known to this system's libseccomp)")]
    UnknownSyscall(String),
    /// Writing or reading the exported BPF program failed.
    #[error("exporting the BPF program: {op}")]
    ExportIo {
        /// The step (`memfd_create`, `export_bpf`, `read`).
        op: &'static str,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// libseccomp exported something that is not a BPF program.
    #[error("libseccomp exported {bytes} bytes, not a whole number of BPF instructions")]
    ExportSize {
        /// Bytes exported.
        bytes: usize,
    },
    /// The program has more instructions than a filter can hold.
    #[error("{instructions} BPF instructions is more than a filter can hold ({max})")]
    TooLong {
        /// Instructions in the program.
        instructions: usize,
        /// The limit.
        max: usize,
    },
    /// Ioctl rules and notification need a prefix this crate writes for x86-64 and aarch64 only.
    #[error("ioctl rules and notification are implemented for x86-64 and aarch64 only")]
    UnsupportedArch,
}

fn scmp_err(
    operation: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let operation = operation.into();
    move |e| SeccompError::Libseccomp {
        operation,
        source: Arc::new(e),
    }
}

fn export_io(op: &'static str) -> impl FnOnce(std::io::Error) -> SeccompError {
    move |e| SeccompError::ExportIo {
        op,
        source: Arc::new(e),
    }
}

impl Filter {
    /// A filter whose calls not matched by any rule get `default`; native architecture only.
    pub fn new(default: Action) -> Filter {
        Filter {
            default,
            archs: vec![Arch::Native],
            rules: Vec::new(),
            ioctls: Vec::new(),
            lenient: false,
            name: "custom".into(),
            built_in: None,
            compiled: Arc::default(),
        }
    }

    /// The name of the profile this filter came from (`podman`, `strict`, a file, `custom`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn named(mut self, name: impl Into<String>) -> Filter {
        self.name = name.into();
        self
    }

    pub(crate) fn lenient(mut self) -> Filter {
        self.lenient = true;
        self.changed();
        self
    }

    /// Marks this filter as the built-in profile `name`, as its constructor made it.
    pub(crate) fn built_in(mut self, name: &'static str) -> Filter {
        self.built_in = Some(name);
        self
    }

    fn changed(&mut self) {
        self.compiled = Arc::default();
        self.built_in = None;
    }

    /// Also accepts calls from `arch` (a filter has only the native architecture by default;
    /// calls from any other kill the process).
    pub fn add_arch(&mut self, arch: Arch) -> &mut Self {
        if !self.archs.contains(&arch) {
            self.archs.push(arch);
        }
        self.changed();
        self
    }

    /// `syscall` gets `action`.
    pub fn add_rule(&mut self, action: Action, syscall: &str) -> &mut Self {
        self.add_rule_conditional(action, syscall, &[])
    }

    /// `syscall` gets `action` when every condition holds.
    pub fn add_rule_conditional(
        &mut self,
        action: Action,
        syscall: &str,
        conditions: &[ArgCmp],
    ) -> &mut Self {
        self.rules.push(RuleSpec {
            action,
            syscall: Syscall::Name(syscall.to_string()),
            conditions: conditions.to_vec(),
        });
        self.changed();
        self
    }

    /// `ioctl(fd, request, …)` gets `action` when the low 32 bits of its request equal
    /// `request` (the kernel ignores the high bits, so a plain comparison could be bypassed).
    /// Checked before every other rule of the filter.
    pub fn add_ioctl_rule(&mut self, action: Action, request: u32) -> &mut Self {
        self.ioctls.push((request, action));
        self.changed();
        self
    }

    /// Allows `syscall` exactly: with `arg0`, only when its first argument equals it (the
    /// filter's rules for that same condition are replaced, its other rules for the call kept);
    /// without, every rule of the filter for the call is replaced by an unconditional allow.
    /// What a [`Denial`](crate::Denial) suggests as `--seccomp-allow NAME[:ARG0]`.
    pub fn allow_syscall(&mut self, syscall: &str, arg0: Option<u64>) -> &mut Self {
        let conditions: Vec<ArgCmp> = arg0
            .map(|v| vec![ArgCmp::new(0, ArgCmpOp::Eq, v, 0)])
            .unwrap_or_default();
        self.rules.retain(|r| {
            let same = match &r.syscall {
                Syscall::Name(n) => n == syscall,
                Syscall::Number(nr) => syscall_name(i64::from(*nr)) == syscall,
            };
            !same || (arg0.is_some() && r.conditions != conditions)
        });
        self.add_rule_conditional(Action::Allow, syscall, &conditions)
    }

    /// The `--seccomp-allow` spec that allows exactly a call this filter failed with an errno
    /// (`NAME`, or `NAME:ARG0` when its rules look at the first argument), or `None` when no
    /// such change is safe. Only calls the default action refused qualify: not calls a rule of
    /// the policy refuses by name (on purpose: podman's socket families, `clone3`), not calls
    /// with rules that report or kill (violations), not calls whose arguments a filter cannot
    /// see (`clone3`, io_uring), `ioctl`, `clone` and other calls that reach namespaces or other
    /// processes, nor calls whose rules look past the first argument (netlink's protocols).
    pub fn allowance(&self, syscall: &str, arg0: Option<u64>) -> Option<String> {
        const NEVER: &[&str] = &[
            "clone3",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "ioctl",
            "clone",
            "unshare",
            "setns",
            "seccomp",
            "prctl",
            "ptrace",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
        ];
        if NEVER.contains(&syscall) {
            return None;
        }
        let rules: Vec<&RuleSpec> = self
            .rules
            .iter()
            .filter(|r| match &r.syscall {
                Syscall::Name(n) => n == syscall,
                Syscall::Number(nr) => syscall_name(i64::from(*nr)) == syscall,
            })
            .collect();
        if rules
            .iter()
            .any(|r| !matches!(r.action, Action::Allow | Action::Log | Action::Errno(_)))
        {
            return None; // violations, kills, traps
        }
        let only_arg0 = |r: &RuleSpec| {
            r.conditions.len() == 1
                && r.conditions[0].arg == 0
                && r.conditions[0].op == ArgCmpOp::Eq
        };
        let errno_rules: Vec<&&RuleSpec> = rules
            .iter()
            .filter(|r| matches!(r.action, Action::Errno(_)))
            .collect();
        // Never past podman's own policy: what it leaves out (modify_ldt, kcmp, pidfd_getfd,
        // personality flags, …) the runtimes leave out on purpose.
        if !within_podman(syscall, arg0) {
            return None;
        }
        if errno_rules.is_empty() {
            // Refused by the default action; with a known first argument, for that value only.
            return match arg0 {
                Some(v) if rules.iter().all(|r| only_arg0(r)) => Some(format!("{syscall}:{v}")),
                None if rules.iter().all(|r| r.conditions.is_empty()) => Some(syscall.to_string()),
                _ => None,
            };
        }
        // Which rules apply to this first argument? If one also looks at other arguments
        // the outcome depends on them: no exact allowance. Otherwise a value no errno rule
        // refuses was refused by the default, and one socket family's own rule can be lifted.
        let v = arg0?;
        let applies = |r: &&RuleSpec| {
            r.conditions
                .iter()
                .filter(|c| c.arg == 0)
                .all(|c| c.matches_first(v))
        };
        let relevant: Vec<&&RuleSpec> = rules.iter().filter(|r| applies(r)).collect();
        if relevant
            .iter()
            .any(|r| r.conditions.is_empty() || r.conditions.iter().any(|c| c.arg != 0))
        {
            return None;
        }
        let refusing: Vec<&&&RuleSpec> = relevant
            .iter()
            .filter(|r| matches!(r.action, Action::Errno(_)))
            .collect();
        let socket = matches!(syscall, "socket" | "socketpair");
        (refusing.is_empty() && !(socket && v == libc::AF_NETLINK as u64))
            .then(|| format!("{syscall}:{v}"))
    }

    /// Whether some allowing rule of this filter allows the call outright, or for this first
    /// argument (rules on other arguments do not count).
    fn allows(&self, syscall: &str, arg0: Option<u64>) -> bool {
        self.rules.iter().any(|r| {
            let named = match &r.syscall {
                Syscall::Name(n) => n == syscall,
                Syscall::Number(nr) => syscall_name(i64::from(*nr)) == syscall,
            };
            named
                && matches!(r.action, Action::Allow | Action::Log)
                && r.conditions
                    .iter()
                    .all(|c| c.arg == 0 && arg0.is_some_and(|v| c.matches_first(v)))
        })
    }

    /// This filter allowing only the calls in `syscalls`: every allowing rule (conditional or
    /// not) of another call is dropped, so those calls get the default action; every other rule
    /// is kept. A learned profile's allowlist, strictly within the filter it narrows. A filter
    /// that allows by default cannot be narrowed so ([`SeccompError::AllowsByDefault`]).
    ///
    /// With `families`, `socket` and `socketpair` are allowed for those address families only
    /// (rules that allow one family by its first argument are dropped for the others).
    pub fn only_allowing(
        &self,
        syscalls: &[String],
        families: Option<&[i32]>,
    ) -> Result<Filter, SeccompError> {
        if matches!(self.default, Action::Allow | Action::Log) {
            return Err(SeccompError::AllowsByDefault(self.name.clone()));
        }
        let mut f = self.clone();
        f.rules.retain(|r| {
            let name = match &r.syscall {
                Syscall::Name(n) => n.clone(),
                Syscall::Number(nr) => syscall_name(i64::from(*nr)),
            };
            if !matches!(r.action, Action::Allow | Action::Log) {
                return true;
            }
            // A rule for one family names it as `arg0 ==` among its conditions (netlink's
            // also names the protocol).
            let family = r
                .conditions
                .iter()
                .find(|c| c.arg == 0 && c.op == ArgCmpOp::Eq)
                .map(|c| c.datum_a);
            let family_ok = match (families, name.as_str(), family) {
                (Some(fams), "socket" | "socketpair", Some(f)) => {
                    fams.iter().any(|g| *g as u64 == f)
                }
                _ => true,
            };
            syscalls.contains(&name) && family_ok
        });
        f.name = format!("{} (only {} calls)", self.name, syscalls.len());
        f.changed();
        Ok(f)
    }

    /// The calls some rule allows (conditionally or not), by name.
    pub fn allowed_syscalls(&self) -> std::collections::BTreeSet<String> {
        self.rules
            .iter()
            .filter(|r| matches!(r.action, Action::Allow | Action::Log))
            .map(|r| match &r.syscall {
                Syscall::Name(n) => n.clone(),
                Syscall::Number(nr) => syscall_name(i64::from(*nr)),
            })
            .collect()
    }

    /// Whether some rule for `syscall` looks at its arguments.
    pub fn has_conditions(&self, syscall: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(&r.syscall, Syscall::Name(n) if n == syscall) && !r.conditions.is_empty()
        })
    }

    /// A rule by raw syscall number of the native architecture.
    pub(crate) fn add_rule_nr(&mut self, action: Action, nr: i32) -> &mut Self {
        self.rules.push(RuleSpec {
            action,
            syscall: Syscall::Number(nr),
            conditions: Vec::new(),
        });
        self.changed();
        self
    }

    /// Reads a profile in the OCI runtime-spec / Docker JSON format.
    pub fn from_oci_json(json: &str) -> Result<Filter, OciError> {
        oci::parse(json, "json")
    }

    /// Reads a profile file in the OCI runtime-spec / Docker JSON format.
    pub fn from_oci_file(path: impl AsRef<std::path::Path>) -> Result<Filter, OciError> {
        oci::load(path.as_ref())
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The rules, as hakoniwa's `get_rules` gives them (ioctl rules not included).
    #[doc(hidden)]
    pub fn get_rules(&self) -> Vec<Rule> {
        self.rules
            .iter()
            .map(|r| Rule {
                action: r.action,
                sysname: match &r.syscall {
                    Syscall::Name(n) => n.clone(),
                    Syscall::Number(nr) => format!("#{nr}"),
                },
                argcmps: r.conditions.clone(),
            })
            .collect()
    }

    /// The architectures calls are accepted from.
    pub fn architectures(&self) -> &[Arch] {
        &self.archs
    }

    /// The number of rules (ioctl rules included; the default action is not a rule).
    pub fn rules_len(&self) -> usize {
        self.rules.len() + self.ioctls.len()
    }

    /// One line per rule, as hakoniwa logs them (`mount(..) -> Errno(1)`,
    /// `personality($0 == 0, ..) -> Allow`); ioctl rules first, as they are checked first.
    pub fn rules_text(&self) -> Vec<String> {
        let ioctls = self
            .ioctls
            .iter()
            .map(|(req, a)| format!("ioctl($1 & 0xffffffff == {req:#x}, ..) -> {a:?}"));
        let rules = self.get_rules().into_iter().map(|r| r.to_string());
        ioctls.chain(rules).collect()
    }

    /// Compiles the filter (once; later calls and clones reuse the result). With
    /// `notify_as_kill`, [`Action::Notify`] compiles to [`Action::KillProcess`], for processes
    /// no trusted supervisor watches.
    pub fn compile(&self, notify_as_kill: bool) -> Result<Program, SeccompError> {
        self.compiled[notify_as_kill as usize]
            .get_or_init(|| self.build(notify_as_kill, false))
            .clone()
    }

    /// Compiles the filter for a shim that explains denials: the program to install, which
    /// notifies every call this filter would fail or refuse and every call in [`WATCHED`]
    /// (those landlock may refuse), and this filter's own supervised program, which the shim
    /// evaluates on each notification to answer exactly as it would have. Once, as
    /// [`Filter::compile`].
    pub fn compile_explaining(&self) -> Result<(Program, Program), SeccompError> {
        let installed = self.compiled[2]
            .get_or_init(|| self.build(false, true))
            .clone()?;
        Ok((installed, self.compile(false)?))
    }

    /// The action of `rule` (of call `name`, when known) in the program built.
    fn action_for(
        action: Action,
        name: Option<&str>,
        notify_as_kill: bool,
        explain: bool,
    ) -> ScmpAction {
        match action {
            Action::Errno(_) | Action::Trace(_) if explain => ScmpAction::Notify,
            Action::Allow | Action::Log
                if explain && name.is_some_and(|n| WATCHED.contains(&n)) =>
            {
                ScmpAction::Notify
            }
            other => other.to_scmp(notify_as_kill),
        }
    }

    fn build(&self, notify_as_kill: bool, explain: bool) -> Result<Program, SeccompError> {
        if !explain {
            if let Some(p) = self
                .built_in
                .and_then(|name| precompiled::program(name, notify_as_kill))
            {
                return Ok(p);
            }
        }
        if !cache::enabled() {
            return self.build_uncached(notify_as_kill, explain);
        }
        let what = self.cache_what(explain);
        let key = cache::key(&what, notify_as_kill);
        if let Some(p) = cache::load(&key) {
            return Ok(p);
        }
        let p = self.build_uncached(notify_as_kill, explain)?;
        cache::store(&key, &p);
        Ok(p)
    }

    /// What the disk cache keys this filter by. A built-in profile is its name (its rules are
    /// this build's code, which the key's digest of the seccomp sources covers); any other
    /// filter is its rules, written out (0.2 ms for podman's on a slow VM: the cost a built-in
    /// profile's key avoids).
    fn cache_what(&self, explain: bool) -> String {
        match self.built_in {
            Some(name) => format!("built-in profile {name}, explain {explain}"),
            None => format!(
                "{:?}",
                (
                    &self.default,
                    &self.archs,
                    &self.rules,
                    &self.ioctls,
                    self.lenient,
                    explain
                )
            ),
        }
    }

    fn build_uncached(&self, notify_as_kill: bool, explain: bool) -> Result<Program, SeccompError> {
        Ok(self.parts(notify_as_kill, explain)?.0)
    }

    /// The program, and what it was checked against: libseccomp's program of the whole policy
    /// behind the same prefix.
    fn parts(
        &self,
        notify_as_kill: bool,
        explain: bool,
    ) -> Result<(Program, Vec<u64>), SeccompError> {
        let default = Self::action_for(self.default, None, notify_as_kill, explain);
        let rules = self.scmp_rules(notify_as_kill, explain)?;
        let full = self.context(default, &rules, |_| true)?;
        let notify = explain
            || matches!(default, ScmpAction::Notify)
            || self
                .ioctls
                .iter()
                .any(|(_, a)| a.to_scmp(notify_as_kill) == ScmpAction::Notify)
            || full.added.iter().any(|r| r.action == ScmpAction::Notify);
        let whole = export(&full.ctx)?;
        let ioctls: Vec<(u32, Action)> = self
            .ioctls
            .iter()
            .map(|(req, a)| match a {
                Action::Errno(_) | Action::Trace(_) if explain => (*req, Action::Notify),
                a => (*req, *a),
            })
            .collect();
        let native = hatchery_sys::seccomp::native_audit_arch();
        // The hand-over needs its allowance only where the policy does not allow `sendmsg`
        // outright anyway (podman's does): then no revoking filter either.
        let handover = needs_handover(&whole, notify);
        let mut words = if handover || !ioctls.is_empty() {
            prefix(&ioctls, handover, notify_as_kill)?
        } else {
            Vec::new()
        };
        let reference: Vec<u64> = words.iter().chain(&whole).copied().collect();
        match self.dispatched(default, &full.added, &whole, native) {
            Some(dispatched) => {
                words.extend(dispatched);
                if !native.is_some_and(|arch| dispatch::same_verdicts(&words, &reference, arch)) {
                    words.clone_from(&reference);
                }
            }
            None => words.clone_from(&reference),
        }
        if words.len() > MAX_INSTRUCTIONS {
            return Err(SeccompError::TooLong {
                instructions: words.len(),
                max: MAX_INSTRUCTIONS,
            });
        }
        let program = Program {
            words: words.into(),
            notify,
            notify_exec: notify && (explain || self.may_notify_exec(notify_as_kill)),
            handover,
        };
        Ok((program, reference))
    }

    /// The rules as libseccomp takes them (explaining: the watched calls without a rule of
    /// their own notify too), in order; rules that repeat the default are left out (libseccomp
    /// refuses them).
    fn scmp_rules(
        &self,
        notify_as_kill: bool,
        explain: bool,
    ) -> Result<Vec<ScmpRule>, SeccompError> {
        let default = Self::action_for(self.default, None, notify_as_kill, explain);
        let mut out = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let name = match &rule.syscall {
                Syscall::Name(n) => Some(n.as_str()),
                Syscall::Number(_) => None,
            };
            let action = Self::action_for(rule.action, name, notify_as_kill, explain);
            if action == default {
                continue;
            }
            let (syscall, label) = match &rule.syscall {
                Syscall::Name(name) => match libseccomp::ScmpSyscall::from_name(name) {
                    Ok(s) => (s, name.clone()),
                    Err(_) if self.lenient => continue,
                    Err(_) => return Err(SeccompError::UnknownSyscall(name.clone())),
                },
                Syscall::Number(nr) => (libseccomp::ScmpSyscall::from(*nr), format!("#{nr}")),
            };
            out.push(ScmpRule {
                action,
                syscall,
                label,
                conds: rule.conditions.iter().map(|c| c.to_scmp()).collect(),
                watched: false,
            });
        }
        if explain && default != ScmpAction::Notify {
            // Watched calls without rules of their own take the default (allow): notify them.
            for name in WATCHED {
                let ruled = self
                    .rules
                    .iter()
                    .any(|r| matches!(&r.syscall, Syscall::Name(n) if n == name));
                if let (false, Ok(nr)) = (ruled, libseccomp::ScmpSyscall::from_name(name)) {
                    out.push(ScmpRule {
                        action: ScmpAction::Notify,
                        syscall: nr,
                        label: (*name).to_string(),
                        conds: Vec::new(),
                        watched: true,
                    });
                }
            }
        }
        Ok(out)
    }

    /// libseccomp's context with `default`, this filter's architectures and the rules `keep`
    /// selects; also the rules it took (lenient filters skip those libseccomp refuses).
    fn context(
        &self,
        default: ScmpAction,
        rules: &[ScmpRule],
        keep: impl Fn(&ScmpRule) -> bool,
    ) -> Result<Context, SeccompError> {
        let mut ctx = ScmpFilterContext::new(default).map_err(scmp_err("new filter"))?;
        ctx.set_act_badarch(ScmpAction::KillProcess)
            .map_err(scmp_err("bad-arch action"))?;
        // The shim sets no_new_privs itself before installing the program.
        ctx.set_ctl_nnp(false).map_err(scmp_err("nnp"))?;
        // A binary tree of syscall numbers instead of a linear scan: an allowlist of ~350 calls
        // otherwise costs up to ~350 comparisons on every system call the guest makes.
        ctx.set_ctl_optimize(2).map_err(scmp_err("optimize"))?;
        for arch in &self.archs {
            if *arch != Arch::Native {
                ctx.add_arch(arch.to_scmp())
                    .map_err(scmp_err(format!("add_arch {arch:?}")))?;
            }
        }
        let mut added = Vec::new();
        for rule in rules.iter().filter(|r| keep(r)) {
            let result = if rule.conds.is_empty() {
                ctx.add_rule(rule.action, rule.syscall)
            } else {
                ctx.add_rule_conditional(rule.action, rule.syscall, &rule.conds)
            };
            match result {
                Ok(_) => added.push(rule.clone()),
                // Names of other architectures only fail here; nothing to watch then.
                Err(_) if rule.watched => {}
                // A name that exists for another architecture only (e.g. `_llseek` on x86-64).
                Err(_) if self.lenient => {}
                Err(e) => return Err(scmp_err(format!("add_rule {}", rule.label))(e)),
            }
        }
        Ok(Context { ctx, added })
    }

    /// The policy as a [`dispatch`] on the call number in front of libseccomp's program of the
    /// rules on the calls whose verdict depends on arguments (`whole`: libseccomp's program of
    /// all `rules`). `None` where it does not apply (other architectures in the filter, no
    /// native architecture, a body libseccomp refuses or that decides a call otherwise) or
    /// would not be shorter.
    fn dispatched(
        &self,
        default: ScmpAction,
        rules: &[ScmpRule],
        whole: &[u64],
        native: Option<u32>,
    ) -> Option<Vec<u64>> {
        let arch = native?;
        if self.archs.iter().any(|a| *a != Arch::Native) {
            return None;
        }
        let leaves = dispatch::leaves(whole, arch);
        let dependent = dispatch::argument_dependent(&leaves);
        let in_body = |r: &ScmpRule| {
            let nr = r.syscall.as_raw_syscall();
            !(0..dispatch::LIMIT as i32).contains(&nr) || dependent.binary_search(&nr).is_ok()
        };
        let body = self.context(default, rules, in_body).ok()?;
        if body.added.len() != rules.iter().filter(|r| in_body(r)).count() {
            return None;
        }
        let body = export(&body.ctx).ok()?;
        let mut words = dispatch::front(&leaves, arch);
        words.extend(body);
        (words.len() < whole.len()).then_some(words)
    }

    /// Whether `execve` may notify (conservative: conditions are not evaluated).
    fn may_notify_exec(&self, notify_as_kill: bool) -> bool {
        let notifies = |a: Action| a.to_scmp(notify_as_kill) == ScmpAction::Notify;
        let rules: Vec<&RuleSpec> = self
            .rules
            .iter()
            .filter(|r| match &r.syscall {
                Syscall::Name(n) => n == "execve",
                Syscall::Number(n) => i64::from(*n) == libc::SYS_execve,
            })
            .collect();
        rules.iter().any(|r| notifies(r.action))
            || (notifies(self.default) && !rules.iter().any(|r| r.conditions.is_empty()))
    }
}

/// The longest program the kernel installs (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Whether a notifying program needs the listener hand-over allowance (and so the revoking filter
/// after it): unless it allows `sendmsg` outright, whatever the arguments. Exact on a program with
/// the allowance in front too, which looks at `sendmsg`'s flags (so it is never "outright").
pub(crate) fn needs_handover(words: &[u64], notify: bool) -> bool {
    notify
        && hatchery_sys::seccomp::native_audit_arch().map_or(true, |arch| {
            dispatch::fixed(words, arch, libc::SYS_sendmsg as u32)
                != Some(ret_value(Action::Allow, false))
        })
}

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
    u64::from(code) | u64::from(jt) << 16 | u64::from(jf) << 24 | u64::from(k) << 32
}

/// Offset in `struct seccomp_data` of the low 32 bits of argument `i`.
fn arg_low(i: u32) -> u32 {
    let base = 16 + 8 * i;
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 4
    }
}

/// `SECCOMP_RET_*` of an action.
fn ret_value(action: Action, notify_as_kill: bool) -> u32 {
    match action {
        Action::Allow => 0x7fff_0000,
        Action::Errno(e) => 0x0005_0000 | (e as u32 & 0xffff),
        Action::KillProcess => 0x8000_0000,
        Action::KillThread => 0,
        Action::Log => 0x7ffc_0000,
        Action::Trap => 0x0003_0000,
        Action::Notify if notify_as_kill => 0x8000_0000,
        Action::Notify => 0x7fc0_0000,
        Action::Trace(msg) => 0x7ff0_0000 | u32::from(msg),
    }
}

/// Hand-written checks in front of the rest, for the native architecture only: the listener
/// hand-over when the filter notifies and does not allow `sendmsg` outright, and the ioctl
/// requests compared on their low 32 bits.
///
/// The hand-over is two calls the command makes between installing this filter and exec:
/// `sendmsg` with exactly [`LISTENER_SEND_FLAGS`] (the listener to the shim), then
/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, …)` installing a second, tiny filter that makes that
/// `sendmsg` form fail with `EPERM` from then on (the shim's `confine::revoke_filter`). So the
/// `sendmsg` allowance is one-shot: the command never runs with it. What stays is that the
/// command may install more seccomp filters without flags (which can only restrict it further,
/// and without a listener of their own).
///
/// [`LISTENER_SEND_FLAGS`]: hatchery_protocol::LISTENER_SEND_FLAGS
fn prefix(
    ioctls: &[(u32, Action)],
    handover: bool,
    notify_as_kill: bool,
) -> Result<Vec<u64>, SeccompError> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let Some(arch) = hatchery_sys::seccomp::native_audit_arch() else {
        return Err(SeccompError::UnsupportedArch);
    };
    // Layout (`skip` = first instruction after the prefix):
    //   ld arch; jeq native ? next : skip; ld nr
    //   [handover] jeq sendmsg ? next : +3; ld arg2; jeq FLAGS ? next : skip; ret ALLOW
    //              jeq seccomp ? next : +5; ld arg0; jeq SET_MODE_FILTER ? next : skip;
    //              ld arg1; jeq 0 ? next : skip; ret ALLOW
    //   [ioctls]   jeq ioctl ? next : skip; ld arg1; { jeq req ? next : +1; ret action }*
    let handover_len = if handover { 10 } else { 0 };
    let ioctl_len = if ioctls.is_empty() {
        0
    } else {
        2 + 2 * ioctls.len()
    };
    let total = 3 + handover_len + ioctl_len;
    if total > 250 {
        return Err(SeccompError::TooLong {
            instructions: total,
            max: 250,
        });
    }
    let mut p = Vec::with_capacity(total);
    let to_skip = |p: &Vec<u64>| (total - p.len() - 1) as u8;
    p.push(bpf(LD_W_ABS, 0, 0, 4));
    let j = to_skip(&p);
    p.push(bpf(JEQ_K, 0, j, arch));
    p.push(bpf(LD_W_ABS, 0, 0, 0));
    if handover {
        p.push(bpf(JEQ_K, 0, 3, libc::SYS_sendmsg as u32));
        p.push(bpf(LD_W_ABS, 0, 0, arg_low(2)));
        let j = to_skip(&p);
        p.push(bpf(
            JEQ_K,
            0,
            j,
            hatchery_protocol::LISTENER_SEND_FLAGS as u32,
        ));
        p.push(bpf(RET_K, 0, 0, ret_value(Action::Allow, false)));
        // seccomp's operation and flags are unsigned ints: the low 32 bits are what counts.
        p.push(bpf(JEQ_K, 0, 5, libc::SYS_seccomp as u32));
        p.push(bpf(LD_W_ABS, 0, 0, arg_low(0)));
        let j = to_skip(&p);
        p.push(bpf(JEQ_K, 0, j, 1 /* SECCOMP_SET_MODE_FILTER */));
        p.push(bpf(LD_W_ABS, 0, 0, arg_low(1)));
        let j = to_skip(&p);
        p.push(bpf(JEQ_K, 0, j, 0));
        p.push(bpf(RET_K, 0, 0, ret_value(Action::Allow, false)));
    }
    if !ioctls.is_empty() {
        let j = to_skip(&p);
        p.push(bpf(JEQ_K, 0, j, libc::SYS_ioctl as u32));
        p.push(bpf(LD_W_ABS, 0, 0, arg_low(1)));
        for (req, action) in ioctls {
            p.push(bpf(JEQ_K, 0, 1, *req));
            p.push(bpf(RET_K, 0, 0, ret_value(*action, notify_as_kill)));
        }
    }
    debug_assert_eq!(p.len(), total);
    Ok(p)
}

fn export(ctx: &ScmpFilterContext) -> Result<Vec<u64>, SeccompError> {
    let mut file = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .create("hatchery-seccomp-bpf")
        .map_err(|e| match e {
            memfd::Error::Create(io) | memfd::Error::AddSeals(io) | memfd::Error::GetSeals(io) => {
                export_io("memfd_create")(io)
            }
        })?
        .into_file();
    ctx.export_bpf(&file).map_err(scmp_err("export_bpf"))?;
    file.rewind().map_err(export_io("rewind"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(export_io("read"))?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(SeccompError::ExportSize { bytes: bytes.len() });
    }
    // `struct sock_filter` is { u16 code; u8 jt; u8 jf; u32 k } in native byte order, which is
    // exactly the packing `code | jt << 16 | jf << 24 | k << 32` of a native-endian u64.
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
        .collect())
}

/// Whether podman's policy allows the call (for this first argument, when given).
fn within_podman(syscall: &str, arg0: Option<u64>) -> bool {
    static PODMAN: OnceLock<Option<Filter>> = OnceLock::new();
    PODMAN
        .get_or_init(|| Profile::from_name("podman").and_then(|p| p.filter()))
        .as_ref()
        .is_some_and(|f| f.allows(syscall, arg0))
}

/// The name of native system call `nr` (`"#nr"` when libseccomp does not know it).
pub fn syscall_name(nr: i64) -> String {
    i32::try_from(nr)
        .ok()
        .and_then(|n| libseccomp::ScmpSyscall::from(n).get_name().ok())
        .unwrap_or_else(|| format!("#{nr}"))
}

/// Fills in the syscall name of a violation reported by the shim.
pub(crate) fn name_violation(outcome: &mut hatchery_protocol::Outcome) {
    if let hatchery_protocol::Outcome::Violation { syscall, nr, .. } = outcome {
        if syscall.is_empty() {
            *syscall = syscall_name(*nr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A built-in profile is keyed in the disk cache by its name while it is unchanged; any
    /// change (a rule, an architecture, leniency, narrowing) keys it by its rules again.
    #[test]
    fn a_built_in_profile_is_cached_by_name_until_it_changes() {
        let podman = Profile::Podman.filter().unwrap();
        assert_eq!(
            podman.cache_what(false),
            "built-in profile podman, explain false"
        );
        assert_ne!(podman.cache_what(false), podman.cache_what(true));
        assert_ne!(
            podman.cache_what(false),
            Profile::Strict.filter().unwrap().cache_what(false)
        );
        let changes: [fn(&mut Filter); 4] = [
            |f| {
                f.add_rule(Action::Allow, "ptrace");
            },
            |f| {
                f.add_ioctl_rule(Action::Allow, 0x5401);
            },
            |f| {
                f.allow_syscall("mount", None);
            },
            |f| {
                f.add_arch(Arch::X86);
            },
        ];
        for change in changes {
            let mut f = podman.clone();
            change(&mut f);
            assert!(f.cache_what(false).starts_with('('), "{}", f.name());
        }
        let narrowed = podman.only_allowing(&["read".to_string()], None).unwrap();
        assert!(narrowed.cache_what(false).starts_with('('));
        assert!(podman.clone().lenient().cache_what(false).starts_with('('));
    }

    /// Every built-in policy, in each way it compiles, gets the number dispatch (shorter than
    /// libseccomp's whole program, which decides every call alike), and a policy that allows
    /// `sendmsg` outright needs no hand-over allowance.
    #[test]
    fn built_in_policies_compile_to_a_shorter_dispatch_that_decides_alike() {
        let Some(arch) = hatchery_sys::seccomp::native_audit_arch() else {
            return;
        };
        let mut notifying = Filter::new(Action::Errno(libc::EPERM));
        notifying
            .add_rule(Action::Allow, "read")
            .add_rule(Action::Notify, "mount")
            .add_rule_conditional(Action::Allow, "personality", &[scmp_argcmp!(arg0 == 8)]);
        let mut policies: Vec<Filter> = ["podman", "strict", "audit"]
            .into_iter()
            .filter_map(|n| Profile::from_name(n).and_then(|p| p.filter()))
            .collect();
        policies.push(Filter::from_presets(
            Presets::STRICT,
            PresetFlags::default(),
        ));
        policies.push(notifying);
        for f in &policies {
            for (notify_as_kill, explain) in [(false, false), (true, false), (false, true)] {
                let (program, reference) = f.parts(notify_as_kill, explain).unwrap();
                let what = format!("{} {notify_as_kill} {explain}", f.name());
                let words = &program.words;
                assert!(
                    words.len() <= reference.len(),
                    "{what}: {} vs {}",
                    words.len(),
                    reference.len()
                );
                // Podman's allowlist gets to about a third.
                if f.name() == "podman" {
                    assert!(words.len() * 2 < reference.len(), "{what}");
                }
                assert!(dispatch::same_verdicts(words, &reference, arch), "{what}");
            }
        }
        let podman = Profile::Podman.filter().unwrap().compile(false).unwrap();
        assert!(podman.notify && !podman.handover, "podman allows sendmsg");
        let strict = Profile::Strict.filter().unwrap().compile(false).unwrap();
        assert!(strict.notify && strict.handover, "strict notifies sendmsg");
    }

    /// A policy longer than the kernel installs (4096 instructions) is a typed error when it
    /// compiles, not a failure of every command at install time.
    #[test]
    fn a_policy_longer_than_the_kernel_takes_is_refused_when_compiled() {
        let mut f = Filter::new(Action::Errno(libc::EPERM));
        for i in 0..4500u64 {
            f.add_rule_conditional(Action::Allow, "personality", &[scmp_argcmp!(arg0 == i)]);
        }
        match f.compile(false) {
            Err(SeccompError::TooLong { instructions, max }) => {
                assert!(instructions > 4096 && max == 4096, "{instructions} {max}")
            }
            Ok(p) => panic!("compiled to {} instructions", p.words.len()),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn compiles_once_and_clones_share_the_program() {
        let mut f = Filter::new(Action::Errno(libc::ENOSYS));
        f.add_rule(Action::Allow, "read");
        let a = f.compile(false).unwrap();
        let g = f.clone();
        let b = g.compile(false).unwrap();
        assert!(Arc::ptr_eq(&a.words, &b.words));
        assert!(!a.notify);
    }

    #[test]
    fn notify_is_detected_and_can_compile_to_kill() {
        let mut f = Filter::new(Action::Allow);
        f.add_rule(Action::Notify, "ptrace");
        assert!(f.compile(false).unwrap().notify);
        assert!(!f.compile(true).unwrap().notify);
        assert!(!f.compile(false).unwrap().notify_exec);
    }

    #[test]
    fn notifying_exec_is_detected() {
        let mut f = Filter::new(Action::Allow);
        f.add_rule(Action::Notify, "execveat");
        assert!(
            !f.compile(false).unwrap().notify_exec,
            "the shim uses execve"
        );
        f.add_rule_conditional(
            Action::Notify,
            "execve",
            &[ArgCmp::new(1, ArgCmpOp::Eq, 0, 0)],
        );
        assert!(f.compile(false).unwrap().notify_exec);
        assert!(!f.compile(true).unwrap().notify_exec);
        // A notifying default counts unless an unconditional rule overrides it.
        let mut f = Filter::new(Action::Notify);
        f.add_rule_conditional(
            Action::Allow,
            "execve",
            &[ArgCmp::new(1, ArgCmpOp::Ne, 0, 0)],
        );
        assert!(f.compile(false).unwrap().notify_exec);
        f.add_rule(Action::Allow, "execve");
        assert!(!f.compile(false).unwrap().notify_exec);
        for p in [profiles::Profile::Podman, profiles::Profile::Strict] {
            assert!(
                !p.filter().unwrap().compile(false).unwrap().notify_exec,
                "{p:?}"
            );
        }
    }

    #[test]
    fn unknown_names_are_errors_unless_lenient() {
        let mut f = Filter::new(Action::Allow);
        f.add_rule(Action::KillProcess, "no_such_syscall");
        assert!(matches!(
            f.compile(false),
            Err(SeccompError::UnknownSyscall(name)) if name == "no_such_syscall"
        ));
        assert!(f.lenient().compile(false).is_ok());
    }

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_name(libc::SYS_ptrace), "ptrace");
        assert_eq!(syscall_name(99_999), "#99999");
    }
}
