//! The pure slot policy of the pool: which zygote serves the next request, when to start,
//! retire or recycle zygotes. No processes, no clocks of its own (callers pass `now`), so every
//! rule is unit-tested here.
//!
//! ```text
//!   Starting ──ready──▶ Ready ──(served ≥ recycle_after | dedicated use | idle too long)──▶ Draining
//!      │                  │ ▲                                                                  │
//!      └──failed──▶ gone  └─┘ lease / release (running 0..=per_zygote)        running == 0 ──▶ Retire
//! ```

use std::time::{Duration, Instant};

/// Identifies one zygote slot for its whole life; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u64);

impl std::fmt::Display for SlotId {
    /// The slot's number, as in a zygote's process title (`hatchery:zygote:3`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Its zygote is being started.
    Starting,
    /// Serving requests.
    Ready,
    /// Takes no new requests; retired once idle.
    Draining,
}

/// One zygote as the policy sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its id.
    pub id: SlotId,
    /// Its state.
    pub state: SlotState,
    /// Requests running in it now.
    pub running: u32,
    /// Requests it has served (including running ones).
    pub served: u64,
    /// When it last became idle.
    pub idle_since: Instant,
}

/// The knobs the policy follows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Zygotes kept warm at all times.
    pub min: usize,
    /// Most zygotes alive at once.
    pub max: usize,
    /// Requests one zygote runs at once.
    pub per_zygote: u32,
    /// Retire a zygote after this many requests.
    pub recycle_after: Option<u64>,
    /// Retire zygotes above `min` idle for this long.
    pub idle_timeout: Option<Duration>,
    /// One container per request: a zygote serves once and is retired.
    pub dedicated: bool,
}

/// All slots and the policy.
#[derive(Debug)]
pub struct Slots {
    policy: Policy,
    slots: Vec<Slot>,
    next: u64,
}

