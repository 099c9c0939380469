//! Round trips for every message kind, and golden bytes that pin the wire format.

use arbitrary::{Arbitrary, Unstructured};
use hatchery_protocol::*;
use proptest::prelude::*;

fn sample_request() -> Request {
    Request {
        id: 42,
        reply: 0,
        work: Work::Exec(ExecSpec {
            program: "/usr/bin/convert".into(),
            argv: vec!["convert".into(), "-".into(), "png:-".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
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
        named: vec![FdAssignment {
            index: 3,
            target: 3,
            name: Some("font".into()),
        }],
        placed: vec![Placement {
            index: 0,
            path: "/tmp/input.pdf".into(),
        }],
    }
}

#[test]
fn golden_ping() {
    let bytes = Message::Ping(Ping { nonce: 7 }).encode().unwrap();
    // header: "HTCH", version 8, kind 8, body length 2, reserved 0; body: fixarray(1) [7]
    assert_eq!(
        bytes,
        [b'H', b'T', b'C', b'H', 8, 0, 8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x91, 0x07]
    );
}

#[test]
fn golden_request() {
    let bytes = Message::Request(Box::new(sample_request()))
        .encode()
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "4854434808000500ac00000000000000972a0081a44578656394c4102f7573722f62696e2f636f6e7665727493c407\
         636f6e76657274c4012dc405706e673a2d92c41250415448\
         3d2f7573722f62696e3a2f62696ec40c4c414e473d432e5554462d38c4042f746d7094ce001e8480ce01000000ce04\
         0000009193a6 4e6f66696c6540409381a650617373656400 81a650617373656401 81a650617373656402\
         9193030 3a4666f6e74 919200c40e2f746d702f696e7075742e706466"
            .replace([' ', '\n'], "")
            .replace("\\", "")
    );
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(back, Message::Request(Box::new(sample_request())));
}

#[test]
fn golden_response() {
    let msg = Message::Response(Box::new(Response {
        id: 1,
        outcome: Outcome::Exited(3),
        usage: Usage {
            wall_us: 10,
            user_us: 1,
            sys_us: 2,
            max_rss_kib: 1024,
        },
        spawn_us: 5,
        call: None,
    }));
    let bytes = msg.encode().unwrap();
    assert_eq!(&bytes[..8], b"HTCH\x08\x00\x06\x00");
    assert_eq!(Message::decode(&bytes).unwrap(), msg);
}

#[test]
fn version_mismatch_is_detected_before_the_body() {
    let mut bytes = Message::Hello(Hello {
        shim_version: "0.1.0".into(),
    })
    .encode()
    .unwrap();
    bytes[4] = 6;
    // The body is still valid; the header alone decides.
    match Message::decode(&bytes) {
        Err(ProtocolError::Version { ours: 8, theirs: 6 }) => {}
        other => panic!("expected a version error, got {other:?}"),
    }
}

#[test]
fn oversized_messages_are_refused_at_encode() {
    let big = Message::Request(Box::new(Request {
        work: Work::Call {
            export: "x".into(),
            arg: Bytes(vec![0; MAX_FRAME_LEN]),
        },
        ..sample_request()
    }));
    assert!(matches!(big.encode(), Err(ProtocolError::TooLarge { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every message kind survives encode → decode unchanged.
    #[test]
    fn round_trip(seed in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut u = Unstructured::new(&seed);
        if let Ok(msg) = Message::arbitrary(&mut u) {
            match msg.encode() {
                Ok(bytes) => {
                    let back = Message::decode(&bytes).expect("own encoding decodes");
                    prop_assert_eq!(back, msg);
                }
                Err(ProtocolError::TooLarge { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("encode failed: {e}"))),
            }
        }
    }
}

#[test]
fn round_trip_covers_every_kind() {
    // Deterministic: build one message of each kind from a fixed byte pattern.
    let mut seen = std::collections::HashSet::new();
    for i in 0u32..20_000 {
        let seed: Vec<u8> = (0..256u32)
            .map(|j| (i.wrapping_mul(2654435761) ^ j.wrapping_mul(40503)) as u8)
            .collect();
        if let Ok(msg) = Message::arbitrary(&mut Unstructured::new(&seed)) {
            if let Ok(bytes) = msg.encode() {
                assert_eq!(Message::decode(&bytes).unwrap(), msg);
                seen.insert(msg.kind());
            }
        }
    }
    assert_eq!(seen.len(), Kind::ALL.len(), "kinds covered: {seen:?}");
}

/// hakurei's ops (protocol 5) pinned in their wire form: enums are maps of the variant name,
/// structs are arrays, paths are `bin`.
#[test]
fn golden_hakurei_ops() {
    let hex = |m: &MountOp| -> String {
        rmp_serde::to_vec(m)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let remount = MountOp::Remount {
        target: "/a".into(),
        attrs: 0x9,
    };
    // {"Remount": [bin "/a", 9]}
    assert_eq!(hex(&remount), "81a752656d6f756e7492c4022f6109");
    let overlay = MountOp::Overlay {
        target: "/o".into(),
        lower: vec!["/l".into()],
        upper: OverlayUpper::Ephemeral { size_bytes: 1 },
    };
    // {"Overlay": [bin "/o", [bin "/l"], {"Ephemeral": [1]}]}
    assert_eq!(
        hex(&overlay),
        "81a74f7665726c617993c4022f6f91c4022f6c81a9457068656d6572616c9101"
    );
    let bind = MountOp::Bind {
        source: "/s".into(),
        target: "/t".into(),
        writable: false,
        device: true,
        optional: true,
    };
    // {"Bind": [bin "/s", bin "/t", false, true, true]}
    assert_eq!(hex(&bind), "81a442696e6495c4022f73c4022f74c2c3c3");
    for m in [remount, overlay, bind] {
        let back: MountOp = rmp_serde::from_slice(&rmp_serde::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}

#[test]
fn golden_report() {
    let msg = Message::Report(Box::new(Report {
        denials: vec![RawDenial {
            what: Refused::Port {
                port: 80,
                connect: true,
            },
            count: 2,
        }],
        observed: None,
        dropped: 0,
    }));
    let bytes = msg.encode().unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // header: version 8, kind 16, 15 bytes; body: [[[{"Port": [80, true]}, 2]], nil, 0]
    assert_eq!(
        hex,
        "48544348080010000f000000000000009391 92 81a4506f7274 9250c3 02 c0 00".replace(' ', "")
    );
    assert_eq!(Message::decode(&bytes).unwrap(), msg);
}

#[test]
fn oversized_reports_are_bounded_by_leaving_entries_out() {
    let big = Report {
        denials: (0..400)
            .map(|i| RawDenial {
                what: Refused::Absent {
                    path: Bytes(
                        format!("/some/long/path/that/does/not/exist/{i:0>200}").into_bytes(),
                    ),
                },
                count: 1,
            })
            .collect(),
        observed: None,
        dropped: 3,
    };
    let small = big.clone().bounded(MAX_POOL_REPORT);
    let len = Message::Report(Box::new(small.clone()))
        .encode()
        .unwrap()
        .len();
    assert!(len <= MAX_POOL_REPORT, "{len}");
    assert!(!small.denials.is_empty());
    assert_eq!(
        small.denials.len() as u32 + small.dropped,
        big.denials.len() as u32 + 3
    );
}
