//! [`Command`]: a program to run in a [`Container`], with the shape of `std::process::Command`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hatchery_protocol::{FdAssignment, ShimMode};

use crate::child::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus, Output};
use crate::container::Container;
use crate::error::{Error, Result};
use crate::plan;
use crate::spawn::{self, StartSpec};

/// Where one of the command's standard streams goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stdio {
    /// The host process's own stream.
    Inherit,
    /// A pipe; the host end is on [`Child`].
    Piped,
    /// `/dev/null`.
    Null,
    /// Any fd (a file, a socket, a pipe end).
    Fd(OwnedFd),
}

impl Stdio {
    /// [`Stdio::Inherit`].
    pub fn inherit() -> Stdio {
        Stdio::Inherit
    }
    /// [`Stdio::Piped`].
    pub fn piped() -> Stdio {
        Stdio::Piped
    }
    /// [`Stdio::Null`].
    pub fn null() -> Stdio {
        Stdio::Null
    }
}

impl<T: Into<OwnedFd>> From<T> for Stdio {
    fn from(fd: T) -> Stdio {
        Stdio::Fd(fd.into())
    }
}

/// A wall-time limit for [`Command::wait_timeout`]: a [`Duration`], or whole seconds as in
/// hakoniwa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Timeout {
        Timeout(d)
    }
}

impl From<u64> for Timeout {
    /// Seconds.
    fn from(secs: u64) -> Timeout {
        Timeout(Duration::from_secs(secs))
    }
}

/// A program to run in a container. Build it with [`Container::command`].
///
/// The environment starts empty: nothing of the host's leaks in unless set with
/// [`env`](Command::env).
#[derive(Debug)]
pub struct Command {
    container: Container,
    program: OsString,
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    extra_fds: Vec<(OwnedFd, i32)>,
    timeout: Option<Duration>,
}

/// The ends a spawn keeps or hands over.
struct StdioSetup {
    child_fds: Vec<OwnedFd>,
    host: (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>),
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe2")(e.into()))
}

fn dev_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(Error::io("open /dev/null"))
}

impl Container {
    /// A command that runs `program` in this container. Without a `/`, `program` is searched
    /// on the command's `PATH` (or the default PATH) inside the container.
    pub fn command(&self, program: &str) -> Command {
        Command::new(self.clone(), program)
    }
}

impl Command {
    fn new(container: Container, program: &str) -> Command {
        Command {
            container,
            program: OsString::from(program),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
            extra_fds: Vec::new(),
            timeout: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_os_string(), value.as_ref().to_os_string());
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.remove(key.as_ref());
        self
    }

