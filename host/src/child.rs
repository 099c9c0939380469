//! A running one-shot container ([`Child`]) and how it ended ([`ExitStatus`], [`Output`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hatchery_protocol::{Message, Outcome, ProtocolError, Usage};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result, ShimEnd};
use crate::spawn::{self, ShimProcess};

/// Resources a command (one-shot) or a request (pool) used: one vocabulary for both APIs, with
/// hakoniwa's field names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rusage {
    /// Wall-clock time from spawn to exit.
    pub real_time: Duration,
    /// CPU time in user mode.
    pub user_time: Duration,
    /// CPU time in kernel mode.
    pub system_time: Duration,
    /// Peak resident set size, KiB.
    pub max_rss: u64,
}

impl Rusage {
    /// From the shim's report, with the wall time measured by the caller.
    pub(crate) fn from_usage(u: &Usage, real_time: Duration) -> Rusage {
        Rusage {
            real_time,
            user_time: Duration::from_micros(u.user_us),
            system_time: Duration::from_micros(u.sys_us),
            max_rss: u.max_rss_kib,
        }
    }
}

/// Why and how a sandboxed command ended.
///
/// Its fields are readable as hakoniwa's are (`status.code`, `status.exit_code`, …), and each
/// has an accessor of the same name; only this crate builds one (`#[non_exhaustive]`), from a
/// single [`Outcome`], so the fields always agree with each other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitStatus {
    /// Shell-style code: the exit code, or 128 + the signal number (a timeout is 128 + SIGKILL).
    pub code: i32,
    /// A human-readable reason.
    pub reason: String,
    /// The exit code, when the command exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// The wall-time limit ([`Command::wait_timeout`](crate::Command::wait_timeout)) was reached.
    pub timed_out: bool,
    /// The typed outcome.
    pub outcome: Outcome,
    /// What it used.
    pub rusage: Option<Rusage>,
    /// Every refusal, with how to allow it, when the container explains
    /// ([`Container::explain`](crate::Container::explain)); empty otherwise.
    pub denials: Vec<crate::Denial>,
    /// What the command used, when the container records
    /// ([`Container::learn`](crate::Container::learn)).
    pub learned: Option<crate::Learned>,
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0 && self.exit_code == Some(0)
    }

    /// Shell-style code: the exit code, or 128 + the signal number (a timeout is 128 + SIGKILL).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// A human-readable reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The exit code, when the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The signal that ended it, if any.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// Whether the wall-time limit was reached.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The typed outcome everything else is derived from.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// What it used.
    pub fn rusage(&self) -> Option<Rusage> {
        self.rusage
    }

    /// Every refusal, with how to allow it (explaining containers only).
    pub fn denials(&self) -> &[crate::Denial] {
        &self.denials
    }

    /// What the command used (recording containers only).
    pub fn learned(&self) -> Option<&crate::Learned> {
        self.learned.as_ref()
    }

    pub(crate) fn from_outcome(
        outcome: Outcome,
        rusage: Option<Rusage>,
        limit: Option<Duration>,
    ) -> Self {
        let (code, reason, exit_code, signal, timed_out) = match &outcome {
            Outcome::Exited(c) => (*c, format!("exited with code {c}"), Some(*c), None, false),
            Outcome::Signaled {
                signal,
                core_dumped,
            } => (
                128 + signal,
                format!(
                    "killed by {}{}",
                    signal_name(*signal),
                    if *core_dumped { " (core dumped)" } else { "" }
                ),
                None,
                Some(*signal),
                false,
            ),
            Outcome::TimedOut => (
                128 + libc::SIGKILL,
                match limit {
                    Some(l) => format!("wall-time limit of {l:?} exceeded, killed"),
                    None => "wall-time limit exceeded, killed".to_string(),
                },
                None,
                Some(libc::SIGKILL),
                true,
            ),
            Outcome::CpuTimeExceeded => (
                128 + libc::SIGXCPU,
                "CPU time limit exceeded".to_string(),
                None,
                Some(libc::SIGXCPU),
                false,
            ),
            Outcome::MemoryExceeded => (
                128 + libc::SIGKILL,
                "memory limit exceeded".to_string(),
                None,
                Some(libc::SIGKILL),
                false,
            ),
            Outcome::OutputExceeded => (
                128 + libc::SIGPIPE,
                "output limit exceeded".to_string(),
                None,
                Some(libc::SIGPIPE),
                false,
            ),
            Outcome::Violation { syscall, nr, .. } => (
                128 + libc::SIGSYS,
                format!("seccomp policy violation: {syscall} ({nr})"),
                None,
                Some(libc::SIGSYS),
                false,
            ),
            Outcome::SetupFailed(f) => (
                125,
                format!("setup failed at {:?}: errno {}", f.step, f.errno),
                None,
                None,
                false,
            ),
            _ => (125, format!("{outcome:?}"), None, None, false),
        };
        ExitStatus {
            code,
            reason,
            exit_code,
            signal,
            timed_out,
            outcome,
            rusage,
            denials: Vec::new(),
            learned: None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Everything a finished command wrote, with its status.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to stdout (empty unless stdout was piped).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (empty unless stderr was piped).
    pub stderr: Vec<u8>,
}

macro_rules! pipe_end {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $name(pub(crate) File);

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        impl From<$name> for OwnedFd {
            fn from(p: $name) -> OwnedFd {
                p.0.into()
            }
        }
    };
}

