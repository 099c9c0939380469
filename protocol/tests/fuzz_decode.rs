//! Fuzz harness for the decoder, on the stable toolchain (proptest-driven).
//!
//! Inputs are random bytes, and valid frames of random messages with mutations (bit flips, byte
//! overwrites, truncation, extension, length-field edits). The decoder must return `Ok` or a
//! `ProtocolError`, never panic, and a frame that decodes must re-encode to the same message.
//!
//! Short run (the test suite): 3,000 cases per strategy. Long run:
//! `HATCHERY_FUZZ_CASES=5000000 cargo test --release -p hatchery-protocol --test fuzz_decode`.

use arbitrary::{Arbitrary, Unstructured};
use hatchery_protocol::*;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("HATCHERY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = Message::decode(bytes) {
        // Whatever decodes must be a message we could have sent.
        let again = msg
            .encode()
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(Message::decode(&again).unwrap(), msg);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Length(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        any::<u32>().prop_map(Mutation::Length),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), kind in 0usize..Kind::ALL.len()) {
        // Raw garbage, and garbage behind a valid header of each kind.
        check_decode(&bytes)?;
        let mut framed = Header { kind: Kind::ALL[kind], len: bytes.len() as u32 }.to_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        check_decode(&framed)?;
    }

    #[test]
    fn mutated_frames(seed in proptest::collection::vec(any::<u8>(), 0..1024),
                      muts in proptest::collection::vec(mutation(), 1..6)) {
        let Ok(msg) = Message::arbitrary(&mut Unstructured::new(&seed)) else { return Ok(()) };
        let Ok(mut bytes) = msg.encode() else { return Ok(()) };
        for m in muts {
            match m {
                Mutation::Flip(i, b) => { let n = bytes.len(); bytes[i % n] ^= 1 << b; }
                Mutation::Set(i, v) => { let n = bytes.len(); bytes[i % n] = v; }
                Mutation::Truncate(i) => { let n = bytes.len(); bytes.truncate(i % (n + 1)); }
                Mutation::Extend(extra) => bytes.extend_from_slice(&extra),
                Mutation::Length(l) => if bytes.len() >= 12 { bytes[8..12].copy_from_slice(&l.to_le_bytes()) },
            }
            if bytes.is_empty() { break; }
        }
        check_decode(&bytes)?;
    }
}
