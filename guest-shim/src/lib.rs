//! The in-container side of hatchery.
//!
//! - [`shim`]: the `hatchery-shim` program, PID 1 of every container: builds the container from
//!   the host's [`SetupPlan`](hatchery_protocol::SetupPlan), then runs commands in it.
//! - [`sys`]: raw, async-signal-safe system calls shared with the host's fork boundary.
#![deny(unsafe_code)]

pub mod shim;
pub mod sys;
