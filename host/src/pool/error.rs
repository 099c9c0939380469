//! Host-side errors of the pool. How a request's *command* ended is an
//! [`Outcome`](hatchery_protocol::Outcome), never one of these.

use std::time::Duration;

use hatchery_protocol::ProtocolError;

/// Why the pool could not give a request its one result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool was shut down.
    #[error("the pool is shut down")]
    Closed,
    /// No zygote became free within the acquire timeout.
    #[error("no zygote became free within {waited:?} (raise max_zygotes or acquire_timeout)")]
    AcquireTimeout {
        /// How long the request waited.
        waited: Duration,
    },
    /// The bounded queue is full: back off.
    #[error("the request queue is full ({depth} waiting; raise max_queue or slow down)")]
    QueueFull {
        /// Requests waiting.
        depth: usize,
    },
    /// The zygote serving the request died or stopped answering; it is being replaced. The
    /// request may or may not have run.
    #[error("the zygote (pid {pid}) serving this request was lost")]
    ZygoteLost {
        /// Host pid of the lost zygote.
        pid: i32,
    },
    /// The zygote broke the protocol; it was killed and is being replaced.
    #[error("the zygote (pid {pid}) broke the protocol and was killed: {source}")]
    ProtocolViolation {
        /// Host pid of the zygote.
        pid: i32,
        /// What it did.
        #[source]
        source: ProtocolError,
    },
    /// A zygote could not be started (its setup failed, or the shim is missing).
    #[error("starting a zygote failed: {0}")]
    Spawn(#[source] std::sync::Arc<crate::Error>),
    /// The pool's configuration is inconsistent (found by [`PoolBuilder::build`](crate::PoolBuilder::build)).
    #[error("invalid pool configuration: {what} ({reason})")]
    InvalidConfig {
        /// The setting.
        what: String,
        /// Why it cannot work.
        reason: &'static str,
    },
    /// The request is malformed.
    #[error("invalid request: {what} ({reason})")]
    InvalidRequest {
        /// What is wrong.
        what: String,
        /// Why.
        reason: &'static str,
    },
    /// A host-side system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl PoolError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> PoolError {
        move |source| PoolError::Io { op, source }
    }
}
