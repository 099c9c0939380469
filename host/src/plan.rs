//! The setup plan: a [`Container`] turned into the [`SetupPlan`] its shim builds the container
//! from. One place for the one-shot [`Command`](crate::Command) and the pool's zygotes; only the
//! shim's mode differs.
//!
//! ```text
//!  Container (plain data)                     Plan
//!   namespaces ─────────────────────────────▶ clone_flags; hostname (UTS only), loopback (net,
//!                                              when asked)
//!   rootdir, mounts, files, dirs, links ────▶ setup.root, setup.mounts   + blob: file contents
//!                                                                         in one sealed memfd,
//!                                                                         sent at blob_index
//!   rlimits (+ RLIMIT_AS/NPROC without a cgroup) ▶ setup.rlimits
//!   uid/gid maps, user ─────────────────────▶ setup.ids (setgroups filled in by spawn)
//!   seccomp filter (compiled here, libseccomp) ▶ setup.seccomp: BPF words
//!   landlock ruleset + mirrored mounts ─────▶ setup.landlock
//!   caller's ShimMode (OneShot | Zygote | Helper) ▶ setup.mode
//! ```
//!
//! Building a plan checks the container ([`Container::validate`]) and compiles its seccomp
//! filter; it starts nothing. Cost: the compile (tens of microseconds) and, when the container
//! places files, one sealed memfd.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use hatchery_protocol::{
    Bytes, DaemonSpec, ExecSpec, IdPlan, MountOp, OverlayUpper, Resource, Rlimit, RootPlan,
    SeccompPlan, SetupPlan, ShimMode, DEFAULT_TMPFS_BYTES,
};

use crate::cgroup::Mechanism;
use crate::container::{Container, FsEntry, MountEntry, Namespace};
use crate::error::{Error, Result};

/// A container's setup plan with what is sent beside it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The plan; `blob` is the index the blob fd is sent at, when there is one.
    pub setup: SetupPlan,
    /// File contents placed in the container (a sealed memfd), sent with the plan.
    pub blob: Option<OwnedFd>,
    /// `CLONE_NEW*` flags of the container's namespaces.
    pub clone_flags: libc::c_int,
}

/// The plan of `container` for a shim in `mode`. `blob_index` is where the caller sends the
/// blob among the plan's fds (after those `mode` assigns); it is recorded only when the
/// container places files.
pub(crate) fn build(container: &Container, mode: ShimMode, blob_index: u8) -> Result<Plan> {
    container.validate()?;
    for ctl in [
        crate::Runctl::GetProcPidSmapsRollup,
        crate::Runctl::GetProcPidStatus,
    ] {
        if container.runctl.contains(&ctl) {
            return Err(Error::InvalidConfig {
                what: "runctl",
                value: format!("{ctl:?}"),
                reason: "not provided by hatchery: ExitStatus::rusage has the command's usage",
            });
        }
    }
    if container.runctl.contains(&crate::Runctl::AllowNewPrivs)
        && (container.seccomp.is_some() || container.landlock.is_some())
    {
        // Without no_new_privs the kernel installs a seccomp filter or a landlock domain only
        // for a process holding CAP_SYS_ADMIN, and hatchery's commands hold no capability.
        return Err(Error::InvalidConfig {
            what: "runctl",
            value: "AllowNewPrivs".into(),
            reason: "new privileges need a container without seccomp and landlock \
                     (e.g. --seccomp unconfined): without no_new_privs only a process holding \
                     CAP_SYS_ADMIN may install them, and commands hold no capability",
        });
    }
    let cgroups = *crate::cgroup::mechanism() != Mechanism::Rlimits;
    let (setup, blob) = assemble(container, mode, blob_index, cgroups)?;
    let blob = if blob.is_empty() {
        None
    } else {
        Some(
            crate::wire::sealed_memfd("hatchery-files", &blob)
                .map_err(Error::io("sealed memfd"))?,
        )
    };
    Ok(Plan {
        setup,
        blob,
        clone_flags: container
            .namespaces()
            .fold(0, |acc, ns| acc | ns.clone_flag()),
    })
}

