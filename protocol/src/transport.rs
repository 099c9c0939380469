//! Transport: one frame and its fds per `SOCK_SEQPACKET` datagram. The only I/O in this crate.
//!
//! Guarantees, whatever the peer does:
//! - fds arrive with `O_CLOEXEC` (`MSG_CMSG_CLOEXEC`) and are owned ([`OwnedFd`]) from the moment
//!   the kernel hands them over, so every error path closes them;
//! - a datagram larger than [`MAX_FRAME_LEN`] (`MSG_TRUNC`) or with cut control data
//!   (`MSG_CTRUNC`) is an error, as is a frame with more fds than its kind allows;
//! - receiving uses one buffer owned by the [`Channel`] (or its [`Receiver`]), allocated once;
//! - every call takes a deadline; `None` means "wait as long as it takes" and is meant for
//!   processes that have nothing else to do (the guest).
//!
//! A [`Channel`] can be [`split`](Channel::split) into a [`Sender`] and a [`Receiver`] that
//! share the socket (an `Arc<OwnedFd>`, closed when both are dropped), so that one side of a
//! program sends while another receives, each with its own lock if it needs one:
//!
//! ```text
//!  Channel { fd, send buffer, receive buffers } ──split()──▶ Sender   { Arc<fd>, send buffer }
//!                                                          Receiver { Arc<fd>, receive buffers }
//! ```
//!
//! The halves send and receive exactly what the channel would: same frames, same checks.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
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
    rx: RecvBuffers,
    send_buf: Vec<u8>,
}

/// The sending half of a [`Channel`] ([`Channel::split`]): [`send`](Sender::send) and
/// [`send_frame`](Sender::send_frame) as on the channel. The socket closes when both halves
/// are dropped.
#[derive(Debug)]
pub struct Sender {
    fd: Arc<OwnedFd>,
    send_buf: Vec<u8>,
}

/// The receiving half of a [`Channel`] ([`Channel::split`]): [`recv`](Receiver::recv) and
/// [`recv_expect`](Receiver::recv_expect) as on the channel, with its buffers and frame limit.
/// The socket closes when both halves are dropped.
#[derive(Debug)]
pub struct Receiver {
    fd: Arc<OwnedFd>,
    rx: RecvBuffers,
}

/// What receiving needs besides the socket: the frame limit and the buffers (allocated on the
/// first receive, then reused).
#[derive(Debug)]
struct RecvBuffers {
    max_frame: usize,
    recv_buf: Vec<u8>,
    cmsg_buf: Vec<u8>,
}

impl RecvBuffers {
    fn new() -> RecvBuffers {
        RecvBuffers {
            max_frame: MAX_FRAME_LEN,
            recv_buf: Vec::new(),
            cmsg_buf: Vec::new(),
        }
    }

    fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max.clamp(crate::HEADER_LEN, MAX_FRAME_LEN);
        self.recv_buf = Vec::new();
    }

    /// Waits for one datagram on `fd` and decodes it. On every error, every fd that arrived is
    /// closed.
    fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<Received, ProtocolError> {
        if self.recv_buf.len() != self.max_frame + 1 {
            self.recv_buf = vec![0u8; self.max_frame + 1];
        }
        if self.cmsg_buf.is_empty() {
            self.cmsg_buf = nix::cmsg_space!([RawFd; KERNEL_MAX_FDS]);
        }
        // A peer that closed with our messages unread leaves a one-time ECONNRESET on this
        // socket, reported before the frames it sent us first (the kernel checks the socket's
        // error before its queue): look at the queue once more before calling it closed.
        let mut reset_seen = false;
        loop {
            let mut iov = [IoSliceMut::new(&mut self.recv_buf)];
            let res = recvmsg::<()>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg_buf),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match res {
                Ok(msg) => msg,
                Err(Errno::EAGAIN) => {
                    wait_ready(fd, PollFlags::POLLIN, deadline, "receive")?;
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
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

    /// [`recv`](RecvBuffers::recv), then checks the message is of kind `expected`.
    fn recv_expect(
        &mut self,
        fd: BorrowedFd<'_>,
        expected: crate::Kind,
        deadline: Option<Instant>,
    ) -> Result<Received, ProtocolError> {
        let received = self.recv(fd, deadline)?;
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

/// Encodes `message` into `buf` (reused between sends) and sends it with `fds` on `fd`.
fn send_message(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
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
    message
        .encode_into(buf)
        .and_then(|()| send_frame_on(fd, buf, fds, deadline))
}

/// Sends raw bytes with `fds` as one datagram on `fd`.
fn send_frame_on(
    fd: BorrowedFd<'_>,
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
            fd.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) => wait_ready(fd, PollFlags::POLLOUT, deadline, "send")?,
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
            rx: RecvBuffers::new(),
            send_buf: Vec::new(),
        }
    }

    /// Accepts frames of at most `max` bytes (clamped to [`MAX_FRAME_LEN`]); larger ones are
    /// [`ProtocolError::TooLarge`]. The receive buffer is this size, so a channel that only ever
    /// gets small messages (a request's reply socket) costs little memory.
    pub fn with_max_frame(mut self, max: usize) -> Channel {
        self.rx.set_max_frame(max);
        self
    }

    /// Gives the socket back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Splits the channel into a [`Sender`] and a [`Receiver`] sharing its socket (an
    /// `Arc<OwnedFd>`: it closes when both are dropped). The receiver keeps the channel's frame
    /// limit. Costs one small allocation (the `Arc`); nothing is sent or received.
    pub fn split(self) -> (Sender, Receiver) {
        let fd = Arc::new(self.fd);
        (
            Sender {
                fd: fd.clone(),
                send_buf: self.send_buf,
            },
            Receiver { fd, rx: self.rx },
        )
    }

    /// Encodes and sends `message` with `fds` as one datagram.
    pub fn send(
        &mut self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        send_message(self.fd.as_fd(), &mut self.send_buf, message, fds, deadline)
    }

    /// Sends raw bytes as one datagram. The frame is not checked: tests use this to play a
    /// hostile peer.
    pub fn send_frame(
        &self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        send_frame_on(self.fd.as_fd(), frame, fds, deadline)
    }

    /// Waits for one datagram and decodes it. On every error, every fd that arrived is closed.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<Received, ProtocolError> {
        self.rx.recv(self.fd.as_fd(), deadline)
    }

    /// Receives one message and checks it is of kind `expected`; anything else is
    /// [`ProtocolError::UnexpectedMessage`] (its fds are closed).
    pub fn recv_expect(
        &mut self,
        expected: crate::Kind,
        deadline: Option<Instant>,
    ) -> Result<Received, ProtocolError> {
        self.rx.recv_expect(self.fd.as_fd(), expected, deadline)
    }
}

impl Sender {
    /// Encodes and sends `message` with `fds` as one datagram ([`Channel::send`]).
    pub fn send(
        &mut self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        send_message(self.fd.as_fd(), &mut self.send_buf, message, fds, deadline)
    }

    /// Sends raw bytes as one datagram, unchecked ([`Channel::send_frame`]).
    pub fn send_frame(
        &self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<(), ProtocolError> {
        send_frame_on(self.fd.as_fd(), frame, fds, deadline)
    }
}

impl Receiver {
    /// Accepts frames of at most `max` bytes, as [`Channel::with_max_frame`].
    pub fn with_max_frame(mut self, max: usize) -> Receiver {
        self.rx.set_max_frame(max);
        self
    }

    /// Waits for one datagram and decodes it ([`Channel::recv`]). On every error, every fd that
    /// arrived is closed.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<Received, ProtocolError> {
        self.rx.recv(self.fd.as_fd(), deadline)
    }

