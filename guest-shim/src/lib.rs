//! The in-container side of hatchery.
//!
//! For helpers, call mode: a helper binary exports functions with [`Exports`] and serves them
//! with [`Exports::serve`]; each call sees its argument, its named fds and its stdin through
//! [`Call`]. That is the whole public API.
//!
//! The crate also holds the `hatchery-shim` program (PID 1 of every container: it builds the
//! container from the host's [`SetupPlan`](hatchery_protocol::SetupPlan), then runs commands in
//! it); its binary only calls the hidden [`shim_main`], which is not an API.
#![deny(unsafe_code)]

mod call;
mod shim;

pub use call::{Call, Exports};

/// The entry point of the `hatchery-shim` binary (started by the host, speaking the hatchery
/// protocol on fd 3); returns its exit code. Not an API: only that binary calls it.
/// Runs a packed classic-BPF seccomp program on one call, as the explaining shim does (for the
/// differential tests against the kernel's semantics; not an API).
#[doc(hidden)]
pub fn evaluate_seccomp(program: &[u64], nr: i32, arch: u32, args: [u64; 6]) -> u32 {
    hatchery_sys::seccomp::evaluate(
        program,
        &hatchery_sys::seccomp::SeccompData {
            nr,
            arch,
            instruction_pointer: 0,
            args,
        },
    )
}

#[doc(hidden)]
pub fn shim_main() -> i32 {
    shim::start::main()
}