/// The pure part of [`build`]: the plan and the blob's bytes. `cgroups`: a cgroup enforces the
/// memory and pids limits (else they become rlimits).
fn assemble(
    c: &Container,
    mode: ShimMode,
    blob_index: u8,
    cgroups: bool,
) -> Result<(SetupPlan, Vec<u8>)> {
    let (root, mounts, blob) = tree(c);
    let plan = SetupPlan {
        hostname: c
            .namespaces
            .contains(&Namespace::Uts)
            .then(|| c.hostname.clone())
            .flatten(),
        root,
        mounts,
        rlimits: rlimits(c, cgroups),
        ids: IdPlan {
            uid: c.uid_maps[0].container_id,
            gid: c.gid_maps[0].container_id,
            setgroups_allowed: false,
            user: c.user.clone(),
        },
        blob: (!blob.is_empty()).then_some(blob_index),
        join_cgroups: 0,
        cgroup_namespace: c.namespaces.contains(&Namespace::Cgroup),
        loopback: c.namespaces.contains(&Namespace::Network) && c.loopback,
        own_network: c.namespaces.contains(&Namespace::Network) && c.network.is_none(),
        seccomp: seccomp(c)?,
        landlock: c.landlock_plan(),
        no_new_privs: !c.runctl.contains(&crate::Runctl::AllowNewPrivs),
        mode,
        daemons: daemons(c),
        params: c.process_params(),
    };
    Ok((plan, blob))
}

/// The rlimits: the explicit ones, plus `RLIMIT_AS`/`RLIMIT_NPROC` for memory and pids limits
/// when no cgroup enforces them (explicit rlimits win).
fn rlimits(c: &Container, cgroups: bool) -> Vec<Rlimit> {
    let mut out: Vec<Rlimit> = c.rlimits.values().copied().collect();
    if !cgroups {
        for (res, value) in [
            (Resource::As, c.resources.memory.or(c.resources.memory_swap)),
            (Resource::Nproc, c.resources.pids),
        ] {
            if let Some(v) = value {
                if !out.iter().any(|r| r.resource == res) {
                    out.push(Rlimit {
                        resource: res,
                        soft: v,
                        hard: v,
                    });
                }
            }
        }
    }
    out
}

/// The seccomp filter, compiled for a supervised command (a trusted shim watches it, so
/// notifying rules stay notifications).
fn seccomp(c: &Container) -> Result<Option<SeccompPlan>> {
    use crate::denial::Recording;
    let fail = |f: &crate::seccomp::Filter| {
        let profile = f.name().to_string();
        move |source| Error::Seccomp { profile, source }
    };
    if c.recording == Recording::Learn {
        // Allow and record: every call notifies, the shim lets each run.
        let f = crate::seccomp::Filter::new(crate::seccomp::Action::Notify).named("learn");
        let p = f.compile(false).map_err(fail(&f))?;
        return Ok(Some(SeccompPlan {
            filter: p.words.to_vec(),
            notify: true,
            notify_exec: true,
            handover: p.handover,
            explain: hatchery_protocol::Explain::Learn,
        }));
    }
    // Explaining without a filter of the container's own: an allow-all one, so the shim still
    // sees the calls landlock may refuse (not when new privileges are allowed: a filter needs
    // no_new_privs).
    let allow_all;
    let f = match &c.seccomp {
        Some(f) => f,
        None if c.recording == Recording::Explain
            && !c.runctl.contains(&crate::Runctl::AllowNewPrivs) =>
        {
            allow_all = crate::seccomp::Filter::new(crate::seccomp::Action::Allow).named("none");
            &allow_all
        }
        None => return Ok(None),
    };
    if c.recording == Recording::Explain {
        let (installed, original) = f.compile_explaining().map_err(fail(f))?;
        return Ok(Some(SeccompPlan {
            filter: installed.words.to_vec(),
            notify: true,
            notify_exec: true,
            handover: installed.handover,
            explain: hatchery_protocol::Explain::Explain {
                original: original.words.to_vec(),
            },
        }));
    }
    let p = f.compile(false).map_err(fail(f))?;
    Ok(Some(SeccompPlan {
        filter: p.words.to_vec(),
        notify: p.notify,
        notify_exec: p.notify_exec,
        handover: p.handover,
        explain: hatchery_protocol::Explain::Off,
    }))
}

