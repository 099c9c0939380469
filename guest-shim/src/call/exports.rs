//! What a helper exports: its functions by name, and the call each one gets. The lowest layer
//! of call mode (the zygote serves them, call processes run them).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One call, as an export sees it.
#[derive(Debug)]
pub struct Call {
    pub(super) arg: Vec<u8>,
    pub(super) named: Vec<(String, RawFd)>,
}

impl Call {
    /// The argument bytes.
    pub fn arg(&self) -> &[u8] {
        &self.arg
    }

    /// A named fd passed with the request.
    pub fn fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.named
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, fd)| {
                #[allow(unsafe_code)]
                // SAFETY: the fd was placed for this call and stays open while the call runs.
                unsafe {
                    BorrowedFd::borrow_raw(*fd)
                }
            })
    }

    /// The request's stdin (for inputs too large to pass inline: the host sends them as a
    /// sealed memfd), as a new handle of its own.
    pub fn stdin(&self) -> std::io::Result<std::fs::File> {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
    }
}

pub(super) type ExportFn = Box<dyn Fn(&mut Call) -> Result<Vec<u8>, CallFailure>>;

/// Why an export did not return a result.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The export's own error.
    Failed(String),
    /// The argument did not decode.
    Decode(String),
}

/// The functions a helper exports, by name.
#[derive(Default)]
pub struct Exports {
    pub(super) exports: BTreeMap<String, ExportFn>,
}

impl Exports {
    /// No exports yet.
    pub fn new() -> Exports {
        Exports::default()
    }

    /// Exports `f` under `name`: it gets the call (argument bytes, named fds) and returns the
    /// result bytes or an error message.
    pub fn export<F, E>(mut self, name: &str, f: F) -> Exports
    where
        F: Fn(&mut Call) -> Result<Vec<u8>, E> + 'static,
        E: std::fmt::Display,
    {
        self.exports.insert(
            name.to_string(),
            Box::new(move |c| f(c).map_err(|e| CallFailure::Failed(e.to_string()))),
        );
        self
    }

    /// Exports a typed function: the argument and the result are MessagePack (rmp-serde), as
    /// `Pool::call_typed` sends and expects them.
    pub fn export_typed<Req, Resp, F, E>(mut self, name: &str, f: F) -> Exports
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req) -> Result<Resp, E> + 'static,
        E: std::fmt::Display,
    {
        self.exports.insert(
            name.to_string(),
            Box::new(move |c| {
                let req: Req = rmp_serde::from_slice(c.arg())
                    .map_err(|e| CallFailure::Decode(e.to_string()))?;
                let resp = f(req).map_err(|e| CallFailure::Failed(e.to_string()))?;
                rmp_serde::to_vec(&resp).map_err(|e| CallFailure::Failed(e.to_string()))
            }),
        );
        self
    }
}