pipe_end!(ChildStdin, "The write end of a piped stdin.");
pipe_end!(ChildStdout, "The read end of a piped stdout.");
pipe_end!(ChildStderr, "The read end of a piped stderr.");

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// A sandboxed command that was started. Dropping a `Child` that was not waited for kills the
/// whole container (every process in it) and reaps it: nothing outlives its handle.
#[derive(Debug)]
pub struct Child {
    shim: Option<ShimProcess>,
    /// Piped stdin, if requested.
    pub stdin: Option<ChildStdin>,
    /// Piped stdout, if requested.
    pub stdout: Option<ChildStdout>,
    /// Piped stderr, if requested.
    pub stderr: Option<ChildStderr>,
    started: Instant,
    timeout: Option<Duration>,
    status: Option<ExitStatus>,
    killed: bool,
    setup: Vec<(String, Duration)>,
    features: hatchery_protocol::Features,
    /// Dropped (killing what is left and removing it) after the shim is reaped.
    cgroup: Option<crate::cgroup::Cgroup>,
    /// What configured the container's network, if anything did.
    pub(crate) network_log: Option<crate::network::SetupLog>,
    /// hakurei's ForwardCancel: the wait delay after the `SIGINT` of a [`Child::cancel`].
    forward_cancel: Option<Duration>,
    /// When a forwarded cancel's wait delay ends.
    cancel_deadline: Option<Instant>,
    /// Explaining or recording: the limits denials may suggest raising.
    recording: Option<(crate::denial::Recording, crate::denial::Limits)>,
    /// What an explaining or recording shim reported.
    report: Option<hatchery_protocol::Report>,
}

impl Child {
    pub(crate) fn new(
        shim: ShimProcess,
        pipes: (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>),
        started: Instant,
        timeout: Option<Duration>,
        setup: Vec<(String, Duration)>,
        features: hatchery_protocol::Features,
        cgroup: Option<crate::cgroup::Cgroup>,
    ) -> Child {
        Child {
            shim: Some(shim),
            stdin: pipes.0,
            stdout: pipes.1,
            stderr: pipes.2,
            started,
            timeout,
            status: None,
            killed: false,
            setup,
            features,
            cgroup,
            network_log: None,
            forward_cancel: None,
            cancel_deadline: None,
            recording: None,
            report: None,
        }
    }

    /// Makes the status carry the denials or the use the shim reports.
    pub(crate) fn with_recording(
        mut self,
        recording: crate::denial::Recording,
        limits: impl FnOnce() -> crate::denial::Limits,
    ) -> Child {
        if recording != crate::denial::Recording::Off {
            self.recording = Some((recording, limits()));
        }
        self
    }

    /// The denials or use the shim reported, added to `st`.
    fn add_report(&self, st: &mut ExitStatus) {
        let Some((recording, limits)) = &self.recording else {
            return;
        };
        let recording = *recording;
        if recording == crate::denial::Recording::Learn {
            st.learned = self
                .report
                .as_ref()
                .and_then(crate::denial::Learned::from_report);
            return;
        }
        st.denials = crate::denial::explain(
            self.report.as_ref(),
            &st.outcome,
            limits,
            !st.success(),
            crate::denial::on_host,
        );
    }

