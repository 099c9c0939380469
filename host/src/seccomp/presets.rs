//! hakurei's seccomp presets (`hakurei.app/container/seccomp`, after flatpak's filter): a
//! denylist over an allow-by-default policy, built from named parts.
//!
//! ```text
//!  always       dmesg (syslog), uselib, acct, quotactl, the keyring (add_key, keyctl,
//!               request_key), NUMA and page migration: EPERM; socket families other than
//!               unix, inet, inet6, netlink (+ can, bluetooth with their flags): EAFNOSUPPORT
//!  ext          clock setting, module loading, kexec and reboot, swap: EPERM
//!  deny-ns      unshare, setns, mount, umount, pivot_root, chroot, clone with CLONE_NEWUSER:
//!               EPERM; clone3 and the new mount API: ENOSYS (+ ext: chown family, uid and
//!               gid changes: EPERM)
//!  deny-tty     the TIOCSTI and TIOCLINUX ioctls: EPERM
//!  deny-devel   perf_event_open, ptrace, personality(p) for any p but the allowed one: EPERM
//!  linux32      the allowed personality is PER_LINUX32 instead of PER_LINUX
//!  (no multiarch) modify_ldt: EPERM (+ ext: subpage_prot, switch_endian, vm86: ENOSYS), and
//!               calls of a foreign ABI kill the process; with multiarch the 32-bit ABIs of
//!               the host are accepted
//! ```
//!
//! Names that the host's architecture does not have (`chown32`, `vm86`, …) are skipped.

use super::{Action, Arch, ArgCmp, ArgCmpOp, Filter};

/// hakurei's `FilterPreset`: which parts of the preset filter are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Presets(u8);

impl Presets {
    /// hakurei's project-specific extensions (`PresetExt`).
    pub const EXT: Presets = Presets(1);
    /// Deny namespace setup (`PresetDenyNS`).
    pub const DENY_NS: Presets = Presets(2);
    /// Deny faking terminal input (`PresetDenyTTY`).
    pub const DENY_TTY: Presets = Presets(4);
    /// Deny development calls: perf, ptrace, personality (`PresetDenyDevel`).
    pub const DENY_DEVEL: Presets = Presets(8);
    /// Allow the 32-bit personality instead of the native one (`PresetLinux32`).
    pub const LINUX32: Presets = Presets(16);
    /// `EXT | DENY_NS | DENY_TTY | DENY_DEVEL` (`PresetStrict`).
    pub const STRICT: Presets = Presets(1 | 2 | 4 | 8);

    /// Whether every part of `other` is on.
    pub fn contains(self, other: Presets) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list of `ext`, `deny-ns`, `deny-tty`, `deny-devel`,
    /// `linux32`, `strict` (the dashes are optional).
    pub fn from_names(names: &str) -> Option<Presets> {
        let mut p = 0;
        for n in names.split(',').filter(|n| !n.is_empty()) {
            p |= match n.replace('-', "").as_str() {
                "ext" => 1,
                "denyns" => 2,
                "denytty" => 4,
                "denydevel" => 8,
                "linux32" => 16,
                "strict" => 15,
                _ => return None,
            };
        }
        Some(Presets(p))
    }

    /// The names of the parts that are on.
    pub fn names(self) -> Vec<&'static str> {
        [
            (1, "ext"),
            (2, "deny-ns"),
            (4, "deny-tty"),
            (8, "deny-devel"),
            (16, "linux32"),
        ]
        .iter()
        .filter(|(b, _)| self.0 & b != 0)
        .map(|(_, n)| *n)
        .collect()
    }
}

impl std::ops::BitOr for Presets {
    type Output = Presets;
    fn bitor(self, rhs: Presets) -> Presets {
        Presets(self.0 | rhs.0)
    }
}

/// hakurei's seccomp export flags (`AllowMultiarch`, `AllowCAN`, `AllowBluetooth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PresetFlags(u8);

impl PresetFlags {
    /// Accept the 32-bit ABIs of the host (i386 and x32 on x86-64, arm on aarch64) and
    /// `modify_ldt`.
    pub const MULTIARCH: PresetFlags = PresetFlags(1);
    /// Allow `AF_CAN` sockets.
    pub const CAN: PresetFlags = PresetFlags(2);
    /// Allow `AF_BLUETOOTH` sockets.
    pub const BLUETOOTH: PresetFlags = PresetFlags(4);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: PresetFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list of `multiarch`, `can`, `bluetooth`.
    pub fn from_names(names: &str) -> Option<PresetFlags> {
        let mut f = 0;
        for n in names.split(',').filter(|n| !n.is_empty()) {
            f |= match n {
                "multiarch" => 1,
                "can" => 2,
                "bluetooth" => 4,
                _ => return None,
            };
        }
        Some(PresetFlags(f))
    }
}

impl std::ops::BitOr for PresetFlags {
    type Output = PresetFlags;
    fn bitor(self, rhs: PresetFlags) -> PresetFlags {
        PresetFlags(self.0 | rhs.0)
    }
}

const COMMON: &[&str] = &[
    "syslog",
    "uselib",
    "acct",
    "quotactl",
    "add_key",
    "keyctl",
    "request_key",
    "move_pages",
    "mbind",
    "get_mempolicy",
    "set_mempolicy",
    "migrate_pages",
];

const COMMON_EXT: &[&str] = &[
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_settime",
    "clock_settime64",
    "settimeofday",
    "delete_module",
    "finit_module",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "reboot",
    "swapoff",
    "swapon",
];

