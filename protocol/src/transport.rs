//! Transport: one frame and its fds per `SOCK_SEQPACKET` datagram. The only I/O in this crate.
//!
//! Guarantees, whatever the peer does:
//! - fds arrive with `O_CLOEXEC` (`MSG_CMSG_CLOEXEC`) and are owned ([`OwnedFd`]) from the moment
//!   the kernel hands them over, so every error path closes them;
//! - a datagram larger than [`MAX_FRAME_LEN`] (`MSG_TRUNC`) or with cut control data
//!   (`MSG_CTRUNC`) is an error, as is a frame with more fds than its kind allows;
//! - receiving uses one buffer owned by the [`Channel`], allocated once;
//! - every call takes a deadline; `None` means "wait as long as it takes" and is meant for
//!   processes that have nothing else to do (the guest).
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::error::ProtocolError;
use crate::frame::{split_frame, KERNEL_MAX_FDS, MAX_FRAME_LEN};
use crate::message::Message;

/// A message with the fds that came with it, in order.
#[derive(Debug)]
pub struct Received {
    /// The decoded message.
    pub message: Message,
    /// Its fds, close-on-exec, closed when dropped.
    pub fds: Vec<OwnedFd>,
}

/// One end of a `SOCK_SEQPACKET` Unix socket speaking the hatchery protocol.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    max_frame: usize,
    recv_buf: Vec<u8>,
    cmsg_buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), ProtocolError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|source| ProtocolError::Io {
            op: "socketpair",
            source,
        })?;
        Ok((Channel::new(a), Channel::new(b)))
    }

    /// Wraps a connected `SOCK_SEQPACKET` socket.
    pub fn new(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            max_frame: MAX_FRAME_LEN,
            recv_buf: Vec::new(),
            cmsg_buf: Vec::new(),
            send_buf: Vec::new(),
        }
    }

    /// Accepts frames of at most `max` bytes (clamped to [`MAX_FRAME_LEN`]); larger ones are
    /// [`ProtocolError::TooLarge`]. The receive buffer is this size, so a channel that only ever
    /// gets small messages (a request's reply socket) costs little memory.
    pub fn with_max_frame(mut self, max: usize) -> Channel {
        self.max_frame = max.clamp(crate::HEADER_LEN, MAX_FRAME_LEN);
        self.recv_buf = Vec::new();
        self
    }

    /// Gives the socket back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Encodes and sends `message` with `fds` as one datagram.
    pub fn send(
        &mut self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        let kind = message.kind();
        if fds.len() > kind.max_fds() {
            return Err(ProtocolError::TooManyFds {
                kind,
                count: fds.len(),
                max: kind.max_fds(),
            });
        }
        let mut buf = std::mem::take(&mut self.send_buf);
        let res = message
            .encode_into(&mut buf)
            .and_then(|()| self.send_frame(&buf, fds, deadline));
        self.send_buf = buf;
        res
    }

    /// Sends raw bytes as one datagram. The frame is not checked: tests use this to play a
    /// hostile peer.
    pub fn send_frame(
        &self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        let iov = [IoSlice::new(frame)];
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    wait_ready(self.fd.as_fd(), PollFlags::POLLOUT, deadline, "send")?
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(ProtocolError::Closed)
                }
                Err(source) => {
                    return Err(ProtocolError::Io {
                        op: "sendmsg",
                        source,
                    })
                }
            }
        }
    }

    /// Waits for one datagram and decodes it. On every error, every fd that arrived is closed.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<Received, ProtocolError> {
        if self.recv_buf.len() != self.max_frame + 1 {
            self.recv_buf = vec![0u8; self.max_frame + 1];
        }
        if self.cmsg_buf.is_empty() {
            self.cmsg_buf = nix::cmsg_space!([RawFd; KERNEL_MAX_FDS]);
        }
        loop {
            let mut iov = [IoSliceMut::new(&mut self.recv_buf)];
            let res = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg_buf),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match res {
                Ok(msg) => msg,
                Err(Errno::EAGAIN) => {
                    wait_ready(self.fd.as_fd(), PollFlags::POLLIN, deadline, "receive")?;
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ProtocolError::Closed),
                Err(source) => {
                    return Err(ProtocolError::Io {
                        op: "recvmsg",
                        source,
                    })
                }
            };
            // Take ownership of every fd first, so that each return below closes them.
            let mut fds = Vec::new();
            let cmsgs = msg.cmsgs().map_err(|source| ProtocolError::Io {
                op: "recvmsg control data",
                source,
            })?;
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    for fd in raw {
                        // SAFETY: the kernel just installed `fd` in our table for this message
                        // (SCM_RIGHTS); nothing else refers to it, so we are its only owner.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            let flags = msg.flags;
            let len = msg.bytes;
            if flags.contains(MsgFlags::MSG_CTRUNC) {
                return Err(ProtocolError::ControlTruncated);
            }
            if flags.contains(MsgFlags::MSG_TRUNC) || len > self.max_frame {
                return Err(ProtocolError::TooLarge {
                    len,
                    max: self.max_frame,
                });
            }
            if len == 0 {
                // SEQPACKET: a zero-length read is the peer's orderly shutdown.
                return Err(ProtocolError::Closed);
            }
            let (header, body) = split_frame(&self.recv_buf[..len])?;
            if fds.len() > header.kind.max_fds() {
                return Err(ProtocolError::TooManyFds {
                    kind: header.kind,
                    count: fds.len(),
                    max: header.kind.max_fds(),
                });
            }
            let message = Message::decode_body(header.kind, body)?;
            return Ok(Received { message, fds });
        }
    }
}

impl Channel {
    /// Receives one message and checks it is of kind `expected`; anything else is
    /// [`ProtocolError::UnexpectedMessage`] (its fds are closed).
    pub fn recv_expect(
        &mut self,
        expected: crate::Kind,
        deadline: Option<Instant>,
    ) -> Result<Received, ProtocolError> {
        let received = self.recv(deadline)?;
        let got = received.message.kind();
        if got != expected {
            return Err(ProtocolError::UnexpectedMessage {
                expected: expected.name(),
                got,
            });
        }
        Ok(received)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Polls `fd` for `events` until `deadline`.
fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    op: &'static str,
) -> Result<(), ProtocolError> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ProtocolError::Timeout { op });
                }
                // Round up so we never spin on a sub-millisecond remainder.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut pfd = [PollFd::new(fd, events)];
        match poll(&mut pfd, timeout) {
            Ok(0) => continue, // re-check the deadline
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(source) => return Err(ProtocolError::Io { op: "poll", source }),
        }
    }
}
