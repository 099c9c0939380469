//! The async API (feature `tokio`). Cancel-safe: dropping a future before it completes drops
//! its [`Ticket`], which closes the request's reply socket, and the zygote kills the request.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::ticket::WALL_GRACE;
use super::{AnyRequest, Pool, PoolError, RunResult, Ticket};

/// A duplicate of the reply socket, owned by the `AsyncFd` registration.
struct ReplyFd(OwnedFd);

impl AsRawFd for ReplyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Pool {
    /// Runs a request without blocking the runtime: waiting for a zygote happens on tokio's
    /// blocking pool, waiting for the result on the reactor. Needs a runtime with I/O and time
    /// drivers enabled.
    pub async fn run_async(&self, request: impl Into<AnyRequest>) -> Result<RunResult, PoolError> {
        let request = request.into();
        let pool = self.clone();
        let ticket = tokio::task::spawn_blocking(move || pool.submit(request))
            .await
            .map_err(|e| PoolError::io("join the dispatch task")(std::io::Error::other(e)))??;
        ticket.wait_async().await
    }
}

impl Ticket {
    /// Waits for the result on the tokio reactor.
    pub async fn wait_async(mut self) -> Result<RunResult, PoolError> {
        let wall = self.wall.map(|w| w + WALL_GRACE);
        let res = match wall {
            Some(limit) => match tokio::time::timeout(limit, self.readable_result()).await {
                Ok(r) => r,
                Err(_) => {
                    Err(self.lost(hatchery_protocol::ProtocolError::Timeout { op: "receive" }))
                }
            },
            None => self.readable_result().await,
        };
        self.record(&res);
        res
    }

    async fn readable_result(&mut self) -> Result<RunResult, PoolError> {
        let dup = self
            .as_fd()
            .try_clone_to_owned()
            .map_err(PoolError::io("dup the reply socket"))?;
        #[allow(unsafe_code)]
        // SAFETY: `ReplyFd` owns `dup`, so the fd it returns stays open and refers to the same
        // socket for as long as the `AsyncFd` (its owner) lives, and never changes.
        let registered =
            unsafe { AsyncFd::register_with_interest(ReplyFd(dup), Interest::READABLE) };
        let afd = registered.map_err(|e| PoolError::io("register the reply socket")(e.into()))?;
        loop {
            let mut guard = afd
                .readable()
                .await
                .map_err(PoolError::io("wait for the reply socket"))?;
            match self.try_wait() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }
}
