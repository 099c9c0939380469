//! [`Ticket`]: a request that was dispatched. Waiting for its one result (and turning the
//! zygote's `Response` into a [`RunResult`]), or cancelling it by dropping the ticket.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hatchery_protocol::transport::Receiver;
use hatchery_protocol::{Kind, Message, Outcome, ProtocolError};

use super::request::{self, RunResult, Timings};
use super::zygote::{Direct, Lease};
use super::{lock_any, PoolError};
use crate::Rusage;

/// Slack the host gives a zygote beyond a request's wall-time limit before it declares the
/// zygote wedged.
pub(super) const WALL_GRACE: Duration = Duration::from_secs(2);

/// A request that was dispatched to a zygote. [`wait`](Ticket::wait) for its result; dropping
/// the ticket instead cancels the request (its processes are killed) and frees the zygote.
#[derive(Debug)]
pub struct Ticket {
    // Field order is drop order: the reply socket closes (the zygote sees the cancellation)
    // before the lease is released and the zygote can be handed the next request.
    pub(super) reply: Receiver,
    pub(super) id: u64,
    pub(super) stdout: Option<(std::fs::File, u64)>,
    pub(super) stderr: Option<(std::fs::File, u64)>,
    /// The regular files it writes to, for its output cap.
    pub(super) files: request::FileWatch,
    pub(super) wall: Option<Duration>,
    pub(super) started: Instant,
    pub(super) queued: Duration,
    /// OOM kills in the zygote's cgroup when the request was sent.
    pub(super) oom_before: u64,
    /// The one result (or error) was received.
    pub(super) done: bool,
    /// A reuse call: the worker's direct channel, on which the answer comes (instead of
    /// `reply`); handed back to the zygote when the call succeeded and the worker may serve
    /// again, dropped (retiring the worker) otherwise.
    pub(super) direct: Option<Direct>,
    /// What an explaining zygote reported before the response.
    pub(super) report: Option<hatchery_protocol::Report>,
    pub(super) lease: Lease,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done && self.direct.is_none() {
            // Cancelled (a reuse call is cancelled by dropping its worker's channel). Tell the
            // zygote on its control socket, before the lease is released and the zygote can be
            // handed the next request: closing the reply socket alone is not enough, as a copy
            // of it may briefly live on in a child this process is spawning.
            let cancel = Message::Cancel(hatchery_protocol::Cancel { id: self.id });
            let _ = lock_any(&self.lease.zygote.tx).send(
                &cancel,
                &[],
                Some(Instant::now() + Duration::from_millis(100)),
            );
        }
    }
}