/// The root, the mounts and the file-system operations (mounts first, parents before
/// children, then files, directories and links in the order given), plus the blob of file
/// contents the `File` operations point into.
fn tree(c: &Container) -> (RootPlan, Vec<MountOp>, Vec<u8>) {
    let root = match &c.rootdir {
        None => RootPlan::Tmpfs,
        Some((p, writable)) => RootPlan::HostDir {
            path: Bytes(p.as_os_str().as_bytes().to_vec()),
            writable: *writable,
        },
    };
    let mut ops = Vec::new();
    for (target, m) in &c.mounts {
        let target = Bytes::from(target.as_str());
        ops.push(match m {
            MountEntry::Bind { source, writable } => MountOp::Bind {
                source: Bytes(source.as_os_str().as_bytes().to_vec()),
                target,
                writable: *writable,
                device: false,
                optional: false,
            },
            MountEntry::Tmpfs { size, read_only } => MountOp::Tmpfs {
                target,
                size_bytes: Some(size.unwrap_or(DEFAULT_TMPFS_BYTES)),
                nr_inodes: None,
                mode: 0o1777,
                read_only: *read_only,
            },
            MountEntry::Proc => MountOp::Proc { target },
            MountEntry::Devfs => MountOp::Devfs {
                target,
                mqueue: false,
                // hakoniwa's devfs: writable in a one-shot container (the shim keeps a
                // zygote's read-only).
                writable: true,
            },
            MountEntry::Overlay { lower, upper } => MountOp::Overlay {
                target,
                lower: lower
                    .iter()
                    .map(|p| Bytes(p.as_os_str().as_bytes().to_vec()))
                    .collect(),
                upper: match upper {
                    None => OverlayUpper::ReadOnly,
                    Some((u, w)) => OverlayUpper::Host {
                        upper: Bytes(u.as_os_str().as_bytes().to_vec()),
                        work: Bytes(w.as_os_str().as_bytes().to_vec()),
                    },
                },
            },
        });
    }
    let mut blob = Vec::new();
    hakurei_ops(c, &mut ops, &mut blob);
    for f in &c.fs {
        ops.push(match f {
            FsEntry::Dir { path, mode } => MountOp::Dir {
                path: path.as_str().into(),
                mode: *mode,
            },
            FsEntry::File {
                path,
                contents,
                mode,
            } => {
                let offset = blob.len() as u64;
                blob.extend_from_slice(contents);
                MountOp::File {
                    path: path.as_str().into(),
                    mode: *mode,
                    offset,
                    len: contents.len() as u64,
                }
            }
            FsEntry::Symlink { original, link } => MountOp::Symlink {
                original: original.as_str().into(),
                link: link.as_str().into(),
            },
        });
    }
    (root, ops, blob)
}

