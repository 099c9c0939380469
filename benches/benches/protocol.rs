//! Protocol costs: encode+decode of a typical request, and a send+receive round trip with 3 fds
//! through `Channel` side by side with raw `sendmsg`/`recvmsg` on the same kind of socket.
//!
//! Run: `cargo bench -p hatchery-benches --bench protocol`.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hatchery_protocol::*;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

fn typical_request() -> Message {
    Message::Request(Box::new(Request {
        id: 42,
        reply: 0,
        work: Work::Exec(ExecSpec {
            program: "/usr/bin/convert".into(),
            argv: vec![
                "convert".into(),
                "-".into(),
                "-resize".into(),
                "50%".into(),
                "png:-".into(),
            ],
            env: vec![
                "PATH=/usr/bin:/bin".into(),
                "LANG=C.UTF-8".into(),
                "HOME=/tmp".into(),
            ],
            cwd: Some("/tmp".into()),
        }),
        limits: RequestLimits {
            wall_time_us: Some(2_000_000),
            output_bytes: Some(16 << 20),
            tmp_bytes: Some(64 << 20),
            rlimits: vec![Rlimit {
                resource: Resource::Nofile,
                soft: 64,
                hard: 64,
            }],
        },
        stdio: [FdSlot::Passed(0), FdSlot::Passed(1), FdSlot::Passed(2)],
        named: vec![],
        placed: vec![],
    }))
}

fn codec(c: &mut Criterion) {
    let msg = typical_request();
    let mut buf = Vec::new();
    let mut g = c.benchmark_group("codec");
    g.bench_function(BenchmarkId::new("encode+decode", "typical-request"), |b| {
        b.iter(|| {
            black_box(&msg).encode_into(&mut buf).unwrap();
            black_box(Message::decode(&buf).unwrap());
        })
    });
    g.bench_function(BenchmarkId::new("encode", "typical-request"), |b| {
        b.iter(|| black_box(&msg).encode_into(&mut buf).unwrap())
    });
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let files: Vec<OwnedFd> = (0..3)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
    let msg = typical_request();
    let mut g = c.benchmark_group("round-trip-3-fds");

    let (mut a, mut b) = Channel::pair().unwrap();
    g.bench_function(BenchmarkId::new("channel", "typical-request"), |bench| {
        bench.iter(|| {
            a.send(&msg, &borrowed, None).unwrap();
            black_box(b.recv(None).unwrap());
        })
    });

    let (x, y) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let frame = msg.encode().unwrap();
    let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let mut rbuf = vec![0u8; 4096];
    let mut cbuf = nix::cmsg_space!([RawFd; 3]);
    g.bench_function(
        BenchmarkId::new("raw-sendmsg-recvmsg", "same-bytes"),
        |bench| {
            bench.iter(|| {
                sendmsg::<()>(
                    x.as_raw_fd(),
                    &[IoSlice::new(&frame)],
                    &[ControlMessage::ScmRights(&raw)],
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
                let mut iov = [IoSliceMut::new(&mut rbuf)];
                let m = recvmsg::<()>(
                    y.as_raw_fd(),
                    &mut iov,
                    Some(&mut cbuf),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .unwrap();
                for c in m.cmsgs().unwrap() {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for fd in fds {
                            // Close what arrived, as Channel does by dropping.
                            #[allow(unsafe_code)]
                            // SAFETY: the kernel just installed `fd` for us; we own it.
                            drop(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, codec, round_trip);
criterion_main!(benches);
