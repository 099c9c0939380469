//! The maintenance thread and the zygotes' lifecycle: starting them (to the minimum and for
//! waiting requests), retiring them (recycling, idle shrink, dedicated use), health checks,
//! replacing dead or wedged ones, and stopping everything.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hatchery_protocol::transport::Receiver;
use hatchery_protocol::{Message, Ping, ProtocolError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::slots::{SlotId, SlotState};
use super::zygote::Zygote;
use super::{health, lock, lock_any, Inner};
use crate::error::Error;

impl Inner {
    pub(super) fn wake_maintenance(&self) {
        let _ = nix::unistd::write(self.wake.as_fd(), &1u64.to_ne_bytes());
    }

    /// Starts one zygote and registers it. Blocks for the container's setup (milliseconds).
    pub(super) fn start_one(&self) -> Result<(), Arc<Error>> {
        let slot = lock(&self.state).slots.add_starting(Instant::now());
        let result = Zygote::start(&self.profile, slot).map(|(z, features)| {
            *lock_any(&self.features) = Some(features);
            z
        });
        let mut st = lock(&self.state);
        match result {
            Ok(z) => {
                if st.closed {
                    drop(st);
                    z.kill();
                    z.reaped();
                    return Ok(());
                }
                st.slots.mark_ready(slot, Instant::now());
                st.zygotes.insert(slot, Arc::new(z));
                st.last_spawn_error = None;
                self.metrics.zygotes_started.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.cond.notify_all();
                Ok(())
            }
            Err(e) => {
                st.slots.remove(slot);
                let e = Arc::new(e);
                st.last_spawn_error = Some(e.clone());
                self.metrics.zygotes_failed.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.cond.notify_all();
                Err(e)
            }
        }
    }

    /// Removes a zygote from the pool, kills and reaps it.
    pub(super) fn discard(&self, slot: SlotId, restart: bool) {
        let z = {
            let mut st = lock(&self.state);
            st.slots.remove(slot);
            st.pings.remove(slot);
            st.zygotes.remove(&slot)
        };
        if let Some(z) = z {
            z.kill();
            z.reaped();
            if restart {
                self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
            } else {
                self.metrics.retired.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.cond.notify_all();
        self.wake_maintenance();
    }

    pub(super) fn kill_all(&self) {
        let zygotes: Vec<Arc<Zygote>> = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.pings.clear();
            let ids: Vec<SlotId> = st.zygotes.keys().copied().collect();
            for id in &ids {
                st.slots.remove(*id);
            }
            st.zygotes.drain().map(|(_, z)| z).collect()
        };
        for z in zygotes {
            z.kill();
            z.reaped();
        }
        self.cond.notify_all();
    }
}

impl Inner {
    /// Stops the maintenance thread (joining it unless called from it) and kills every zygote.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_maintenance();
        let handle = lock_any(&self.maintenance).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        self.kill_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
        crate::netns::pool_gone();
    }
}

/// The maintenance thread: starts zygotes (to the minimum and for waiting requests), retires
/// them (recycling, idle shrink, dedicated use), pings them, and replaces dead or wedged ones.
/// It holds only a weak reference, so dropping the pool stops it.
pub(super) fn run(weak: Weak<Inner>) {
    let mut last_health = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Start what the policy asks for.
        let to_start = {
            let st = lock(&inner.state);
            if st.closed {
                0
            } else {
                st.slots.to_start(st.waiters)
            }
        };
        // Zygotes start in parallel (each is mostly the kernel building namespaces and the
        // shim's setup), so a dedicated pool refills as fast as it is drained.
        if to_start > 0 && !inner.stopping.load(Ordering::SeqCst) {
            std::thread::scope(|s| {
                for _ in 0..to_start {
                    s.spawn(|| {
                        if let Err(e) = inner.start_one() {
                            tracing::warn!(error = %e, "starting a zygote failed");
                        }
                    });
                }
            });
        }
        // Retire drained and idle zygotes.
        let retire = lock(&inner.state).slots.to_retire(Instant::now());
        for slot in retire {
            inner.discard(slot, false);
        }
        // Health: ping every ready zygote; a pong overdue means wedged. The pings are recorded
        // under the state lock and sent after it is released: a send may block (up to the
        // health timeout) on a zygote that does not read, and acquire() must never wait for it.
        let now = Instant::now();
        let (mut wedged, to_ping) = {
            let mut st = lock(&inner.state);
            let wedged = st.pings.overdue(now, inner.cfg.health_timeout);
            let mut to_ping = Vec::new();
            if now.duration_since(last_health) >= inner.cfg.health_interval {
                last_health = now;
                let ready: Vec<Arc<Zygote>> = st
                    .zygotes
                    .values()
                    .filter(|z| !st.pings.pending(z.slot))
                    .filter(|z| {
                        st.slots
                            .iter()
                            .any(|s| s.id == z.slot && s.state != SlotState::Starting)
                    })
                    .cloned()
                    .collect();
                for z in ready {
                    let nonce = st.pings.sent(z.slot, now);
                    to_ping.push((z, nonce));
                }
            }
            (wedged, to_ping)
        };
        for (z, nonce) in to_ping {
            let sent = lock_any(&z.tx).send(
                &Message::Ping(Ping { nonce }),
                &[],
                Some(now + inner.cfg.health_timeout),
            );
            if sent.is_err() {
                wedged.push(z.slot);
            }
        }
        for slot in wedged {
            tracing::warn!(?slot, "zygote failed its health check; replacing it");
            inner.discard(slot, true);
        }
        // Wait for pongs, hangups or a wake-up. Holding the zygotes keeps their sockets open
        // while we poll them; only this thread receives on them, so their receivers stay locked
        // for the poll and the reads without ever making a sender wait.
        let watch: Vec<Arc<Zygote>> = lock(&inner.state).zygotes.values().cloned().collect();
        let mut receivers: Vec<MutexGuard<'_, Receiver>> =
            watch.iter().map(|z| lock_any(&z.rx)).collect();
        let tick = inner
            .cfg
            .health_interval
            .min(inner.cfg.health_timeout)
            .min(Duration::from_millis(500));
        let ready = {
            let mut pfds: Vec<PollFd<'_>> = receivers
                .iter()
                .map(|rx| rx.as_fd())
                .chain(std::iter::once(inner.wake.as_fd()))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let ms = tick.as_millis().min(i32::MAX as u128) as i32;
            let _ = poll(
                &mut pfds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            pfds.iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        if ready.last().copied().unwrap_or(false) {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(inner.wake.as_raw_fd(), &mut buf);
        }
        for ((z, rx), hit) in watch.iter().zip(receivers.iter_mut()).zip(ready.iter()) {
            if !hit || z.dead.load(Ordering::SeqCst) {
                continue;
            }
            let slot = &z.slot;
            let got = rx.recv(Some(Instant::now()));
            match got {
                Ok(r) => match r.message {
                    Message::Pong(p) => {
                        let verdict = lock(&inner.state).pings.answer(*slot, p.nonce);
                        if verdict == health::PongVerdict::Unsolicited {
                            tracing::warn!(
                                ?slot,
                                nonce = p.nonce,
                                "zygote sent a Pong nobody asked for; killing it"
                            );
                            inner.discard(*slot, true);
                        }
                    }

                    other => {
                        tracing::warn!(?slot, kind = ?other.kind(), "zygote sent an unexpected message; killing it");
                        inner.discard(*slot, true);
                    }
                },
                Err(ProtocolError::Timeout { .. }) => {}
                Err(e) => {
                    if !matches!(e, ProtocolError::Closed) {
                        tracing::warn!(?slot, error = %e, "zygote broke the protocol; killing it");
                    }
                    inner.discard(*slot, true);
                }
            }
        }
        drop(receivers);
        drop(inner);
    }
}
