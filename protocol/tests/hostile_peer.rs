//! A hostile peer on the other end of a real socketpair. Every case must give the right error and
//! leave the receiver's fd table exactly as it was.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hatchery_protocol::*;

/// Fd counting is process-wide; these tests must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(5))
}

fn dev_nulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

/// Runs `attack` against a fresh channel pair and checks the receiver's error and fd count.
fn check(
    name: &str,
    attack: impl FnOnce(&mut Channel),
    expect: impl FnOnce(&ProtocolError) -> bool,
) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, mut evil) = Channel::pair().unwrap();
    let before = open_fds();
    attack(&mut evil);
    let err = host.recv(soon()).expect_err(name);
    assert!(expect(&err), "{name}: unexpected error {err:?}");
    drop(evil);
    // The attacker's own fds are gone with `attack`; only the receiver's table counts.
    assert_eq!(open_fds(), before - 1, "{name}: receiver leaked fds");
}

fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut f = Header {
        kind,
        len: body.len() as u32,
    }
    .to_bytes()
    .to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn oversized_datagram() {
    check(
        "oversized",
        |evil| {
            let mut f = frame(Kind::Ping, &[0x91, 7]);
            f.resize(MAX_FRAME_LEN + 100, 0);
            evil.send_frame(&f, &[], soon()).unwrap();
        },
        |e| matches!(e, ProtocolError::TooLarge { .. }),
    );
}

#[test]
fn oversized_header_claim() {
    check(
        "header claims 4 GiB",
        |evil| {
            let mut f = frame(Kind::Ping, &[0x91, 7]);
            f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            evil.send_frame(&f, &[], soon()).unwrap();
        },
        |e| matches!(e, ProtocolError::TooLarge { .. }),
    );
}

#[test]
fn truncated_frame() {
    check(
        "truncated",
        |evil| {
            let mut f = frame(Kind::Ping, &[0x91, 7]);
            f[8] = 200;
            evil.send_frame(&f, &[], soon()).unwrap();
        },
        |e| matches!(e, ProtocolError::Truncated { .. }),
    );
    check(
        "half a header",
        |evil| {
            evil.send_frame(b"HTCH\x01", &[], soon()).unwrap();
        },
        |e| {
            matches!(
                e,
                ProtocolError::Truncated {
                    expected: 16,
                    got: 5
                }
            )
        },
    );
}

#[test]
fn bad_magic_and_version() {
    check(
        "magic",
        |evil| {
            evil.send_frame(b"GET / HTTP/1.1\r\n\r\n", &[], soon())
                .unwrap()
        },
        |e| matches!(e, ProtocolError::BadMagic { .. }),
    );
    check(
        "version",
        |evil| {
            let mut f = frame(Kind::Ping, &[0x91, 7]);
            f[4] = 77;
            evil.send_frame(&f, &[], soon()).unwrap();
        },
        |e| matches!(e, ProtocolError::Version { theirs: 77, .. }),
    );
}

#[test]
fn garbage_bodies() {
    for (i, body) in [
        &[0xc1u8][..],                   // never-used marker
        &[0x91, 0xc4, 0xff],             // bin with missing bytes
        &[0xdd, 0xff, 0xff, 0xff, 0xff], // array of 4 billion elements
        &[0x91, 0x07, 0x00],             // trailing bytes
        &[],                             // empty
    ]
    .iter()
    .enumerate()
    {
        check(
            &format!("garbage {i}"),
            |evil| {
                evil.send_frame(&frame(Kind::Ping, body), &[], soon())
                    .unwrap()
            },
            |e| {
                matches!(
                    e,
                    ProtocolError::Decode {
                        kind: Kind::Ping,
                        ..
                    }
                )
            },
        );
    }
    check(
        "garbage request with fds",
        |evil| {
            let fds = dev_nulls(5);
            let b: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            evil.send_frame(&frame(Kind::Request, &[0xdd, 0, 0, 0, 9]), &b, soon())
                .unwrap();
        },
        |e| {
            matches!(
                e,
                ProtocolError::Decode {
                    kind: Kind::Request,
                    ..
                }
            )
        },
    );
}

