//! Calls to a call-mode helper: [`Pool::call`] and [`Pool::call_typed`] (and their async forms).
//!
//! The call process answers with a typed `CallStatus` (protocol); this module maps it, and every
//! other way a call can end, onto [`CallError`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use hatchery_protocol::{CallStatus, Outcome};

use super::{CallRequest, Pool, PoolError, RunResult, Timings};
use crate::Rusage;

/// What a successful call returned.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// The export's result bytes.
    pub output: Vec<u8>,
    /// What the call used.
    pub usage: Rusage,
    /// Where the time went.
    pub timings: Timings,
}

/// Why a call gave no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The helper exports no function of that name.
    #[error("the helper has no export {0:?}")]
    UnknownExport(String),
    /// The argument (or, for typed calls, the result) did not decode.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The argument could not be encoded (typed calls).
    #[error("encoding the argument failed: {0}")]
    Encode(String),
    /// The export returned an error.
    #[error("the export failed: {0}")]
    Failed(String),
    /// The export panicked.
    #[error("the export panicked: {0}")]
    Panicked(String),
    /// The result exceeded the output limit.
    #[error("the result exceeded the output limit")]
    OutputTooLarge,
    /// The call ended otherwise: timed out, killed by a signal, setup failure.
    #[error("the call ended with {0:?}")]
    Ended(Outcome),
    /// The pool could not run the call.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Maps a call's [`RunResult`] onto its output or typed error: the call process's typed
/// [`CallStatus`] when it answered, the outcome otherwise.
pub(crate) fn interpret(export: &str, r: RunResult) -> Result<CallOutput, CallError> {
    match (r.call, r.outcome) {
        (_, Outcome::OutputExceeded) | (Some(CallStatus::OutputTooLarge), _) => {
            Err(CallError::OutputTooLarge)
        }
        (Some(CallStatus::Ok), Outcome::Exited(0)) => Ok(CallOutput {
            output: r.stdout,
            usage: r.usage,
            timings: r.timings,
        }),
        (Some(CallStatus::UnknownExport), _) => Err(CallError::UnknownExport(export.to_string())),
        (Some(CallStatus::Failed(m)), _) => Err(CallError::Failed(m)),
        (Some(CallStatus::Panicked(m)), _) => Err(CallError::Panicked(m)),
        (Some(CallStatus::Decode(m)), _) => Err(CallError::Decode(m)),
        (_, other) => Err(CallError::Ended(other)),
    }
}

impl Pool {
    /// Calls `export` of the pool's call-mode helper with `arg`, in a fresh process forked from
    /// the warm helper (or its reuse worker), and returns the result bytes.
    pub fn call(&self, export: &str, arg: &[u8]) -> Result<CallOutput, CallError> {
        interpret(export, self.run(CallRequest::new(export, arg))?)
    }

    /// [`call`](Pool::call) with a [`CallRequest`] built by hand (limits, stdin, named fds,
    /// tenant).
    pub fn call_request(&self, request: CallRequest) -> Result<CallOutput, CallError> {
        let export = request.export().to_string();
        interpret(&export, self.run(request)?)
    }

    /// A typed call: `arg` and the result travel as MessagePack (rmp-serde), matching
    /// `Exports::export_typed`.
    pub fn call_typed<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        export: &str,
        arg: &Req,
    ) -> Result<Resp, CallError> {
        let bytes = rmp_serde::to_vec(arg).map_err(|e| CallError::Encode(e.to_string()))?;
        let out = self.call(export, &bytes)?;
        rmp_serde::from_slice(&out.output).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Async [`call`](Pool::call); cancel-safe like [`Pool::run_async`].
    #[cfg(feature = "tokio")]
    pub async fn call_async(&self, export: &str, arg: &[u8]) -> Result<CallOutput, CallError> {
        interpret(export, self.run_async(CallRequest::new(export, arg)).await?)
    }

    /// Async [`call_typed`](Pool::call_typed).
    #[cfg(feature = "tokio")]
    pub async fn call_typed_async<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        export: &str,
        arg: &Req,
    ) -> Result<Resp, CallError> {
        let bytes = rmp_serde::to_vec(arg).map_err(|e| CallError::Encode(e.to_string()))?;
        let out = self.call_async(export, &bytes).await?;
        rmp_serde::from_slice(&out.output).map_err(|e| CallError::Decode(e.to_string()))
    }
}
