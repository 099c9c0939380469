//! The in-container side of hatchery.
//!
//! - [`shim`]: the `hatchery-shim` program, PID 1 of every container: builds the container from
//!   the host's [`SetupPlan`](hatchery_protocol::SetupPlan), then runs commands in it.
//! - [`call`]: call mode, for helpers that export functions ([`Exports`]`::serve`).
#![deny(unsafe_code)]

pub mod call;
pub mod shim;

pub use call::{Call, CallFailure, Exports};