impl Slots {
    /// An empty set.
    pub fn new(policy: Policy) -> Slots {
        Slots {
            policy,
            slots: Vec::new(),
            next: 1,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Every slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    fn get_mut(&mut self, id: SlotId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    /// Slots counted against `max` (all of them).
    pub fn live(&self) -> usize {
        self.slots.len()
    }

    /// Counts by state: (starting, ready and idle, ready and busy, draining).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for s in &self.slots {
            match s.state {
                SlotState::Starting => c.0 += 1,
                SlotState::Ready if s.running == 0 => c.1 += 1,
                SlotState::Ready => c.2 += 1,
                SlotState::Draining => c.3 += 1,
            }
        }
        c
    }

    /// Registers a zygote being started.
    pub fn add_starting(&mut self, now: Instant) -> SlotId {
        let id = SlotId(self.next);
        self.next += 1;
        self.slots.push(Slot {
            id,
            state: SlotState::Starting,
            running: 0,
            served: 0,
            idle_since: now,
        });
        id
    }

    /// A started zygote is ready.
    pub fn mark_ready(&mut self, id: SlotId, now: Instant) {
        if let Some(s) = self.get_mut(id) {
            s.state = SlotState::Ready;
            s.idle_since = now;
        }
    }

    /// A slot is gone (failed to start, died, or retired).
    pub fn remove(&mut self, id: SlotId) -> Option<Slot> {
        let pos = self.slots.iter().position(|s| s.id == id)?;
        Some(self.slots.remove(pos))
    }

    /// Takes no new requests from now on.
    pub fn drain(&mut self, id: SlotId) {
        if let Some(s) = self.get_mut(id) {
            s.state = SlotState::Draining;
        }
    }

    /// Picks a zygote for a request and counts the request in. Prefers the busiest zygote that
    /// still has room (keeps others idle so they can be shrunk), then the most recently used.
    pub fn lease(&mut self) -> Option<SlotId> {
        let per = self.policy.per_zygote.max(1);
        let dedicated = self.policy.dedicated;
        let best = self
            .slots
            .iter_mut()
            .filter(|s| s.state == SlotState::Ready && s.running < per)
            .filter(|s| !dedicated || s.served == 0)
            .max_by_key(|s| (s.running, s.idle_since))?;
        best.running += 1;
        best.served += 1;
        let id = best.id;
        if dedicated || self.policy.recycle_after.is_some_and(|n| best.served >= n) {
            best.state = SlotState::Draining;
        }
        Some(id)
    }

    /// A request finished. Returns true when the slot should now be retired.
    pub fn release(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(s) = self.get_mut(id) else {
            return false;
        };
        s.running = s.running.saturating_sub(1);
        if s.running == 0 {
            s.idle_since = now;
        }
        s.state == SlotState::Draining && s.running == 0
    }

    /// How many zygotes to start now, given `waiters` blocked requests.
    pub fn to_start(&self, waiters: usize) -> usize {
        let live = self.live();
        let per = self.policy.per_zygote.max(1) as usize;
        let starting = self
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Starting)
            .count();
        let free: usize = self
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Ready)
            .filter(|s| !self.policy.dedicated || s.served == 0)
            .map(|s| per - (s.running as usize).min(per))
            .sum();
        // Keep `min` usable (not draining) zygotes warm.
        let usable = self
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Draining)
            .count();
        let for_min = self.policy.min.saturating_sub(usable);
        // Grow for requests that would otherwise wait.
        let for_waiters = waiters.saturating_sub(free + starting * per).div_ceil(per);
        for_min
            .max(for_waiters)
            .min(self.policy.max.saturating_sub(live))
    }

    /// Idle zygotes to retire: above `min`, idle longer than `idle_timeout`; and drained ones that
    /// went idle.
    pub fn to_retire(&self, now: Instant) -> Vec<SlotId> {
        let mut out: Vec<SlotId> = self
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Draining && s.running == 0)
            .map(|s| s.id)
            .collect();
        if let Some(idle) = self.policy.idle_timeout {
            let ready: Vec<&Slot> = self
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Ready)
                .collect();
            let mut spare = ready.len().saturating_sub(self.policy.min);
            for s in ready {
                if spare == 0 {
                    break;
                }
                if s.running == 0 && now.duration_since(s.idle_since) >= idle {
                    out.push(s.id);
                    spare -= 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: 2,
            max: 4,
            per_zygote: 1,
            recycle_after: None,
            idle_timeout: None,
            dedicated: false,
        }
    }

    fn ready(slots: &mut Slots, n: usize, now: Instant) -> Vec<SlotId> {
        (0..n)
            .map(|_| {
                let id = slots.add_starting(now);
                slots.mark_ready(id, now);
                id
            })
            .collect()
    }

    #[test]
    fn keeps_min_warm_and_grows_for_waiters_up_to_max() {
        let now = Instant::now();
        let mut s = Slots::new(policy());
        assert_eq!(s.to_start(0), 2);
        ready(&mut s, 2, now);
        assert_eq!(s.to_start(0), 0);
        assert!(s.lease().is_some());
        assert!(s.lease().is_some());
        assert_eq!(s.lease(), None, "per_zygote 1: both busy");
        assert_eq!(s.to_start(1), 1);
        assert_eq!(s.to_start(10), 2, "capped by max");
        s.add_starting(now);
        assert_eq!(s.to_start(1), 0, "a starting zygote covers one waiter");
    }

    #[test]
    fn release_and_recycle() {
        let now = Instant::now();
        let mut s = Slots::new(Policy {
            recycle_after: Some(2),
            min: 1,
            ..policy()
        });
        let id = ready(&mut s, 1, now)[0];
        assert_eq!(s.lease(), Some(id));
        assert!(!s.release(id, now));
        assert_eq!(s.lease(), Some(id));
        assert!(s.release(id, now), "served twice: retire");
        assert_eq!(s.lease(), None, "draining slots take no requests");
        assert_eq!(s.to_retire(now), vec![id]);
        assert_eq!(s.to_start(0), 1, "replacement for the draining one");
    }

    #[test]
    fn dedicated_serves_once() {
        let now = Instant::now();
        let mut s = Slots::new(Policy {
            dedicated: true,
            per_zygote: 4,
            ..policy()
        });
        let ids = ready(&mut s, 2, now);
        let a = s.lease().unwrap();
        let b = s.lease().unwrap();
        assert_ne!(a, b);
        assert_eq!(s.lease(), None);
        assert!(s.release(a, now));
        assert!(ids.contains(&a) && ids.contains(&b));
        assert_eq!(s.to_start(0), 2, "both consumed: refill to min");
    }

    #[test]
    fn prefers_busy_zygotes_with_room() {
        let now = Instant::now();
        let mut s = Slots::new(Policy {
            per_zygote: 3,
            ..policy()
        });
        ready(&mut s, 2, now);
        let a = s.lease().unwrap();
        assert_eq!(s.lease(), Some(a));
        assert_eq!(s.lease(), Some(a));
        let b = s.lease().unwrap();
        assert_ne!(a, b, "a is full");
        assert_eq!(s.counts(), (0, 0, 2, 0));
    }

    #[test]
    fn idle_shrink_keeps_min() {
        let t0 = Instant::now();
        let mut s = Slots::new(Policy {
            idle_timeout: Some(Duration::from_secs(10)),
            ..policy()
        });
        let ids = ready(&mut s, 4, t0);
        assert!(s.to_retire(t0 + Duration::from_secs(5)).is_empty());
        let r = s.to_retire(t0 + Duration::from_secs(11));
        assert_eq!(r.len(), 2, "only the two above min");
        for id in r {
            assert!(ids.contains(&id));
            s.remove(id);
        }
        assert!(s.to_retire(t0 + Duration::from_secs(60)).is_empty());
    }
}