/// hakurei's ops (after the mounts, before hakoniwa's files), in the order given; placed files
/// go into the blob like [`FsEntry::File`]s.
fn hakurei_ops(c: &Container, out: &mut Vec<MountOp>, blob: &mut Vec<u8>) {
    use crate::ops::{BindFlags, Op, Upper};
    let bytes = |p: &std::path::Path| Bytes(p.as_os_str().as_bytes().to_vec());
    for op in c.flat_ops() {
        out.push(match op {
            Op::Overlay {
                target,
                lower,
                upper,
            } => MountOp::Overlay {
                target: target.as_str().into(),
                lower: lower.iter().map(|l| bytes(l)).collect(),
                upper: match upper {
                    Upper::ReadOnly => OverlayUpper::ReadOnly,
                    Upper::Ephemeral => OverlayUpper::Ephemeral {
                        size_bytes: crate::ops::EPHEMERAL_OVERLAY_BYTES,
                    },
                    Upper::Host { upper, work } => OverlayUpper::Host {
                        upper: bytes(upper),
                        work: bytes(work),
                    },
                },
            },
            Op::Tmpfs {
                target,
                size,
                perm,
                read_only,
            } => MountOp::Tmpfs {
                target: target.as_str().into(),
                size_bytes: Some(*size),
                nr_inodes: None,
                mode: *perm,
                read_only: *read_only,
            },
            Op::Mkdir { path, perm } => MountOp::Dir {
                path: path.as_str().into(),
                mode: *perm,
            },
            Op::Place { path, data } => {
                let offset = blob.len() as u64;
                blob.extend_from_slice(data);
                MountOp::File {
                    path: path.as_str().into(),
                    mode: 0o444,
                    offset,
                    len: data.len() as u64,
                }
            }
            Op::Link { target, linkname } => MountOp::Symlink {
                original: linkname.as_str().into(),
                link: target.as_str().into(),
            },
            Op::Remount { target, flags } => MountOp::Remount {
                target: target.as_str().into(),
                attrs: flags.bits(),
            },
            Op::Bind {
                source,
                target,
                flags,
            } => MountOp::Bind {
                source: bytes(source),
                target: target.as_str().into(),
                writable: flags.contains(BindFlags::WRITABLE),
                device: flags.contains(BindFlags::DEVICE),
                optional: flags.contains(BindFlags::OPTIONAL),
            },
            Op::Dev {
                target,
                mqueue,
                writable,
            } => MountOp::Devfs {
                target: target.as_str().into(),
                mqueue: *mqueue,
                writable: *writable,
            },
            // Expanded by flat_ops; started after the tree is built.
            Op::AutoRoot { .. } | Op::AutoEtc { .. } | Op::Daemon { .. } => continue,
        });
    }
}

