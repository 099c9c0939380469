//! Health checks: the pings in flight and what a `Pong` may answer. Pure bookkeeping, no I/O, so
//! it is unit-tested without processes; the maintenance thread (`pool/maintenance.rs`) does the sending
//! and receiving, never while it holds the pool's state lock.
//!
//! ```text
//!  ping due ──▶ sent(slot, nonce) ──▶ Pong{nonce} ──▶ answer(): Expected   (slot healthy again)
//!                    │                   any other ──▶ answer(): Unsolicited (protocol violation:
//!                    │                                  the zygote is killed and replaced)
//!                    └── no Pong within the timeout ──▶ overdue(): wedged (replaced)
//! ```
//!
//! A zygote may send a `Pong` only as the answer to the one ping the host has outstanding for
//! it, with that ping's nonce: anything else (a Pong nobody asked for, a repeated or guessed
//! nonce, a flood) is a protocol violation, so a hostile zygote cannot keep the host busy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::pool::slots::SlotId;

/// What a received `Pong` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PongVerdict {
    /// The answer to the outstanding ping: the slot has no ping in flight any more.
    Expected,
    /// Not asked for (no ping in flight, or another nonce): a protocol violation.
    Unsolicited,
}

/// Pings in flight: at most one per slot.
#[derive(Debug, Default)]
pub(crate) struct Pings {
    in_flight: HashMap<SlotId, (u64, Instant)>,
    next_nonce: u64,
}

impl Pings {
    /// Whether `slot` has a ping in flight.
    pub fn pending(&self, slot: SlotId) -> bool {
        self.in_flight.contains_key(&slot)
    }

    /// Records a ping to `slot` sent at `now` and returns its nonce (fresh for every ping).
    pub fn sent(&mut self, slot: SlotId, now: Instant) -> u64 {
        self.next_nonce += 1;
        self.in_flight.insert(slot, (self.next_nonce, now));
        self.next_nonce
    }

    /// Judges a `Pong` from `slot`; an expected one clears the slot's ping.
    pub fn answer(&mut self, slot: SlotId, nonce: u64) -> PongVerdict {
        match self.in_flight.get(&slot) {
            Some((n, _)) if *n == nonce => {
                self.in_flight.remove(&slot);
                PongVerdict::Expected
            }
            _ => PongVerdict::Unsolicited,
        }
    }

    /// Slots whose ping has waited longer than `timeout`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> Vec<SlotId> {
        self.in_flight
            .iter()
            .filter(|(_, (_, sent))| now.duration_since(*sent) > timeout)
            .map(|(slot, _)| *slot)
            .collect()
    }

    /// Forgets `slot` (its zygote is gone).
    pub fn remove(&mut self, slot: SlotId) {
        self.in_flight.remove(&slot);
    }

    /// Forgets every slot.
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outstanding_nonce_is_accepted_and_only_once() {
        let mut p = Pings::default();
        let t0 = Instant::now();
        let (a, b) = (SlotId(1), SlotId(2));
        // Nothing asked for yet.
        assert_eq!(p.answer(a, 0), PongVerdict::Unsolicited);
        assert_eq!(p.answer(a, 1), PongVerdict::Unsolicited);
        let na = p.sent(a, t0);
        let nb = p.sent(b, t0);
        assert_ne!(na, nb);
        // Another slot's nonce, or a guess, is not an answer.
        assert_eq!(p.answer(a, nb), PongVerdict::Unsolicited);
        assert_eq!(p.answer(a, na + 100), PongVerdict::Unsolicited);
        assert!(p.pending(a));
        assert_eq!(p.answer(a, na), PongVerdict::Expected);
        assert!(!p.pending(a));
        // A repeat of the same answer is a flood.
        assert_eq!(p.answer(a, na), PongVerdict::Unsolicited);
        assert_eq!(p.answer(b, nb), PongVerdict::Expected);
    }

    #[test]
    fn a_flood_of_pongs_gets_one_acceptance_at_most() {
        let mut p = Pings::default();
        let slot = SlotId(7);
        let n = p.sent(slot, Instant::now());
        let verdicts: Vec<PongVerdict> = (0..10_000).map(|_| p.answer(slot, n)).collect();
        assert_eq!(verdicts[0], PongVerdict::Expected);
        assert!(verdicts[1..].iter().all(|v| *v == PongVerdict::Unsolicited));
    }

    #[test]
    fn overdue_pings_are_wedged_slots() {
        let mut p = Pings::default();
        let t0 = Instant::now();
        p.sent(SlotId(1), t0);
        p.sent(SlotId(2), t0 + Duration::from_secs(5));
        let late = t0 + Duration::from_secs(6);
        assert_eq!(p.overdue(late, Duration::from_secs(2)), vec![SlotId(1)]);
        p.remove(SlotId(1));
        assert!(p.overdue(late, Duration::from_secs(2)).is_empty());
        p.clear();
        assert!(!p.pending(SlotId(2)));
    }
}
