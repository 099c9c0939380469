//! Dispatch: acquiring a zygote (bounded queue, acquire timeout) as a [`Lease`], and sending it
//! a request with its fds — on the zygote's control socket, or for a reuse call on its
//! worker's direct channel (started on the control socket when there is none, or when the
//! worker may not serve the call).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hatchery_protocol::{Channel, Message};

use super::request::{self, AnyRequest, RunResult};
use super::ticket::Ticket;
use super::zygote::{Direct, Lease};
use super::{lock, lock_any, Inner, Pool, PoolError};

/// Largest frame accepted on a request's reply socket (responses are small): bounds the host's
/// memory per in-flight request.
const REPLY_MAX_FRAME: usize = 16 << 10;

impl Inner {
    /// Waits for a free zygote until `deadline`.
    pub(super) fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, PoolError> {
        let started = Instant::now();
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return Err(PoolError::Closed);
            }
            if let Some(slot) = st.slots.lease() {
                if let Some(z) = st.zygotes.get(&slot).cloned() {
                    return Ok(Lease {
                        inner: self.clone(),
                        zygote: z,
                    });
                }
                st.slots.release(slot, Instant::now());
            }
            if st.slots.live() == 0 {
                if let Some(e) = &st.last_spawn_error {
                    return Err(PoolError::Spawn(e.clone()));
                }
            }
            if st.waiters >= self.cfg.max_queue {
                return Err(PoolError::QueueFull { depth: st.waiters });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::AcquireTimeout {
                    waited: started.elapsed(),
                });
            }
            st.waiters += 1;
            self.wake_maintenance();
            let (guard, _) = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.waiters -= 1;
        }
    }
}

impl Pool {
    /// Runs a request to its end: waits for a zygote, dispatches, waits for the result.
    pub fn run(&self, request: impl Into<AnyRequest>) -> Result<RunResult, PoolError> {
        self.submit(request)?.wait()
    }

    /// Dispatches a request and returns its [`Ticket`] without waiting for the result.
    pub fn submit(&self, request: impl Into<AnyRequest>) -> Result<Ticket, PoolError> {
        let request = request.into();
        let started = Instant::now();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let tenant = request.tenant().map(str::to_owned);
        let prepared = request.prepare(id, self.inner.cfg.default_wall)?;
        let wall = prepared.wire.limits.wall_time_us.map(Duration::from_micros);
        let lease = self
            .inner
            .acquire(started + self.inner.cfg.acquire_timeout)?;
        let queued = started.elapsed();
        // OOM kills in the zygote's cgroup before this request: only newer ones are its own.
        let oom_before = lease.zygote.cgroup.as_ref().map_or(0, |cg| cg.oom_kills());
        let (host_end, guest_end) =
            Channel::pair().map_err(|e| PoolError::io("socketpair")(std::io::Error::other(e)))?;
        let request::Prepared {
            wire,
            fds,
            stdout,
            stderr,
            files,
        } = prepared;
        let send_by = Some(Instant::now() + Duration::from_secs(5));
        let reuse_call =
            self.inner.reuse.is_some() && matches!(wire.work, hatchery_protocol::Work::Call { .. });
        if fds.iter().any(|f| crate::netns::is_socket(f.as_fd())) {
            lease.zygote.exposed();
        }
        let borrowed: Vec<BorrowedFd<'_>> = std::iter::once(guest_end.as_fd())
            .chain(fds.iter().map(|f| f.as_fd()))
            .collect();
        let mut direct = None;
        let sent = if reuse_call {
            // The zygote's worker, if it may serve this call; otherwise it is retired (dropped)
            // and a new one is started on a channel of its own.
            let current = lock_any(&lease.zygote.direct)
                .take()
                .filter(|d| d.tenant == tenant && !d.stale());
            let d = match current {
                Some(d) => Ok(d),
                None => Channel::pair().and_then(|(ours, theirs)| {
                    let start = Message::Worker(hatchery_protocol::Worker {
                        output_bytes: wire.limits.output_bytes,
                    });
                    lock_any(&lease.zygote.tx).send(&start, &[theirs.as_fd()], send_by)?;
                    let (tx, rx) = ours.with_max_frame(REPLY_MAX_FRAME).split();
                    Ok(Direct {
                        tx,
                        rx,
                        tenant: tenant.clone(),
                        calls: 0,
                    })
                }),
            };
            d.and_then(|mut d| {
                let sent =
                    d.tx.send(&Message::Request(Box::new(wire)), &borrowed, send_by);
                d.calls += 1;
                direct = Some(d);
                sent
            })
        } else {
            lock_any(&lease.zygote.tx).send(&Message::Request(Box::new(wire)), &borrowed, send_by)
        };
        drop(borrowed);
        drop(fds);
        drop(guest_end);
        // The request's own reply socket: only its receiving half is kept (a reuse call is
        // answered on its worker's direct channel instead).
        let (_, reply) = host_end.with_max_frame(REPLY_MAX_FRAME).split();
        let mut ticket = Ticket {
            lease,
            id,
            reply,
            stdout,
            stderr,
            files,
            wall,
            started,
            queued,
            oom_before,
            done: false,
            direct,
            report: None,
        };
        if let Err(e) = sent {
            self.inner.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return Err(ticket.lost(e));
        }
        Ok(ticket)
    }
}
