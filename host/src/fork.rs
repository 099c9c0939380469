//! Which process this is, across `fork`: a child forked from a process holds a copy of every
//! list of kept things (spare shims, network namespaces, the reaper's queue) that belong to its
//! parent. Neither the pid (a child forked into a new pid namespace can have its parent's) nor
//! the lists themselves tell; a counter bumped in the child by a `pthread_atfork` handler does.
//!
//! A fork while another thread is inside one of those lists (a spawn, a teardown) leaves its
//! lock held in the child, as any library's locks would be: a child that runs containers should
//! be forked before its parent runs any, or exec.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's fork generation: the same in a process until it forks, different in every
/// child forked after the first call.
pub(crate) fn generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        #[allow(unsafe_code)]
        // SAFETY: `in_child` is an `extern "C" fn()` that only touches an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
    GENERATION.load(Ordering::Relaxed)
}
