//! A real call-mode helper: gzip decompression with `flate2`, capped output.
//!
//! Exports:
//! - `gunzip`: the argument is gzip data (up to 96 KiB inline); returns the decompressed bytes.
//! - `gunzip_stdin`: the same for gzip data of any size passed as the request's stdin.
//!
//! Build it with `cargo build --example gunzip_helper -p hatchery-guest`; run the host side with
//! `cargo run --example call_gunzip -p hatchery`.

use std::io::Read;

use hatchery_guest::{Call, Exports};

/// Largest output one call may produce (a decompression bomb stops here).
const MAX_OUTPUT: u64 = 256 << 20;

fn gunzip(input: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(input)
        .take(MAX_OUTPUT + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not valid gzip: {e}"))?;
    if out.len() as u64 > MAX_OUTPUT {
        return Err(format!("output exceeds {MAX_OUTPUT} bytes"));
    }
    Ok(out)
}

fn main() {
    // Anything done here (tables, dictionaries) is done once, inside the sandbox, before Ready.
    Exports::new()
        .export("gunzip", |c: &mut Call| gunzip(c.arg()))
        .export("gunzip_stdin", |c: &mut Call| {
            gunzip(c.stdin().map_err(|e| e.to_string())?)
        })
        .serve()
}
