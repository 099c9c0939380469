//! Supervision as data: when a supervised process must be killed, and what its `Outcome` is
//! once it has ended. Pure (no system calls), shared by the exec-mode zygote and the call-mode
//! supervisor, and unit-tested here; the callers only do the killing and the waiting.
//!
//! ```text
//!   Watch::new(started, wall time) ──▶ kill(reason) / expire(now) ── first reason wins ──┐
//!   what was seen (answer, wait status, output sizes) ─────────────────────────────────▶ decide ─▶ Outcome
//! ```

use std::time::{Duration, Instant};

use hatchery_protocol::{Outcome, Usage};

use super::reap;

/// The outcome of a process the supervisor killed because the caller went away or cancelled.
pub(crate) const CANCELLED: Outcome = Outcome::Signaled {
    signal: libc::SIGKILL,
    core_dumped: false,
};

/// One supervised process: its deadline and why it was killed, if it was.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    deadline: Option<Instant>,
    killed: Option<Outcome>,
}

impl Watch {
    /// A process started at `started` with an optional wall-time limit.
    pub(crate) fn new(started: Instant, wall_time_us: Option<u64>) -> Watch {
        Watch {
            deadline: wall_time_us.map(|us| started + Duration::from_micros(us)),
            killed: None,
        }
    }

    /// Records `why` as the reason it is killed. True when this is the first reason (the caller
    /// sends the signal); later reasons change nothing.
    pub(crate) fn kill(&mut self, why: Outcome) -> bool {
        if self.killed.is_some() {
            return false;
        }
        self.killed = Some(why);
        true
    }

    /// True (once) when the deadline has passed: the process is to be killed as timed out.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return self.kill(Outcome::TimedOut);
        }
        false
    }

    /// Whether it was killed.
    pub(crate) fn is_killed(&self) -> bool {
        self.killed.is_some()
    }

    /// The deadline still to watch for (none once killed).
    pub(crate) fn pending_deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.killed.is_none())
    }

    /// Its outcome from what was seen (see [`decide`]).
    pub(crate) fn outcome(&self, seen: Seen) -> Outcome {
        decide(self.killed.clone(), seen)
    }
}

/// What the supervisor saw of a process that ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen<'a> {
    /// The outcome the process reported itself (a call's answer), if it answered.
    pub(crate) answered: Option<&'a Outcome>,
    /// Its wait status and usage, if it was reaped.
    pub(crate) exited: Option<(i32, Usage)>,
    /// Its `RLIMIT_CPU` in seconds, if any.
    pub(crate) cpu_limit_secs: Option<u64>,
    /// An output cap applies: `RLIMIT_FSIZE` is set from it, so `SIGXFSZ` means the cap.
    pub(crate) output_capped: bool,
    /// An output file grew past its cap.
    pub(crate) output_exceeded: bool,
}

/// The outcome, in order of precedence:
/// 1. the supervisor's own reason to kill it (deadline, cancel, violation);
/// 2. its answer, or how it ended (wait status, with the CPU limit for SIGKILL/SIGXCPU);
///    `SIGXFSZ` under an output cap, or an output past its cap, turns an ordinary end into `OutputExceeded` (never a
///    truncated success);
/// 3. neither: it was killed from outside the supervisor (`SIGKILL`).
pub(crate) fn decide(killed: Option<Outcome>, seen: Seen) -> Outcome {
    if let Some(o) = killed {
        return o;
    }
    let ended = match (seen.answered, seen.exited) {
        (Some(a), _) => a.clone(),
        (None, Some((status, usage))) => {
            reap::outcome(&reap::Reaped { status, usage }, seen.cpu_limit_secs)
        }
        (None, None) => return CANCELLED,
    };
    match ended {
        Outcome::Signaled { signal, .. } if signal == libc::SIGXFSZ && seen.output_capped => {
            Outcome::OutputExceeded
        }
        Outcome::Exited(_) | Outcome::Signaled { .. } if seen.output_exceeded => {
            Outcome::OutputExceeded
        }
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(status: i32) -> Option<(i32, Usage)> {
        Some((status, Usage::default()))
    }

    #[test]
    fn first_kill_reason_wins() {
        let mut w = Watch::new(Instant::now(), None);
        assert!(w.kill(Outcome::TimedOut));
        assert!(!w.kill(CANCELLED));
        assert_eq!(
            w.outcome(Seen {
                exited: exited(0),
                ..Seen::default()
            }),
            Outcome::TimedOut
        );
    }

    #[test]
    fn deadline_expires_once_and_only_when_due() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, Some(1_000));
        assert_eq!(w.pending_deadline(), Some(t0 + Duration::from_millis(1)));
        assert!(!w.expire(t0));
        assert!(w.expire(t0 + Duration::from_millis(1)));
        assert!(!w.expire(t0 + Duration::from_millis(2)));
        assert_eq!(w.pending_deadline(), None);
        assert_eq!(w.outcome(Seen::default()), Outcome::TimedOut);
        // No limit: never due.
        let mut w = Watch::new(t0, None);
        assert!(!w.expire(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn a_kill_before_the_deadline_is_not_turned_into_a_timeout() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, Some(10));
        assert!(w.kill(CANCELLED));
        assert!(!w.expire(t0 + Duration::from_secs(1)));
        assert_eq!(w.outcome(Seen::default()), CANCELLED);
    }

    #[test]
    fn answer_beats_wait_status() {
        let a = Outcome::Exited(0);
        let seen = Seen {
            answered: Some(&a),
            exited: exited(libc::SIGKILL),
            ..Seen::default()
        };
        assert_eq!(decide(None, seen), Outcome::Exited(0));
    }

    #[test]
    fn output_past_its_cap_is_never_a_success() {
        let a = Outcome::Exited(0);
        for seen in [
            Seen {
                answered: Some(&a),
                output_exceeded: true,
                ..Seen::default()
            },
            Seen {
                exited: exited(0),
                output_exceeded: true,
                ..Seen::default()
            },
            Seen {
                exited: exited(libc::SIGXFSZ),
                output_capped: true,
                ..Seen::default()
            },
        ] {
            assert_eq!(decide(None, seen), Outcome::OutputExceeded);
        }
        // Without an output cap, SIGXFSZ is the program's own file-size limit.
        let seen = Seen {
            exited: exited(libc::SIGXFSZ),
            ..Seen::default()
        };
        assert!(
            matches!(decide(None, seen), Outcome::Signaled { signal, .. } if signal == libc::SIGXFSZ)
        );
        // A timeout stays a timeout even if the output also overflowed.
        let seen = Seen {
            exited: exited(0),
            output_exceeded: true,
            ..Seen::default()
        };
        assert_eq!(decide(Some(Outcome::TimedOut), seen), Outcome::TimedOut);
    }

    #[test]
    fn cpu_limit_and_plain_ends() {
        let usage = Usage {
            user_us: 2_000_000,
            ..Usage::default()
        };
        let seen = Seen {
            exited: Some((libc::SIGKILL, usage)),
            cpu_limit_secs: Some(2),
            ..Seen::default()
        };
        assert_eq!(decide(None, seen), Outcome::CpuTimeExceeded);
        let seen = Seen {
            exited: exited(7 << 8),
            ..Seen::default()
        };
        assert_eq!(decide(None, seen), Outcome::Exited(7));
        // Ended without a report or a status: killed from outside.
        assert_eq!(decide(None, Seen::default()), CANCELLED);
    }
}