/// The daemons, started in order before the command.
fn daemons(c: &Container) -> Vec<DaemonSpec> {
    c.daemons()
        .map(|(ready, program, args, timeout)| DaemonSpec {
            exec: ExecSpec {
                program: program.into(),
                argv: std::iter::once(program)
                    .chain(args.iter().map(String::as_str))
                    .map(Bytes::from)
                    .collect(),
                env: Vec::new(),
                cwd: None,
            },
            ready: ready.into(),
            timeout_us: timeout.as_micros().clamp(1, u64::MAX as u128) as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::{CompatMode, Ruleset};

    fn zygote() -> ShimMode {
        ShimMode::Zygote { max_concurrent: 1 }
    }

    #[test]
    fn mounts_are_ordered_parents_first_and_files_after() {
        let mut c = Container::empty();
        c.file("/etc/x", "hi")
            .tmpfsmount("/tmp/a")
            .bindmount_ro("/usr", "/usr")
            .tmpfsmount("/tmp");
        let (_, ops, blob) = tree(&c);
        let names: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        assert!(names[0].contains("\"/tmp\""), "{names:?}");
        assert!(names[1].contains("\"/tmp/a\""));
        assert!(names[2].contains("\"/usr\""));
        assert!(names[3].starts_with("File"));
        assert_eq!(blob, b"hi");
    }

    #[test]
    fn the_blob_index_is_recorded_only_with_files() {
        let mut c = Container::new();
        let (plan, blob) = assemble(&c, zygote(), 5, true).unwrap();
        assert_eq!((plan.blob, blob.len()), (None, 0));
        c.file("/etc/a", "ab").file("/etc/b", "cde");
        let (plan, blob) = assemble(&c, zygote(), 5, true).unwrap();
        assert_eq!(plan.blob, Some(5));
        assert_eq!(blob, b"abcde");
        let offsets: Vec<(u64, u64)> = plan
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::File { offset, len, .. } => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        assert_eq!(offsets, [(0, 2), (2, 3)]);
    }

    #[test]
    fn namespaces_decide_hostname_loopback_and_clone_flags() {
        let mut c = Container::new();
        let (plan, _) = assemble(&c, zygote(), 0, true).unwrap();
        assert_eq!(plan.hostname, None);
        assert!(!plan.loopback);
        // As in hakoniwa, a network namespace of its own has its loopback down unless asked.
        c.hostname("box").unshare(Namespace::Network);
        let (plan, _) = assemble(&c, zygote(), 0, true).unwrap();
        assert_eq!(plan.hostname.as_deref(), Some("box"));
        assert!(!plan.loopback);
        c.loopback(true);
        let (plan, _) = assemble(&c, zygote(), 0, true).unwrap();
        assert!(plan.loopback);
        let flags = build(&c, zygote(), 0).unwrap().clone_flags;
        for f in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(flags & f, 0, "{f:#x}");
        }
        assert_eq!(flags & libc::CLONE_NEWIPC, 0);
    }

    #[test]
    fn limits_become_rlimits_only_without_a_cgroup() {
        let mut c = Container::new();
        c.cgroup_memory(1 << 30)
            .cgroup_pids_limit(64)
            .setrlimit(Resource::Nproc, 10, 10);
        let (with_cgroup, _) = assemble(&c, zygote(), 0, true).unwrap();
        assert_eq!(with_cgroup.rlimits.len(), 1);
        let (without, _) = assemble(&c, zygote(), 0, false).unwrap();
        let get = |r: Resource| without.rlimits.iter().find(|l| l.resource == r).copied();
        assert_eq!(get(Resource::As).map(|l| l.hard), Some(1 << 30));
        // The explicit rlimit wins over the fallback.
        assert_eq!(get(Resource::Nproc).map(|l| l.hard), Some(10));
    }

    #[test]
    fn the_mode_ids_and_confinement_are_carried() {
        let mut c = Container::new();
        c.uidmap(1000).gidmap(1000);
        let mut r = Ruleset::new();
        r.restrict_all(CompatMode::BestEffort);
        c.landlock_ruleset(r);
        let (plan, _) = assemble(&c, zygote(), 0, true).unwrap();
        assert_eq!((plan.ids.uid, plan.ids.gid), (1000, 1000));
        assert!(!plan.ids.setgroups_allowed);
        assert!(plan.seccomp.is_none());
        assert!(plan.landlock.is_some_and(|l| !l.fs_rules.is_empty()));
        assert!(matches!(plan.mode, ShimMode::Zygote { max_concurrent: 1 }));
    }

    #[test]
    fn hakurei_ops_follow_the_mounts_in_order_and_precede_the_files() {
        use crate::ops::{BindFlags, RemountFlags};
        let mut c = Container::empty();
        c.file("/etc/x", "hi")
            .remount("/data", RemountFlags::RDONLY)
            .bindmount_ro("/usr", "/usr")
            .place("/p", "placed")
            .bind_with("/srv", "/data", BindFlags::WRITABLE | BindFlags::OPTIONAL)
            .overlay_ephemeral("/o", &["/usr"])
            .daemon("/run/ready", "/bin/d", &["-x"])
            .scheduler(crate::ops::SchedPolicy::Idle, 0);
        let (plan, blob) = assemble(&c, zygote(), 0, true).unwrap();
        let kinds: Vec<String> = plan
            .mounts
            .iter()
            .map(|m| {
                format!("{m:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            ["Bind", "Remount", "File", "Bind", "Overlay", "File"],
            "{:?}",
            plan.mounts
        );
        assert!(matches!(
            &plan.mounts[3],
            MountOp::Bind {
                writable: true,
                optional: true,
                device: false,
                ..
            }
        ));
        assert!(matches!(
            &plan.mounts[2],
            MountOp::File {
                mode: 0o444,
                offset: 0,
                len: 6,
                ..
            }
        ));
        assert_eq!(blob, b"placedhi");
        assert_eq!(plan.daemons.len(), 1);
        assert_eq!(plan.daemons[0].exec.argv.len(), 2);
        assert_eq!(
            plan.params.scheduler,
            Some((crate::ops::SchedPolicy::Idle, 0))
        );
    }

    #[test]
    fn an_invalid_container_has_no_plan() {
        let mut c = Container::new();
        c.bindmount_ro("/usr", "usr");
        assert!(matches!(
            build(&c, zygote(), 0),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
