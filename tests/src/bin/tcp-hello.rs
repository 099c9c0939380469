//! Connects to the TCP address given as the first argument (`127.0.0.1:PORT`), prints what the
//! server sends until it closes, and exits 0; on a failed connect, exits with the errno.

use std::io::Read;
use std::time::Duration;

fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: tcp-hello ADDR:PORT");
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
        Ok(mut s) => {
            let mut got = String::new();
            s.read_to_string(&mut got).expect("read");
            print!("{got}");
        }
        Err(e) => {
            eprintln!("tcp-hello: {addr}: {e}");
            std::process::exit(e.raw_os_error().unwrap_or(1));
        }
    }
}
