//! Reads the fd whose number is the first argument to the end and prints what it read.

use std::io::Read;
use std::os::fd::FromRawFd;

fn main() {
    let fd: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("fd number");
    #[allow(unsafe_code)]
    // SAFETY: the sandbox passed this fd to us; we are its only user.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    print!("{s}");
}
