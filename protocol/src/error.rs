//! The one error type of the protocol crate.

use crate::kind::Kind;

/// Everything that can go wrong reading or writing a frame. The peer is untrusted: every variant
/// is something a hostile peer can cause, and none of them leaks memory or fds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame (or a header's claimed length) exceeds the hard limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Claimed or actual frame length.
        len: usize,
        /// The limit ([`crate::MAX_FRAME_LEN`]).
        max: usize,
    },
    /// The frame ended before its header or body did.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the header promised.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The datagram carries bytes beyond what its header announced.
    #[error("frame has trailing bytes: expected {expected} bytes, got {got}")]
    TrailingBytes {
        /// Bytes the header promised.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The control data (fds) was cut by the kernel (`MSG_CTRUNC`).
    #[error("control data truncated (MSG_CTRUNC): the peer sent more fds than can be received")]
    ControlTruncated,
    /// The frame does not start with [`crate::MAGIC`].
    #[error("bad magic {got:02x?}: the peer does not speak the hatchery protocol")]
    BadMagic {
        /// The first four bytes received.
        got: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: we speak {ours}, the peer speaks {theirs} \
         (host and hatchery-shim come from different builds; rebuild both or set HATCHERY_SHIM)"
    )]
    Version {
        /// [`crate::PROTOCOL_VERSION`].
        ours: u16,
        /// What the peer's header said.
        theirs: u16,
    },
    /// The header names no known message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u16),
    /// Reserved header bits were set.
    #[error("reserved header field is {0:#x}, must be 0")]
    Reserved(u32),
    /// A valid message arrived where another was expected.
    #[error("unexpected message: expected {expected}, got {got:?}")]
    UnexpectedMessage {
        /// What the receiver was waiting for.
        expected: &'static str,
        /// What arrived.
        got: Kind,
    },
    /// A frame carried more fds than its kind allows; all of them were closed.
    #[error("{kind:?} frame carried {count} fds, at most {max} allowed; all were closed")]
    TooManyFds {
        /// Kind of the offending frame.
        kind: Kind,
        /// Fds received.
        count: usize,
        /// [`Kind::max_fds`].
        max: usize,
    },
    /// The body is not a valid encoding of its kind's message.
    #[error("cannot decode {kind:?} body")]
    Decode {
        /// Kind of the frame.
        kind: Kind,
        /// What the decoder said.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// A message could not be encoded (or encodes larger than a frame).
    #[error("cannot encode {kind:?} message")]
    Encode {
        /// Kind of the message.
        kind: Kind,
        /// What the encoder said.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// The deadline passed before the frame could be sent or received.
    #[error("timed out waiting to {op} a frame")]
    Timeout {
        /// `"send"` or `"receive"`.
        op: &'static str,
    },
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A socket call failed.
    #[error("{op} failed")]
    Io {
        /// The failed call.
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

impl ProtocolError {
    /// Whether the error means the peer misbehaved (as opposed to a local failure, a timeout or a
    /// clean close). A host treats such a zygote as compromised and replaces it.
    pub fn is_peer_violation(&self) -> bool {
        !matches!(
            self,
            ProtocolError::Timeout { .. }
                | ProtocolError::Closed
                | ProtocolError::Io { .. }
                | ProtocolError::Encode { .. }
        )
    }
}