const NAMESPACE_EPERM: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
];

const NAMESPACE_ENOSYS: &[&str] = &[
    "clone3",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
];

const NAMESPACE_EXT: &[&str] = &[
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setuid",
    "setuid32",
];

const EMU_EXT: &[&str] = &["subpage_prot", "switch_endian", "vm86", "vm86old"];

/// Socket families allowed without flags: `AF_UNSPEC`, `AF_UNIX`, `AF_INET`, `AF_INET6`,
/// `AF_NETLINK`.
const FAMILIES: &[u64] = &[0, 1, 2, 10, 16];
const AF_CAN: u64 = 29;
const AF_BLUETOOTH: u64 = 31;
/// `AF_MAX` of current kernels: families from here on do not exist yet.
const AF_MAX: u64 = 46;

const PER_LINUX: u64 = 0;
const PER_LINUX32: u64 = 8;

impl Filter {
    /// hakurei's preset filter for `presets` and `flags`: every call is allowed except those
    /// the parts deny (see the module's table), most with `EPERM`, so programs see an ordinary
    /// refusal. It is a denylist like hakurei's: [`Profile::Podman`](super::Profile::Podman) is
    /// the stricter allowlist. hakurei adds [`Presets::DENY_TTY`] itself unless the session is
    /// retained: here it is named ([`Presets::STRICT`] has it; `hatchery run --seccomp-preset`
    /// adds it unless `--retain-session`).
    pub fn from_presets(presets: Presets, flags: PresetFlags) -> Filter {
        let eperm = Action::Errno(libc::EPERM);
        let enosys = Action::Errno(libc::ENOSYS);
        let mut f = Filter::new(Action::Allow);
        let deny = |f: &mut Filter, names: &[&str], action: Action| {
            for n in names {
                f.add_rule(action, n);
            }
        };
        deny(&mut f, COMMON, eperm);
        let mut allowed: Vec<u64> = FAMILIES.to_vec();
        if flags.contains(PresetFlags::CAN) {
            allowed.push(AF_CAN);
        }
        if flags.contains(PresetFlags::BLUETOOTH) {
            allowed.push(AF_BLUETOOTH);
        }
        let no_family = Action::Errno(libc::EAFNOSUPPORT);
        for family in (0..AF_MAX).filter(|fam| !allowed.contains(fam)) {
            f.add_rule_conditional(
                no_family,
                "socket",
                &[ArgCmp::new(0, ArgCmpOp::Eq, family, 0)],
            );
        }
        f.add_rule_conditional(
            no_family,
            "socket",
            &[ArgCmp::new(0, ArgCmpOp::Ge, AF_MAX, 0)],
        );
        if presets.contains(Presets::DENY_NS) {
            deny(&mut f, NAMESPACE_EPERM, eperm);
            deny(&mut f, NAMESPACE_ENOSYS, enosys);
            f.add_rule_conditional(
                eperm,
                "clone",
                &[ArgCmp::new(
                    0,
                    ArgCmpOp::MaskedEq,
                    libc::CLONE_NEWUSER as u64,
                    libc::CLONE_NEWUSER as u64,
                )],
            );
        }
        if presets.contains(Presets::DENY_TTY) {
            f.add_ioctl_rule(eperm, libc::TIOCSTI as u32);
            f.add_ioctl_rule(eperm, libc::TIOCLINUX as u32);
        }
        if presets.contains(Presets::DENY_DEVEL) {
            deny(&mut f, &["perf_event_open", "ptrace"], eperm);
            let persona = if presets.contains(Presets::LINUX32) {
                PER_LINUX32
            } else {
                PER_LINUX
            };
            f.add_rule_conditional(
                eperm,
                "personality",
                &[ArgCmp::new(0, ArgCmpOp::Ne, persona, 0)],
            );
        }
        if !flags.contains(PresetFlags::MULTIARCH) {
            f.add_rule(eperm, "modify_ldt");
        } else {
            for arch in multiarch() {
                f.add_arch(arch);
            }
        }
        if presets.contains(Presets::EXT) {
            deny(&mut f, COMMON_EXT, eperm);
            if presets.contains(Presets::DENY_NS) {
                deny(&mut f, NAMESPACE_EXT, eperm);
            }
            if !flags.contains(PresetFlags::MULTIARCH) {
                deny(&mut f, EMU_EXT, enosys);
            }
        }
        let mut name = presets.names().join(",");
        if name.is_empty() {
            name = "none".into();
        }
        f.lenient().named(format!("hakurei:{name}"))
    }
}

/// The 32-bit ABIs of the host's architecture.
fn multiarch() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::X86, Arch::X32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::Arm]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_every_combination_compiles() {
        assert_eq!(Presets::from_names("strict"), Some(Presets::STRICT));
        assert_eq!(
            Presets::from_names("ext,deny-ns,denytty,deny-devel"),
            Some(Presets::STRICT)
        );
        assert_eq!(Presets::from_names("bogus"), None);
        assert_eq!(
            PresetFlags::from_names("multiarch,can"),
            Some(PresetFlags::MULTIARCH | PresetFlags::CAN)
        );
        for p in 0..32u8 {
            for fl in 0..8u8 {
                let f = Filter::from_presets(Presets(p), PresetFlags(fl));
                assert!(f.compile(false).is_ok(), "presets {p:#x} flags {fl:#x}");
            }
        }
        assert_eq!(
            Filter::from_presets(Presets::STRICT, PresetFlags::default()).name(),
            "hakurei:ext,deny-ns,deny-tty,deny-devel"
        );
    }
}