#[test]
fn fd_floods() {
    check(
        "253 fds on a ping",
        |evil| {
            let fds = dev_nulls(253);
            let b: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            evil.send_frame(
                &Message::Ping(Ping { nonce: 1 }).encode().unwrap(),
                &b,
                soon(),
            )
            .unwrap();
        },
        |e| {
            matches!(
                e,
                ProtocolError::TooManyFds {
                    kind: Kind::Ping,
                    count: 253,
                    max: 0
                }
            )
        },
    );
    check(
        "253 fds on a request",
        |evil| {
            let fds = dev_nulls(253);
            let b: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            evil.send_frame(&frame(Kind::Request, &[]), &b, soon())
                .unwrap();
        },
        |e| {
            matches!(
                e,
                ProtocolError::TooManyFds {
                    kind: Kind::Request,
                    count: 253,
                    ..
                }
            )
        },
    );
}

#[test]
fn wrong_kind() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, mut evil) = Channel::pair().unwrap();
    let before = open_fds();
    evil.send(
        &Message::Pong(Pong {
            nonce: 1,
            running: 0,
        }),
        &[],
        soon(),
    )
    .unwrap();
    let err = host.recv_expect(Kind::Ready, soon()).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::UnexpectedMessage {
            expected: "Ready",
            got: Kind::Pong
        }
    ));
    assert!(err.is_peer_violation());
    assert_eq!(open_fds(), before);
}

#[test]
fn close_mid_conversation_and_timeouts() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, evil) = Channel::pair().unwrap();
    // Nothing sent: the deadline fires.
    let t = Instant::now();
    let err = host
        .recv(Some(Instant::now() + Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(err, ProtocolError::Timeout { op: "receive" }),
        "{err:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A header alone, then the peer goes away.
    evil.send_frame(&frame(Kind::Response, &[])[..10], &[], soon())
        .unwrap();
    drop(evil);
    assert!(matches!(
        host.recv(soon()),
        Err(ProtocolError::Truncated { .. })
    ));
    assert!(matches!(host.recv(soon()), Err(ProtocolError::Closed)));
    assert!(matches!(host.recv(None), Err(ProtocolError::Closed)));
    let err = host
        .send(&Message::Ping(Ping { nonce: 1 }), &[], soon())
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Closed), "{err:?}");
}

#[test]
fn send_blocks_until_deadline_when_peer_never_reads() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, _evil) = Channel::pair().unwrap();
    let msg = Message::Ping(Ping { nonce: 1 });
    let deadline = Some(Instant::now() + Duration::from_millis(100));
    let err = loop {
        if let Err(e) = host.send(&msg, &[], deadline) {
            break e;
        }
    };
    assert!(
        matches!(err, ProtocolError::Timeout { op: "send" }),
        "{err:?}"
    );
}

#[test]
fn fds_arrive_in_order_and_cloexec() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, mut guest) = Channel::pair().unwrap();
    let fds = dev_nulls(3);
    let b: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let req = Message::Request(Box::new(Request {
        id: 9,
        reply: 0,
        work: Work::Call {
            export: "noop".into(),
            arg: Bytes(vec![1, 2, 3]),
        },
        limits: RequestLimits::default(),
        stdio: [FdSlot::Passed(0), FdSlot::Passed(1), FdSlot::Null],
        named: vec![],
        placed: vec![],
    }));
    host.send(&req, &b, soon()).unwrap();
    let got = guest.recv(soon()).unwrap();
    assert_eq!(got.message, req);
    assert_eq!(got.fds.len(), 3);
    for fd in &got.fds {
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd is not close-on-exec"
        );
    }
}

#[test]
fn bounded_channels_refuse_larger_frames() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (host, mut evil) = Channel::pair().unwrap();
    let mut host = host.with_max_frame(64);
    let mut f = frame(Kind::Ping, &[0x91, 7]);
    f.resize(200, 0);
    evil.send_frame(&f, &[], soon()).unwrap();
    assert!(matches!(
        host.recv(soon()),
        Err(ProtocolError::TooLarge { max: 64, .. })
    ));
    evil.send(&Message::Ping(Ping { nonce: 3 }), &[], soon())
        .unwrap();
    assert_eq!(
        host.recv(soon()).unwrap().message,
        Message::Ping(Ping { nonce: 3 })
    );
}
