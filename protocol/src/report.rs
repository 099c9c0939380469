//! Explained denials and learned use: what a shim that explains or records tells the host in a
//! [`Kind::Report`](crate::Kind::Report) frame, right before the request's response.
//!
//! Everything here is what an untrusted guest's activity looked like to the trusted shim; the
//! host bounds it (at most [`MAX_REPORT_ENTRIES`] entries of each list) and turns it into
//! typed denials and profiles.

use serde::{Deserialize, Serialize};

use crate::message::Bytes;

/// Most entries of each list of a [`Report`]; the shim counts what it drops in
/// [`Report::dropped`].
pub const MAX_REPORT_ENTRIES: usize = 256;

/// Largest encoded report a pool's reply socket takes (its frames are bounded to 16 KiB);
/// a shim leaves entries out past it (counting them in [`Report::dropped`]).
pub const MAX_POOL_REPORT: usize = 15 << 10;

/// Longest path a report carries (longer ones are cut, and marked so by a trailing `…`).
pub const MAX_REPORT_PATH: usize = 512;

/// What the shim does with a command's system calls besides enforcing its filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Explain {
    /// Nothing: the filter is the policy's own.
    #[default]
    Off,
    /// The installed filter notifies every call the policy's own filter (`original`) would
    /// fail or refuse, and the calls that reach files and ports; the shim evaluates `original`
    /// on each and answers exactly as it would have (the errno, a violation, or running the
    /// call), recording each refusal with the landlock rules it predicts would refuse it.
    Explain {
        /// The policy's own filter (packed `struct sock_filter` words).
        original: Vec<u64>,
    },
    /// Allow and record: the installed filter notifies every call; the shim lets each run and
    /// records the calls, paths, and addresses. For learning a profile from sample inputs only,
    /// never for untrusted ones.
    Learn,
}

/// What one request's explaining or recording shim saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Report {
    /// Refusals, each counted (explain mode).
    pub denials: Vec<RawDenial>,
    /// What the command used (learn mode).
    pub observed: Option<Observed>,
    /// Entries left out for the bounds.
    pub dropped: u32,
}

impl Report {
    /// Leaves entries out (the last first, counted in `dropped`) until the report's frame is at
    /// most `max` bytes.
    pub fn bounded(mut self, max: usize) -> Report {
        loop {
            let msg = crate::Message::Report(Box::new(self.clone()));
            match msg.encode() {
                Ok(f) if f.len() <= max => return self,
                _ => {}
            }
            let before = self.denials.len()
                + self
                    .observed
                    .as_ref()
                    .map_or(0, |o| o.paths.len() + o.syscalls.len());
            if before == 0 {
                return Report {
                    dropped: self.dropped,
                    ..Report::default()
                };
            }
            // Drop about an eighth at a time.
            let cut = |n: usize| n - n.div_ceil(8);
            let mut dropped = 0;
            if let Some(o) = self.observed.as_mut().filter(|o| !o.paths.is_empty()) {
                let keep = cut(o.paths.len());
                dropped += o.paths.len() - keep;
                o.paths.truncate(keep);
            } else if !self.denials.is_empty() {
                let keep = cut(self.denials.len());
                dropped += self.denials.len() - keep;
                self.denials.truncate(keep);
            } else if let Some(o) = self.observed.as_mut() {
                let keep = cut(o.syscalls.len());
                dropped += o.syscalls.len() - keep;
                o.syscalls.truncate(keep);
            }
            self.dropped = self.dropped.saturating_add(dropped as u32);
        }
    }
}

/// One refusal the shim saw or predicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct RawDenial {
    /// What was refused.
    pub what: Refused,
    /// How often.
    pub count: u32,
}

/// A refused operation, as the shim saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Refused {
    /// The seccomp filter failed system call `nr` with `errno` (its first argument, for calls
    /// whose rules look at it, such as `socket`'s family and `clone`'s flags).
    Syscall {
        /// The call's number.
        nr: i32,
        /// The errno it got.
        errno: i32,
        /// Its first argument, when rules may have looked at it.
        arg0: Option<u64>,
    },
    /// Landlock would refuse `access` (`LANDLOCK_ACCESS_FS_*` bits) on `path` (absolute,
    /// inside the container): no rule grants them beneath it.
    Path {
        /// The path, resolved against the caller's working directory or directory fd.
        path: Bytes,
        /// The rights the call needs that no rule grants.
        access: u64,
        /// The system call.
        nr: i32,
    },
    /// Landlock would refuse a TCP `bind` (`connect` false) or `connect` on `port`.
    Port {
        /// The port.
        port: u16,
        /// `connect` rather than `bind`.
        connect: bool,
    },
    /// A landlock scope refuses reaching outside the command's domain: an abstract unix
    /// socket it did not bind itself (`signal` false, `name` the socket's name) or a signal to
    /// a process outside the domain (`signal` true).
    Scope {
        /// A signal rather than a socket.
        signal: bool,
        /// The abstract socket's name (without the leading NUL), or the signalled pid.
        name: Bytes,
    },
    /// A change to `path` that its read-only mount refuses (`EROFS`), before landlock.
    ReadOnly {
        /// The path (or the directory a new entry would go in).
        path: Bytes,
    },
    /// A path the command looked for does not exist in the container (the host tells whether
    /// it exists outside: then it is a missing mount).
    Absent {
        /// The path.
        path: Bytes,
    },
}

/// What a command used, recorded in learn mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Observed {
    /// The system calls made, by number, each with how often.
    pub syscalls: Vec<(i32, u32)>,
    /// Paths reached, with the `LANDLOCK_ACCESS_FS_*` rights the calls needed, and whether
    /// they existed.
    pub paths: Vec<UsedPath>,
    /// Socket address families created (`socket`'s first argument).
    pub families: Vec<i32>,
    /// TCP/UDP ports bound (`connect` false) or connected to.
    pub ports: Vec<(u16, bool)>,
}

/// A path a recorded command reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct UsedPath {
    /// Absolute, inside the container.
    pub path: Bytes,
    /// Rights needed (`LANDLOCK_ACCESS_FS_*`).
    pub access: u64,
    /// It existed when the call was made (or was created by it).
    pub exists: bool,
}
