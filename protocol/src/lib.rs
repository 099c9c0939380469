//! The wire protocol between the hatchery host and its sandboxed guests.
//!
//! The guest side is untrusted: a compromised helper or zygote may send anything. This crate makes
//! that safe to receive:
//!
//! - [`frame`]: pure framing (no I/O): a 16-byte header with magic, version, kind and length,
//!   checked against [`MAX_FRAME_LEN`] before anything is allocated; pinned by golden-byte tests.
//! - [`kind`]: the message kinds and how many fds each may carry (the layer below the rest).
//! - [`message`]: the messages (serde + rmp-serde), one struct per [`Kind`].
//! - [`report`]: what an explaining or recording shim saw (denials, used paths and calls).
//! - [`transport`]: one frame with its fds per `SOCK_SEQPACKET` datagram, fds received with
//!   `MSG_CMSG_CLOEXEC` and owned at once, deadlines on every call.
//!
//! This crate holds no policy: what a plan means is for the shim, what a result means is for
//! the host.
#![deny(unsafe_code)]

pub mod error;
pub mod frame;
pub mod kind;
pub mod message;
pub mod report;
pub mod transport;

pub use error::ProtocolError;
pub use frame::{Header, Kind, HEADER_LEN, MAGIC, MAX_BODY_LEN, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use message::*;
pub use report::*;
pub use transport::{Channel, Received, Receiver, Sender};