impl Ticket {
    /// The request's id (unique within the pool).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The reply socket, for event loops (readable once the result is in).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.direct {
            Some(d) => d.rx.as_fd(),
            None => self.reply.as_fd(),
        }
    }

    /// Where the result comes from: the request's reply socket, or a reuse call's direct
    /// channel.
    fn replies(&mut self) -> &mut Receiver {
        match &mut self.direct {
            Some(d) => &mut d.rx,
            None => &mut self.reply,
        }
    }

    pub(super) fn lost(&mut self, e: ProtocolError) -> PoolError {
        self.done = true;
        let z = &self.lease.zygote;
        let violation = e.is_peer_violation();
        let pid = z.pid.as_raw();
        self.lease.inner.discard(z.slot, true);
        if violation {
            PoolError::ProtocolViolation { pid, source: e }
        } else {
            PoolError::ZygoteLost { pid }
        }
    }

    /// Waits for the request's one result.
    pub fn wait(mut self) -> Result<RunResult, PoolError> {
        // A reuse call's deadline is the host's to enforce (retiring the worker kills it); the
        // supervisor enforces every other one, the host only notices a wedged zygote.
        let grace = if self.direct.is_some() {
            Duration::ZERO
        } else {
            WALL_GRACE
        };
        let deadline = self.wall.map(|w| Instant::now() + w + grace);
        let res = self.receive(deadline);
        self.record(&res);
        res
    }

    pub(super) fn record(&self, res: &Result<RunResult, PoolError>) {
        let metrics = &self.lease.inner.metrics;
        match res {
            Ok(r) => metrics.record(&r.outcome, r.timings.total),
            Err(_) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn receive(&mut self, deadline: Option<Instant>) -> Result<RunResult, PoolError> {
        let received = match self.replies().recv(deadline) {
            Ok(r) => r,
            Err(ProtocolError::Timeout { .. }) if self.direct.is_some() => {
                self.done = true;
                self.direct = None;
                return Ok(self.ended(Outcome::TimedOut, None));
            }
            Err(ProtocolError::Timeout { .. }) => {
                // The zygote did not enforce the wall-time limit: it is wedged.
                return Err(self.lost(ProtocolError::Timeout { op: "receive" }));
            }
            Err(e) => return Err(self.lost(e)),
        };
        match self.finish(received.message)? {
            Some(r) => Ok(r),
            // The report came first: the response follows at once.
            None => self.receive(deadline),
        }
    }

    /// Non-blocking: the result if it is in.
    pub fn try_wait(&mut self) -> Result<Option<RunResult>, PoolError> {
        match self.replies().recv(Some(Instant::now())) {
            Ok(r) => match self.finish(r.message)? {
                Some(r) => Ok(Some(r)),
                None => self.try_wait(),
            },
            Err(ProtocolError::Timeout { .. }) => Ok(None),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// A reuse call that ended without an answer from the worker.
    fn ended(&mut self, outcome: Outcome, usage: Option<hatchery_protocol::Usage>) -> RunResult {
        let u = usage.unwrap_or_default();
        let run = Duration::from_micros(u.wall_us);
        RunResult {
            outcome,
            usage: Rusage::from_usage(&u, run),
            timings: Timings {
                queued: self.queued,
                dispatch: Duration::ZERO,
                run,
                total: self.started.elapsed(),
            },
            stdout: Vec::new(),
            stderr: Vec::new(),
            call: None,
            denials: Vec::new(),
        }
    }

    /// The result from the request's message; `None` for an explaining zygote's report, which
    /// comes right before the response.
    fn finish(&mut self, message: Message) -> Result<Option<RunResult>, PoolError> {
        let explaining =
            self.lease.inner.profile.container.recording == crate::denial::Recording::Explain;
        if let Message::Report(r) = message {
            if explaining && self.report.is_none() && self.direct.is_none() {
                self.report = Some(*r);
                return Ok(None);
            }
            self.done = true;
            return Err(self.lost(ProtocolError::UnexpectedMessage {
                expected: Kind::Response.name(),
                got: Kind::Report,
            }));
        }
        self.done = true;
        let resp = match message {
            Message::WorkerExited(w) if self.direct.is_some() => {
                self.direct = None;
                let mut outcome = w.outcome;
                crate::seccomp::name_violation(&mut outcome);
                return Ok(Some(self.ended(outcome, Some(w.usage))));
            }
            Message::Response(r) if r.id == self.id => r,
            Message::Response(_) => {
                return Err(self.lost(ProtocolError::UnexpectedMessage {
                    expected: "Response for this request",
                    got: Kind::Response,
                }))
            }
            other => {
                return Err(self.lost(ProtocolError::UnexpectedMessage {
                    expected: Kind::Response.name(),
                    got: other.kind(),
                }))
            }
        };
        let (stdout, out_full) = request::read_capture(self.stdout.take())?;
        let (stderr, err_full) = request::read_capture(self.stderr.take())?;
        let mut outcome = resp.outcome;
        crate::seccomp::name_violation(&mut outcome);
        if let Some(cg) = &self.lease.zygote.cgroup {
            outcome = crate::cgroup::oom_outcome(outcome, self.oom_before, || cg.oom_kills());
        }
        if (out_full || err_full || self.files.exceeded())
            && matches!(
                outcome,
                Outcome::Exited(_) | Outcome::Signaled { .. } | Outcome::OutputExceeded
            )
        {
            outcome = Outcome::OutputExceeded;
        }
        let total = self.started.elapsed();
        if let Some(d) = self.direct.take() {
            // The worker serves again only after a call that went well, up to its limit.
            let max = self.lease.inner.reuse.unwrap_or(1);
            if outcome == Outcome::Exited(0)
                && resp.call == Some(hatchery_protocol::CallStatus::Ok)
                && d.calls < max
            {
                *lock_any(&self.lease.zygote.direct) = Some(d);
            }
        }
        let denials = if explaining {
            let c = &self.lease.inner.profile.container;
            crate::denial::explain(
                self.report.as_ref(),
                &outcome,
                &c.denial_limits(),
                outcome != Outcome::Exited(0),
                crate::denial::on_host,
            )
        } else {
            Vec::new()
        };
        Ok(Some(RunResult {
            denials,
            outcome,
            call: resp.call.clone(),
            usage: Rusage::from_usage(&resp.usage, Duration::from_micros(resp.usage.wall_us)),
            timings: Timings {
                queued: self.queued,
                dispatch: Duration::from_micros(resp.spawn_us),
                run: Duration::from_micros(resp.usage.wall_us),
                total,
            },
            stdout,
            stderr,
        }))
    }
}
