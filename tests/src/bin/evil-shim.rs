//! A hostile stand-in for `hatchery-shim` (started through `HATCHERY_SHIM`): it completes the
//! handshake, reports Ready, then floods the host with Pongs nobody asked for.

use std::os::fd::{FromRawFd, OwnedFd};

use hatchery_protocol::{Channel, Features, Hello, Message, Pong, Ready};

fn main() {
    // SAFETY: the host's fork boundary puts the control socket on fd 3, owned by nobody else.
    #[allow(unsafe_code)]
    let mut chan = Channel::new(unsafe { OwnedFd::from_raw_fd(3) });
    let hello = Message::Hello(Hello {
        shim_version: env!("CARGO_PKG_VERSION").into(),
    });
    if chan.send(&hello, &[], None).is_err() || chan.recv(None).is_err() {
        return;
    }
    let ready = Message::Ready(Ready {
        features: Features::default(),
        setup: Vec::new(),
    });
    if chan.send(&ready, &[], None).is_err() {
        return;
    }
    let mut nonce = 1u64;
    loop {
        nonce = nonce.wrapping_mul(6364136223846793005).wrapping_add(1);
        let pong = Message::Pong(Pong { nonce, running: 0 });
        if chan.send(&pong, &[], None).is_err() {
            return;
        }
    }
}