    /// Removes every environment variable.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env.clear();
        self
    }

    /// Sets the working directory inside the container (default `/`).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets stdin (default: inherit for `spawn`/`status`, null for `output`).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdin = Some(cfg.into());
        self
    }

    /// Sets stdout (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdout = Some(cfg.into());
        self
    }

    /// Sets stderr (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stderr = Some(cfg.into());
        self
    }

    /// Passes `fd` to the command as fd number `target` (3 or above; use
    /// [`stdin`](Command::stdin) and friends for 0–2). Every other fd of the host stays out.
    pub fn fd(&mut self, fd: impl Into<OwnedFd>, target: i32) -> &mut Self {
        self.extra_fds.push((fd.into(), target));
        self
    }

    /// Kills the whole container once `timeout` has passed since the spawn (sub-second
    /// resolution); the status then says [`timed_out`](ExitStatus::timed_out). Takes a
    /// [`Duration`] or, as in hakoniwa, a number of seconds (`u64`).
    pub fn wait_timeout(&mut self, timeout: impl Into<Timeout>) -> &mut Self {
        self.timeout = Some(timeout.into().0);
        self
    }

    /// The program, as given.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments (lossily as UTF-8, as hakoniwa's `get_args`).
    pub fn get_args(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The environment set for the command (it starts empty), lossily as UTF-8.
    pub fn get_envs(&self) -> std::collections::HashMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    /// The working directory inside the container, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The setup log hakoniwa prints at debug level: the container's
    /// [`setup_log`](Container::setup_log), then `Env:` lines, `Execve: "program", [args]`,
    /// a wall-time line when set, and the separator line. With `trace`, the rules too.
    pub fn setup_log(&self, trace: bool) -> Vec<String> {
        let mut out = self.container.setup_log(trace);
        for (k, v) in &self.env {
            out.push(format!(
                "Env: {}={}",
                k.to_string_lossy(),
                v.to_string_lossy()
            ));
        }
        if let Some(t) = self.timeout {
            out.push(format!("Walltime: {t:?}"));
        }
        out.push(format!(
            "Execve: {:?}, {:?}",
            self.program.to_string_lossy(),
            self.get_args()
        ));
        out.push("================================".to_string());
        out
    }

    /// The container it runs in.
    pub fn get_container(&self) -> &Container {
        &self.container
    }

    fn stdio_fd<'a>(
        cfg: Option<&'a Stdio>,
        default: &'a Stdio,
        host_fd: i32,
        setup: &mut StdioSetup,
        writes: bool,
    ) -> Result<Option<BorrowedFd<'a>>> {
        let cfg = cfg.unwrap_or(default);
        match cfg {
            Stdio::Fd(fd) => Ok(Some(fd.as_fd())),
            Stdio::Inherit => {
                #[allow(unsafe_code)]
                // SAFETY: only used if fcntl says the fd is open; BorrowedFd lives as long as
                // the host's own stdio, which is never closed by this crate.
                let fd = unsafe { BorrowedFd::borrow_raw(host_fd) };
                if nix::fcntl::fcntl(host_fd, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
                    Ok(Some(fd))
                } else {
                    setup.child_fds.push(dev_null()?);
                    Ok(None)
                }
            }
            Stdio::Null => {
                setup.child_fds.push(dev_null()?);
                Ok(None)
            }
            Stdio::Piped => {
                let (r, w) = pipe()?;
                let (host, child) = if writes { (w, r) } else { (r, w) };
                match host_fd {
                    0 => setup.host.0 = Some(ChildStdin(host.into())),
                    1 => setup.host.1 = Some(ChildStdout(host.into())),
                    _ => setup.host.2 = Some(ChildStderr(host.into())),
                }
                setup.child_fds.push(child);
                Ok(None)
            }
        }
    }

    fn spawn_with_defaults(&mut self, default_in: Stdio, default_out: Stdio) -> Result<Child> {
        let t_plan = Instant::now();
        // The command's fds are sent in this order: stdin, stdout, stderr, the extra fds, then
        // the blob of placed files.
        let targets: Vec<i32> = [0, 1, 2]
            .into_iter()
            .chain(self.extra_fds.iter().map(|(_, t)| *t))
            .collect();
        let assignments: Vec<FdAssignment> = targets
            .iter()
            .enumerate()
            .map(|(index, target)| FdAssignment {
                index: index as u8,
                target: *target,
                name: None,
            })
            .collect();
        let command = crate::wire::exec_spec(
            &self.program,
            &self.args,
            self.env.iter(),
            self.cwd.as_deref(),
        );
        let blob_index = assignments.len() as u8;
        let plan = plan::build(
            &self.container,
            ShimMode::OneShot {
                command,
                fds: assignments,
            },
            blob_index,
        )?;
        for target in &targets[3..] {
            if *target < 3 {
                return Err(Error::InvalidConfig {
                    what: "fd target",
                    value: target.to_string(),
                    reason: "0-2 are set with stdin/stdout/stderr",
                });
            }
        }
        const _: () = assert!(
            hatchery_protocol::frame::MAX_PLAN_FDS == 64,
            "the message below"
        );
        let fd_count = targets.len() + usize::from(plan.blob.is_some());
        if fd_count > hatchery_protocol::frame::MAX_PLAN_FDS {
            return Err(Error::InvalidConfig {
                what: "number of passed fds",
                value: fd_count.to_string(),
                reason: "at most 64 fds in all: stdin, stdout, stderr, the extra fds and the files' blob",
            });
        }
        let started = Instant::now();
        let mut setup = StdioSetup {
            child_fds: Vec::new(),
            host: (None, None, None),
        };
        // Borrowed fds to send, in order; `None` means "the next of setup.child_fds".
        let mut order: Vec<Option<BorrowedFd<'_>>> = Vec::new();
        let default_err = match default_out {
            Stdio::Piped => Stdio::Piped,
            _ => Stdio::Inherit,
        };
        order.push(Self::stdio_fd(
            self.stdin.as_ref(),
            &default_in,
            0,
            &mut setup,
            true,
        )?);
        order.push(Self::stdio_fd(
            self.stdout.as_ref(),
            &default_out,
            1,
            &mut setup,
            false,
        )?);
        order.push(Self::stdio_fd(
            self.stderr.as_ref(),
            &default_err,
            2,
            &mut setup,
            false,
        )?);
        for (fd, _) in &self.extra_fds {
            order.push(Some(fd.as_fd()));
        }
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(fd_count);
        let mut owned = setup.child_fds.iter();
        for (fd, target) in order.iter().zip(&targets) {
            let fd = match fd {
                Some(b) => *b,
                None => owned
                    .next()
                    .map(|o| o.as_fd())
                    .ok_or(Error::InvalidConfig {
                        what: "stdio",
                        value: target.to_string(),
                        reason: "internal: missing fd",
                    })?,
            };
            fds.push(fd);
        }
        fds.extend(plan.blob.as_ref().map(|b| b.as_fd()));

        let c = &self.container;
        let t_start = Instant::now();
        let network = c
            .network
            .as_ref()
            .filter(|_| c.namespaces.contains(&crate::Namespace::Network));
        let mut network_log = None;
        let given_socket = fds.iter().any(|fd| crate::netns::is_socket(*fd));
        let ignore_cgroup_failure = c.runctl.contains(&crate::Runctl::IgnoreCgroupSetupFailed);
        // A thread that runs one-shot containers one after another gets the next one's shim
        // started ahead, while this one builds its root (see `spare`): not in a process that runs
        // one container and exits, nor for containers whose namespaces the host configures
        // (pasta) or that join a given cgroup.
        let shape = (!crate::reaper::tears_down_on_caller()
            && crate::spare::enabled()
            && network.is_none()
            && c.existing_cgroup().is_none())
        .then(|| crate::spare::Shape {
            clone_flags: plan.clone_flags,
            uid_maps: c.uid_maps.clone(),
            gid_maps: c.gid_maps.clone(),
            limits: c.resources,
            ignore_cgroup_failure,
            netns: crate::netns::wanted(plan.clone_flags, &plan.setup),
        });
        let spare = shape.as_ref().and_then(crate::spare::take);
        let ahead = spare.is_some();
        let mut shim = match spare {
            Some(mut started) => {
                if let Some(lease) = started.netns_mut() {
                    lease.expose_to(&plan.setup);
                }
                spawn::hand_plan(started, plan.setup, fds, None, |_| Ok(()))?
            }
            None => {
                // A network namespace the host made and may keep for the next container (see
                // `netns`), unless this process runs one container and exits.
                let netns = if crate::reaper::tears_down_on_caller() {
                    None
                } else {
                    crate::netns::take_for(plan.clone_flags, &plan.setup)
                };
                let start = StartSpec {
                    clone_flags: plan.clone_flags,
                    uid_maps: &c.uid_maps,
                    gid_maps: &c.gid_maps,
                    plan: plan.setup,
                    plan_fds: fds,
                    title: "hatchery:oneshot",
                    cgroup: spawn::CgroupSpec {
                        limits: &c.resources,
                        ignore_failure: ignore_cgroup_failure,
                    },
                    existing_cgroup: c.existing_cgroup().map(|fd| fd.as_fd()),
                    netns,
                };
                spawn::start_with(start, |pid| {
                    if let Some(n) = network {
                        network_log = Some(crate::network::setup(n, pid.as_raw() as u32)?);
                    }
                    Ok(())
                })?
            }
        };
        // A container given a socket could send out a hold on its network namespace: not kept.
        if let (true, Some(lease)) = (given_socket, shim.netns.as_mut()) {
            lease.expose();
        }
        // The command's ends of the pipes now live in the container only.
        drop(setup.child_fds);
        drop(plan.blob);
        if let Some(shape) = &shape {
            crate::spare::prepare(shape);
        }
        let cgroup = shim.cgroup.take();
        let ready = shim.await_ready("waiting for the container")?;
        let features = ready.features;
        let mut steps = vec![("host: plan + stdio".to_string(), t_start - t_plan)];
        steps.append(&mut shim.host_steps);
        steps.extend(ready.setup.into_iter().map(|s| {
            // A shim started ahead waited for its plan: not a cost of this container.
            let step = match s.step.as_str() {
                "shim start + receive plan" if ahead => "started ahead, waiting for its plan",
                other => other,
            };
            (format!("shim: {step}"), Duration::from_micros(s.us))
        }));
        let mut child = Child::new(
            shim,
            setup.host,
            started,
            self.timeout,
            steps,
            features,
            cgroup,
        )
        .with_forward_cancel(c.forwards_cancel().then(|| c.cancel_wait_delay()))
        .with_recording(c.recording, || c.denial_limits());
        child.network_log = network_log;
        Ok(child)
    }

    /// Starts the command. Stdio defaults to inherit.
    pub fn spawn(&mut self) -> Result<Child> {
        self.spawn_with_defaults(Stdio::Inherit, Stdio::Inherit)
    }

    /// Runs the command to its end and returns how it ended. Stdio defaults to inherit.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Runs the command to its end, capturing stdout and stderr. Stdin defaults to null.
    pub fn output(&mut self) -> Result<Output> {
        self.spawn_with_defaults(Stdio::Null, Stdio::Piped)?
            .wait_with_output()
    }
}
