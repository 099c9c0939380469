//! `hatchery map [RUN OPTIONS] [-j N] --out DIR FILE... -- COMMAND [ARGS]`: every FILE goes to
//! a fresh sandboxed COMMAND through a warm pool, as its stdin; its stdout is streamed into
//! DIR/<file name>. One JSON line per file on stdout; progress on stderr when it is a terminal;
//! exit 0 when every file succeeded, 1 when any failed, 125 when the sandbox could not start.
//!
//! The sandbox is the pool's secure default profile (read-only minimal root, synthetic /etc, no
//! network, fresh /tmp per file), adjusted by the options of `hatchery run` (`-b`, `-e`,
//! `--limit-*`, …). A failed file's partial output is removed.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hatchery::pool::{default_profile, Sink};
use hatchery::{Outcome, Pool, Request, RunResult};

use crate::sandbox::{apply, SandboxArgs};

/// Options of `hatchery map`.
#[derive(Args, Debug)]
pub struct MapArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Files processed at once (default: the number of CPUs)
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
    /// Directory for the outputs (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Largest output (and stderr) a file may produce, in bytes; it also caps any file the
    /// command writes
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    max_output: u64,
    /// No progress display
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The input files
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// The command that reads a file on stdin and writes its result on stdout
    #[arg(last = true, required = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

/// The name of an outcome in reports.
pub fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Exited(_) => "exited",
        Outcome::Signaled { .. } => "signaled",
        Outcome::TimedOut => "timed_out",
        Outcome::CpuTimeExceeded => "cpu_time_exceeded",
        Outcome::MemoryExceeded => "memory_exceeded",
        Outcome::OutputExceeded => "output_exceeded",
        Outcome::Violation { .. } => "violation",
        Outcome::SetupFailed(_) => "setup_failed",
        _ => "other",
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn report(
    file: &Path,
    output: &Path,
    bytes_in: u64,
    res: &Result<RunResult, String>,
) -> serde_json::Value {
    match res {
        Ok(r) => {
            let bytes_out = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            serde_json::json!({
                "file": file.display().to_string(),
                "output": output.display().to_string(),
                "ok": r.success(),
                "outcome": outcome_name(&r.outcome),
                "exit_code": r.exit_code(),
                "signal": match r.outcome { Outcome::Signaled { signal, .. } => Some(signal), _ => None },
                "bytes_in": bytes_in,
                "bytes_out": if r.success() { bytes_out } else { 0 },
                "queued_us": us(r.timings.queued),
                "dispatch_us": us(r.timings.dispatch),
                "run_us": us(r.timings.run),
                "total_us": us(r.timings.total),
                "max_rss_kib": r.usage.max_rss_kib,
                "stderr": String::from_utf8_lossy(&r.stderr[..r.stderr.len().min(512)]),
            })
        }
        Err(e) => serde_json::json!({
            "file": file.display().to_string(),
            "output": output.display().to_string(),
            "ok": false,
            "outcome": "error",
            "error": e,
            "bytes_in": bytes_in,
        }),
    }
}

/// Runs `hatchery map`.
pub fn execute(args: MapArgs) -> i32 {
    if args.sandbox.rootfs.is_some() || args.sandbox.rootdir.is_some() {
        eprintln!("hatchery map: --rootfs and --rootdir are not supported; the pool's minimal root is used (add paths with -b)");
        return 125;
    }
    let (profile, env, workdir) = match apply(default_profile(), &args.sandbox, None) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("hatchery map: {e}");
            return 125;
        }
    };
    let mut names = HashSet::new();
    for f in &args.files {
        let name = f.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        if name.is_empty() || !names.insert(name.clone()) {
            eprintln!(
                "hatchery map: two inputs would write the same output {:?}",
                name
            );
            return 125;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("hatchery map: cannot create {}: {e}", args.out.display());
        return 125;
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let pool = match Pool::builder()
        .profile(profile)
        .min_zygotes(jobs)
        .max_zygotes(jobs)
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            // The chain's causes, each once (most errors already show their cause).
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let cause = s.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!(": {cause}"));
                }
                src = s.source();
            }
            eprintln!("hatchery map: {msg}");
            return 125;
        }
    };
    let wall = args.sandbox.limit_walltime.map(Duration::from_secs_f64);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let out = Mutex::new(std::io::stdout());
    let totals = Mutex::new(Vec::new());
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let args = Arc::new(args);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = args.files.get(i) else { break };
                let output = args.out.join(file.file_name().unwrap_or_default());
                let mut bytes_in = 0;
                let res = (|| -> Result<RunResult, String> {
                    let input =
                        std::fs::File::open(file).map_err(|e| format!("open input: {e}"))?;
                    bytes_in = input.metadata().map(|m| m.len()).unwrap_or(0);
                    let sink = std::fs::File::create(&output)
                        .map_err(|e| format!("create output: {e}"))?;
                    let mut req = Request::exec(&args.argv[0])
                        .args(&args.argv[1..])
                        .stdin_fd(input)
                        .stdout(Sink::Fd(sink.into()))
                        .stderr(Sink::Capture(args.max_output));
                    for e in &env {
                        if let Some((k, v)) = e.split_once('=') {
                            req = req.env(k, v);
                        }
                    }
                    if let Some(w) = &workdir {
                        req = req.current_dir(w);
                    }
                    if let Some(w) = wall {
                        req = req.wall_time(w);
                    }
                    pool.run(req).map_err(|e| e.to_string())
                })();
                let ok = matches!(&res, Ok(r) if r.success());
                let line = report(file, &output, bytes_in, &res);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let _ = std::fs::remove_file(&output);
                }
                if let Ok(r) = &res {
                    totals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.timings.total);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(o, "{line}");
                }
                if progress {
                    let total = args.files.len();
                    let width = 30;
                    let filled = n * width / total.max(1);
                    eprint!(
                        "\r[{}{}] {n}/{total} files, {} failed",
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        failed.load(Ordering::Relaxed)
                    );
                }
            });
        }
    });
    let failed = failed.load(Ordering::Relaxed);
    let mut totals = totals.into_inner().unwrap_or_default();
    totals.sort();
    let median = totals.get(totals.len() / 2).copied().unwrap_or_default();
    if !args.quiet {
        if progress {
            eprintln!();
        }
        eprintln!(
            "hatchery map: {} files, {} failed, {:.2?} in all, median {:.2?} per file, {} zygotes",
            args.files.len(),
            failed,
            started.elapsed(),
            median,
            jobs
        );
    }
    pool.shutdown(Duration::from_secs(1));
    if failed > 0 {
        1
    } else {
        0
    }
}