    /// Receives one message of kind `expected` ([`Channel::recv_expect`]).
    pub fn recv_expect(
        &mut self,
        expected: crate::Kind,
        deadline: Option<Instant>,
    ) -> Result<Received, ProtocolError> {
        self.rx.recv_expect(self.fd.as_fd(), expected, deadline)
    }
}

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Receiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::{Cancel, Ping, Pong, Worker};
    use crate::Kind;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(5))
    }

    fn ping(nonce: u64) -> Message {
        Message::Ping(Ping { nonce })
    }

    #[test]
    fn halves_talk_to_a_channel_both_ways() {
        let (a, mut b) = Channel::pair().unwrap();
        let (mut tx, mut rx) = a.split();
        tx.send(&ping(7), &[], soon()).unwrap();
        assert_eq!(b.recv(soon()).unwrap().message, ping(7));
        let pong = Message::Pong(Pong {
            nonce: 7,
            running: 0,
        });
        b.send(&pong, &[], soon()).unwrap();
        assert_eq!(rx.recv(soon()).unwrap().message, pong);
        b.send(&ping(1), &[], soon()).unwrap();
        assert!(matches!(
            rx.recv_expect(Kind::Pong, soon()),
            Err(ProtocolError::UnexpectedMessage {
                got: Kind::Ping,
                ..
            })
        ));
    }

    #[test]
    fn halves_send_the_channels_bytes() {
        // Same frame on the wire: what a sender sends, a raw receive sees byte for byte.
        let msg = Message::Cancel(Cancel { id: 42 });
        let mut expected = Vec::new();
        msg.encode_into(&mut expected).unwrap();
        let (a, b) = Channel::pair().unwrap();
        let (mut tx, _rx) = a.split();
        tx.send(&msg, &[], soon()).unwrap();
        let mut buf = vec![0u8; 256];
        let n = nix::sys::socket::recv(b.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], &expected[..]);
        // And raw frames from a sender decode on a receiver.
        let (c, d) = Channel::pair().unwrap();
        let (_tx, mut rx) = c.split();
        d.send_frame(&expected, &[], soon()).unwrap();
        assert_eq!(rx.recv(soon()).unwrap().message, msg);
    }

    #[test]
    fn fds_travel_through_the_halves() {
        let (a, b) = Channel::pair().unwrap();
        let (mut tx, _a_rx) = a.split();
        let (_b_tx, mut rx) = b.split();
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let msg = Message::Worker(Worker { output_bytes: None });
        tx.send(&msg, &[file.as_fd()], soon()).unwrap();
        let got = rx.recv(soon()).unwrap();
        assert_eq!(got.message, msg);
        assert_eq!(got.fds.len(), 1);
        // Too many fds for the kind: refused before anything is sent.
        assert!(matches!(
            tx.send(&ping(1), &[file.as_fd()], soon()),
            Err(ProtocolError::TooManyFds { .. })
        ));
    }

    #[test]
    fn the_socket_closes_when_both_halves_are_gone() {
        let (a, mut b) = Channel::pair().unwrap();
        let (tx, rx) = a.split();
        drop(tx);
        // The receiver alone keeps the socket open: the peer sees no hang-up.
        assert!(matches!(
            b.recv(Some(Instant::now())),
            Err(ProtocolError::Timeout { .. })
        ));
        drop(rx);
        assert!(matches!(b.recv(soon()), Err(ProtocolError::Closed)));
    }

    #[test]
    fn frames_sent_before_a_reset_close_are_still_received() {
        let (mut a, mut b) = Channel::pair().unwrap();
        // `a` sends, `b` answers and closes without reading: `a` gets the answer, then Closed.
        a.send(&ping(1), &[], soon()).unwrap();
        b.send(&ping(2), &[], soon()).unwrap();
        drop(b);
        assert_eq!(a.recv(soon()).unwrap().message, ping(2));
        assert!(matches!(a.recv(soon()), Err(ProtocolError::Closed)));
    }

    #[test]
    fn a_receiver_keeps_or_sets_its_frame_limit() {
        let big = Message::Cancel(Cancel { id: u64::MAX });
        let mut frame = Vec::new();
        big.encode_into(&mut frame).unwrap();
        let limit = frame.len() - 1;
        // Set on the channel before the split, or on the receiver after it.
        let (a, b) = Channel::pair().unwrap();
        let (_tx, mut rx) = a.with_max_frame(limit).split();
        b.send_frame(&frame, &[], soon()).unwrap();
        assert!(matches!(
            rx.recv(soon()),
            Err(ProtocolError::TooLarge { max, .. }) if max == limit
        ));
        let (c, d) = Channel::pair().unwrap();
        let (_tx, rx) = c.split();
        let mut rx = rx.with_max_frame(limit);
        d.send_frame(&frame, &[], soon()).unwrap();
        assert!(matches!(
            rx.recv(soon()),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_receive_times_out_at_its_deadline() {
        let (a, _b) = Channel::pair().unwrap();
        let (_tx, mut rx) = a.split();
        assert!(matches!(
            rx.recv(Some(Instant::now() + Duration::from_millis(10))),
            Err(ProtocolError::Timeout { op: "receive" })
        ));
    }
}
