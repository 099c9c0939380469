//! Pure framing: a fixed 16-byte header followed by a MessagePack body. No I/O.
//!
//! ```text
//!  0        4        6        8            12           16
//!  +--------+--------+--------+------------+------------+----------------------+
//!  | "HTCH" | version|  kind  | body len   | reserved=0 | body (len bytes)     |
//!  +--------+--------+--------+------------+------------+----------------------+
//!   magic    u16 LE   u16 LE   u32 LE       u32 LE       rmp-serde, compact
//! ```
//!
//! One frame is exactly one `SOCK_SEQPACKET` datagram, so a header whose length disagrees with
//! the datagram's size is an error, never a reason to wait for more bytes. Every length is checked
//! against [`MAX_FRAME_LEN`] before anything is allocated for it.

use crate::error::ProtocolError;
pub use crate::kind::{Kind, MAX_PLAN_FDS, MAX_REQUEST_FDS};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"HTCH";

/// The protocol version this build speaks. Peers with another version are refused at the first
/// frame with [`ProtocolError::Version`], before any body is decoded.
pub const PROTOCOL_VERSION: u16 = 8;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 16;

/// Largest frame (header + body) either side sends or accepts.
///
/// It stays below the default `SO_SNDBUF` of a Unix socket (212,992 bytes on Linux), so one
/// frame is always one datagram. Larger payloads (inputs, outputs, file contents) travel as
/// memfds, never inline.
pub const MAX_FRAME_LEN: usize = 128 * 1024;

/// Largest body a frame may carry.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Most fds the kernel passes in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub const KERNEL_MAX_FDS: usize = 253;

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the body holds.
    pub kind: Kind,
    /// Body length in bytes, at most [`MAX_BODY_LEN`].
    pub len: u32,
}

impl Header {
    /// Serialises the header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Parses and validates a header: magic, version, kind, reserved bits and length limit, in
    /// that order.
    pub fn parse(bytes: &[u8]) -> Result<Header, ProtocolError> {
        let Some(bytes) = bytes.get(..HEADER_LEN) else {
            return Err(ProtocolError::Truncated {
                expected: HEADER_LEN,
                got: bytes.len(),
            });
        };
        if bytes[0..4] != MAGIC {
            return Err(ProtocolError::BadMagic {
                got: [bytes[0], bytes[1], bytes[2], bytes[3]],
            });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        let kind_raw = u16::from_le_bytes([bytes[6], bytes[7]]);
        let kind = Kind::from_wire(kind_raw).ok_or(ProtocolError::UnknownKind(kind_raw))?;
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let reserved = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        if reserved != 0 {
            return Err(ProtocolError::Reserved(reserved));
        }
        if len as usize > MAX_BODY_LEN {
            return Err(ProtocolError::TooLarge {
                len: len as usize + HEADER_LEN,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(Header { kind, len })
    }
}

/// Splits one whole datagram into its header and body, checking that the header's length
/// matches the datagram exactly.
pub fn split_frame(datagram: &[u8]) -> Result<(Header, &[u8]), ProtocolError> {
    let header = Header::parse(datagram)?;
    let body = &datagram[HEADER_LEN..];
    let want = header.len as usize;
    if body.len() < want {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN + want,
            got: datagram.len(),
        });
    }
    if body.len() > want {
        return Err(ProtocolError::TrailingBytes {
            expected: HEADER_LEN + want,
            got: datagram.len(),
        });
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_golden_bytes() {
        let h = Header {
            kind: Kind::Request,
            len: 0x0102,
        };
        assert_eq!(
            h.to_bytes(),
            [b'H', b'T', b'C', b'H', 8, 0, 5, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn header_rejects_in_order() {
        let good = Header {
            kind: Kind::Ping,
            len: 3,
        }
        .to_bytes();
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(
            Header::parse(&b),
            Err(ProtocolError::BadMagic { .. })
        ));
        let mut b = good;
        b[4] = 9;
        assert!(matches!(
            Header::parse(&b),
            Err(ProtocolError::Version { ours: 8, theirs: 9 })
        ));
        let mut b = good;
        b[6] = 0xee;
        assert!(matches!(
            Header::parse(&b),
            Err(ProtocolError::UnknownKind(0xee))
        ));
        let mut b = good;
        b[13] = 1;
        assert!(matches!(Header::parse(&b), Err(ProtocolError::Reserved(_))));
        let mut b = good;
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::parse(&b),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            Header::parse(&good[..7]),
            Err(ProtocolError::Truncated {
                expected: 16,
                got: 7
            })
        ));
    }

    #[test]
    fn split_checks_exact_length() {
        let mut frame = Header {
            kind: Kind::Ping,
            len: 2,
        }
        .to_bytes()
        .to_vec();
        frame.extend_from_slice(&[1, 2]);
        assert_eq!(split_frame(&frame).unwrap().1, &[1, 2]);
        assert!(matches!(
            split_frame(&frame[..17]),
            Err(ProtocolError::Truncated { .. })
        ));
        frame.push(3);
        assert!(matches!(
            split_frame(&frame),
            Err(ProtocolError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn every_kind_round_trips_its_wire_value() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_wire(k as u16), Some(k));
        }
        assert_eq!(Kind::from_wire(0), None);
    }
}
