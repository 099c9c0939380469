//! A call-mode helper for the tests: one export per behaviour.

use std::sync::atomic::{AtomicU64, Ordering};

use hatchery_guest::{Call, Exports};

/// Set before `serve`: proves preloading happens inside the sandbox, once.
static PRELOADED: AtomicU64 = AtomicU64::new(0);
/// Counts calls served by this process: persists only within one reuse worker.
static CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(serde::Serialize)]
struct Sum {
    sum: i64,
}

fn main() {
    PRELOADED.store(std::process::id() as u64 + 1000, Ordering::SeqCst);
    Exports::new()
        .export("echo", |c: &mut Call| Ok::<_, String>(c.arg().to_vec()))
        .export("upper", |c: &mut Call| {
            Ok::<_, String>(c.arg().to_ascii_uppercase())
        })
        .export("noop", |_: &mut Call| Ok::<_, String>(Vec::new()))
        .export("fail", |_: &mut Call| {
            Err::<Vec<u8>, _>("refused on purpose")
        })
        .export("panic", |_: &mut Call| -> Result<Vec<u8>, String> {
            panic!("boom in export")
        })
        .export("sleep", |c: &mut Call| {
            let ms: u64 = String::from_utf8_lossy(c.arg()).parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok::<_, String>(b"woke".to_vec())
        })
        .export("count", |_: &mut Call| {
            let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, String>(n.to_string().into_bytes())
        })
        .export("preloaded", |_: &mut Call| {
            Ok::<_, String>(PRELOADED.load(Ordering::SeqCst).to_string().into_bytes())
        })
        .export("big", |c: &mut Call| {
            let n: usize = String::from_utf8_lossy(c.arg()).parse().unwrap_or(0);
            Ok::<_, String>(vec![b'x'; n])
        })
        .export("tmp", |_: &mut Call| {
            // Reports whether an earlier call left a file behind, then leaves one.
            let existed = std::path::Path::new("/tmp/left-behind").exists();
            std::fs::write("/tmp/left-behind", b"x").map_err(|e| e.to_string())?;
            Ok::<_, String>(if existed {
                b"found".to_vec()
            } else {
                b"clean".to_vec()
            })
        })
        .export("stdin", |c: &mut Call| {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut c.stdin().map_err(|e| e.to_string())?, &mut s)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(s.len().to_string().into_bytes())
        })
        .export("crash", |_: &mut Call| -> Result<Vec<u8>, String> {
            std::process::abort();
        })
        .export_typed("add", |r: Add| Ok::<_, String>(Sum { sum: r.a + r.b }))
        .serve()
}