    /// The container's control socket, for event loops: it becomes readable when the command
    /// has ended (or the shim has something else to say), and then
    /// [`try_wait`](Child::try_wait) tells. `None` once the container is reaped.
    pub fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shim.as_ref().map(|s| s.chan.as_fd())
    }

    /// Makes [`cancel`](Child::cancel) forward `SIGINT` and kill after `wait_delay`.
    pub(crate) fn with_forward_cancel(mut self, wait_delay: Option<Duration>) -> Child {
        self.forward_cancel = wait_delay;
        self
    }

    /// Cancels the command and waits for its end. By default that is [`kill`](Child::kill);
    /// with [`Container::forward_cancel`](crate::Container::forward_cancel) the command gets
    /// `SIGINT` and may end by itself (its status is then its own, e.g. 130 for a default
    /// `SIGINT`), and the whole container is killed once the
    /// [`wait_delay`](crate::Container::wait_delay) has passed (status: killed by `SIGKILL`).
    /// A command that already ended just reports its status.
    pub fn cancel(&mut self) -> Result<ExitStatus> {
        if self.status.is_some() {
            return self.wait();
        }
        let Some(delay) = self.forward_cancel else {
            self.kill()?;
            return self.wait();
        };
        if let Some(shim) = self.shim.as_mut() {
            let sent = shim.chan.send(
                &Message::Cancel(hatchery_protocol::Cancel { id: 0 }),
                &[],
                Some(Instant::now() + Duration::from_secs(1)),
            );
            if sent.is_err() {
                // The shim is gone or stuck: nothing to forward to.
                self.kill()?;
            }
        }
        self.cancel_deadline = Some(Instant::now() + delay);
        self.wait()
    }

    /// The command line that configured the container's network (pasta) and what it printed,
    /// when a [`Network`](crate::Network) was set up.
    pub fn network_setup(&self) -> Option<(&[String], &str)> {
        self.network_log
            .as_ref()
            .map(|l| (l.cmdline.as_slice(), l.output.as_str()))
    }

    /// What the container enforces: seccomp (and whether violations are reported), the
    /// landlock ABI and the rights and scopes it enforces, no_new_privs.
    pub fn features(&self) -> &hatchery_protocol::Features {
        &self.features
    }

    /// How long each container setup step took: the host's (`host: …`: clone and exec of the
    /// shim, id maps, handshake) and the shim's (`shim: …`: mounts, pivot_root, fork and exec of
    /// the command, …), in order.
    pub fn setup_timings(&self) -> &[(String, Duration)] {
        &self.setup
    }

    /// The host pid of the container's init (the shim); killing it ends the whole container.
    pub fn id(&self) -> u32 {
        self.shim
            .as_ref()
            .map(|s| s.pid.as_raw() as u32)
            .unwrap_or(0)
    }

    /// Kills every process of the container (SIGKILL to its init). Waiting afterwards reports
    /// the kill.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(shim) = &self.shim {
            self.killed = true;
            nix::sys::signal::kill(shim.pid, nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| Error::io("kill")(e.into()))?;
        }
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| self.started + t)
    }

    /// Waits for the report or the deadline. `block == false` polls once.
    fn wait_inner(&mut self, block: bool) -> Result<Option<ExitStatus>> {
        if let Some(s) = &self.status {
            return Ok(Some(s.clone()));
        }
        let Some(shim) = self.shim.as_mut() else {
            return Err(Error::ShimLost {
                status: ShimEnd::AlreadyReaped,
            });
        };
        let wall = self.timeout.map(|t| self.started + t);
        let deadline = match (wall, self.cancel_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            let recv_deadline = if block {
                deadline
            } else {
                Some(Instant::now())
            };
            match shim.chan.recv(recv_deadline) {
                Ok(r) => match r.message {
                    Message::Response(mut resp) => {
                        crate::seccomp::name_violation(&mut resp.outcome);
                        let real = self.started.elapsed();
                        if let Some(cg) = &self.cgroup {
                            // The cgroup was made for this container: it had no OOM kill
                            // before the command, and the command is dead (the shim reaped
                            // it before reporting), so its count is final.
                            resp.outcome =
                                crate::cgroup::oom_outcome(resp.outcome, 0, || cg.oom_kills());
                        }
                        // The shim only exits now: its exit, the namespaces' teardown and the
                        // cgroup's removal happen off this thread.
                        crate::reaper::hand_off(shim.pid, self.cgroup.take(), shim.netns.take());
                        let rusage = Rusage::from_usage(&resp.usage, real);
                        self.shim = None;
                        let mut st =
                            ExitStatus::from_outcome(resp.outcome, Some(rusage), self.timeout);
                        self.add_report(&mut st);
                        self.status = Some(st.clone());
                        return Ok(Some(st));
                    }
                    Message::Report(r) if self.recording.is_some() && self.report.is_none() => {
                        self.report = Some(*r);
                        continue;
                    }
                    Message::Pong(_) => continue,
                    other => {
                        shim.kill_and_reap();
                        self.shim = None;
                        return Err(Error::Protocol {
                            op: "waiting for the command",
                            source: ProtocolError::UnexpectedMessage {
                                expected: "Response",
                                got: other.kind(),
                            },
                        });
                    }
                },
                Err(ProtocolError::Timeout { .. }) => {
                    let expired = deadline.is_some_and(|d| Instant::now() >= d);
                    if !expired {
                        if block {
                            continue;
                        }
                        return Ok(None);
                    }
                    let (_, usage) = spawn::kill_and_reap_with_usage(shim.pid);
                    self.shim = None;
                    let rusage = Rusage::from_usage(&usage, self.started.elapsed());
                    // The wall-time limit, or the end of a forwarded cancel's wait delay.
                    let outcome = if wall.is_some_and(|w| Instant::now() >= w) {
                        Outcome::TimedOut
                    } else {
                        Outcome::Signaled {
                            signal: libc::SIGKILL,
                            core_dumped: false,
                        }
                    };
                    let st = ExitStatus::from_outcome(outcome, Some(rusage), self.timeout);
                    self.status = Some(st.clone());
                    return Ok(Some(st));
                }
                Err(e) => {
                    // The shim is gone without a report: killed by us, by someone else, or it
                    // broke the protocol (then it is killed now).
                    let pid = shim.pid;
                    let (raw, usage) = spawn::kill_and_reap_with_usage(pid);
                    self.shim = None;
                    let rusage = Rusage::from_usage(&usage, self.started.elapsed());
                    if libc::WIFSIGNALED(raw) && (self.killed || matches!(e, ProtocolError::Closed))
                    {
                        let st = ExitStatus::from_outcome(
                            Outcome::Signaled {
                                signal: libc::WTERMSIG(raw),
                                core_dumped: false,
                            },
                            Some(rusage),
                            self.timeout,
                        );
                        self.status = Some(st.clone());
                        return Ok(Some(st));
                    }
                    return Err(match e {
                        ProtocolError::Closed => Error::ShimLost {
                            status: ShimEnd::from_raw(raw),
                        },
                        other => Error::Protocol {
                            op: "waiting for the command",
                            source: other,
                        },
                    });
                }
            }
        }
    }

    /// Returns the status if the command has ended (enforcing the wall-time limit), without
    /// blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_inner(false)
    }

    /// Closes stdin, waits for the command to end (or its wall-time limit) and returns how it
    /// ended. It returns as soon as the shim reports the command's status: the shim's own exit,
    /// the teardown of the container's namespaces and the removal of its cgroup continue on a
    /// background thread ([`reaper`](crate::reaper); [`reaper::settle`](crate::reaper::settle)
    /// waits for them).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        self.wait_inner(true)?.ok_or(Error::ShimLost {
            status: ShimEnd::Unknown,
        })
    }

    /// Closes stdin, reads stdout and stderr to the end while waiting, and returns everything.
    /// The wall-time limit applies to the whole.
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout: Option<File> = self.stdout.take().map(|s| s.0);
        let mut stderr: Option<File> = self.stderr.take().map(|s| s.0);
        let deadline = self.deadline();
        while stdout.is_some() || stderr.is_some() {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() && self.status.is_none() {
                        // Enforce the limit now; the pipes reach EOF once everything is dead.
                        self.try_wait()?;
                        PollTimeout::NONE
                    } else if self.status.is_some() {
                        PollTimeout::NONE
                    } else {
                        PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                            .unwrap_or(PollTimeout::MAX)
                    }
                }
            };
            let mut fds = Vec::with_capacity(2);
            if let Some(s) = &stdout {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &stderr {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("poll")(e.into())),
            }
            drop(fds);
            for (pipe, buf) in [(&mut stdout, &mut out), (&mut stderr, &mut err)] {
                if let Some(p) = pipe {
                    if readable(p.as_fd()) {
                        let mut chunk = [0u8; 65536];
                        match p.read(&mut chunk) {
                            Ok(0) => *pipe = None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(Error::io("read")(e)),
                        }
                    }
                }
            }
        }
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout: out,
            stderr: err,
        })
    }
}

fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(shim) = self.shim.take() {
            shim.kill_and_reap();
        }
    }
}
