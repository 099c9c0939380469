//! Calls the `gunzip_helper` example (a call-mode helper using `flate2`) through a pool.
//!
//! ```sh
//! cargo build --example gunzip_helper -p hatchery-guest
//! cargo build -p hatchery-guest --bin hatchery-shim
//! cargo run --example call_gunzip -p hatchery -- /usr/share/common-licenses/GPL-3
//! ```
//! (on Debian, `/usr/share/doc/*/changelog.gz` files are handy gzip inputs).

use std::time::Duration;

use hatchery::pool::{CallError, CallRequest};
use hatchery::{Isolation, Pool};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let helper = std::env::current_exe()?
        .parent()
        .ok_or("no example directory")?
        .join("gunzip_helper");
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/share/doc/bash/changelog.gz".into());
    let gz = std::fs::read(&input)?;
    let pool = Pool::builder()
        .call_helper(&helper)
        .isolation(Isolation::Reuse { max_requests: 1000 })
        .build()?;
    // Small inputs inline, any size through a sealed memfd on stdin.
    let out = if gz.len() <= hatchery::pool::MAX_INLINE_ARG {
        pool.call("gunzip", &gz)?
    } else {
        pool.call_request(
            CallRequest::new("gunzip_stdin", Vec::new())
                .stdin_bytes(gz.clone())
                .wall_time(Duration::from_secs(10)),
        )?
    };
    println!(
        "{input}: {} bytes of gzip -> {} bytes in {:?} (call ran {:?})",
        gz.len(),
        out.output.len(),
        out.timings.total,
        out.timings.run
    );
    match pool.call("gunzip", b"definitely not gzip") {
        Err(CallError::Failed(msg)) => println!("bad input is a typed error: {msg}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
