//! `hatchery map [RUN OPTIONS] [-j N] --out DIR [--name TEMPLATE] [--files-from LIST] FILE|DIR...
//! -- COMMAND [ARGS]`: every input file (directories are walked recursively) goes to a fresh
//! sandboxed COMMAND through a warm pool, as its stdin, with its name in `$HATCHERY_INPUT_NAME`;
//! its stdout is streamed into DIR/TEMPLATE (`{stem}`, `{ext}`, `{name}`; default `{name}`).
//! `{input}` in the arguments is the path of a read-only copy of the input in the request's own
//! `/tmp`, for helpers that need a path (`pdfinfo {input}`).
//!
//! One JSON line per file on stdout (a failed file's line names no output: its partial output is
//! removed); progress on stderr when it is a terminal, cleared before each line. Each file has a
//! wall-time limit ([`DEFAULT_WALL_TIME`] unless `--limit-walltime` says otherwise). SIGINT or
//! SIGTERM cancels: running files are killed, their partial outputs removed, and every file not
//! done gets a `"outcome":"cancelled"` line. Exit 0 when every file succeeded, 1 when any failed,
//! 2 for a usage error, 125 when the sandbox could not start, 130/143 when cancelled.
//!
//! The sandbox is the pool's secure default profile (read-only minimal root, /etc with the
//! host's read-only configuration, no network, fresh /tmp per file), adjusted by the options of
//! `hatchery run` (`-b`, `-e`, `--etc`, `--limit-*`, …).

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;
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
    /// Output file name: `{name}` (the input's file name), `{stem}` (without its last
    /// extension), `{ext}` (that extension, without the dot); e.g. `{stem}.png`
    #[arg(long, value_name = "TEMPLATE", default_value = "{name}")]
    name: String,
    /// Read more input paths from LIST, one per line (`-` for stdin)
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// No progress display
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Load the sandbox from a TOML profile (as `hatchery run -c`, e.g. one `hatchery learn`
    /// wrote), ignoring the other sandbox options; its command.cmdline is the COMMAND unless
    /// one is given after `--`
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Explain every refusal: each file's JSON line gets a `denials` list, each with the flag
    /// and the profile snippet that allow it
    #[arg(long)]
    explain: bool,
    /// The input files; a directory stands for every file under it
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The command that reads a file on stdin and writes its result on stdout
    #[arg(
        last = true,
        required_unless_present = "config",
        value_name = "COMMAND"
    )]
    argv: Vec<String>,
}

/// Each file's wall-time limit unless `--limit-walltime` is given.
pub const DEFAULT_WALL_TIME: Duration = Duration::from_secs(300);

/// In the command's arguments, the path of a read-only copy of the input inside the sandbox.
pub const INPUT_PLACEHOLDER: &str = "{input}";

/// Usage errors exit 2 (as clap's own).
const USAGE: i32 = 2;

/// The output name of `input` under `template`.
fn output_name(template: &str, input: &Path) -> String {
    let name = input.file_name().unwrap_or_default().to_string_lossy();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_string(), ext.to_string()),
        _ => (name.to_string(), String::new()),
    };
    template
        .replace("{name}", &name)
        .replace("{stem}", &stem)
        .replace("{ext}", &ext)
}

/// Every input: the files given, those under the directories given (sorted, recursively), and
/// those listed in `--files-from`.
fn inputs(args: &MapArgs) -> Result<Vec<PathBuf>, String> {
    let mut roots = args.files.clone();
    if let Some(list) = &args.files_from {
        let reader: Box<dyn BufRead> = if list.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(list)
                    .map_err(|e| format!("--files-from {}: {e}", list.display()))?,
            ))
        };
        for line in reader.lines() {
            let line = line.map_err(|e| format!("--files-from: {e}"))?;
            if !line.is_empty() {
                roots.push(PathBuf::from(line));
            }
        }
    }
    let mut out = Vec::new();
    for r in roots {
        walk(&r, &mut out)?;
    }
    if out.is_empty() {
        return Err("no input files (give FILE or DIR arguments or --files-from)".into());
    }
    Ok(out)
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !meta.is_dir() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        walk(&e, out)?;
    }
    Ok(())
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

/// A file without a result.
enum Failure {
    /// SIGINT or SIGTERM came first.
    Cancelled,
    /// The pool (or the input or output file) failed.
    Error(String),
}

fn report(
    file: &Path,
    output: &Path,
    bytes_in: u64,
    res: &Result<RunResult, Failure>,
) -> serde_json::Value {
    match res {
        Ok(r) => {
            let bytes_out = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            let mut v = serde_json::json!({
                "file": file.display().to_string(),
                "output": r.success().then(|| output.display().to_string()),
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
                "max_rss_kib": r.usage.max_rss,
                "stderr": String::from_utf8_lossy(&r.stderr[..r.stderr.len().min(512)]),
            });
            // Why it failed, where the outcome says more than its name.
            match &r.outcome {
                Outcome::SetupFailed(f) => {
                    v["setup_step"] = serde_json::json!(format!("{:?}", f.step));
                    v["errno"] = serde_json::json!(f.errno);
                    v["detail"] = serde_json::json!(f.detail);
                }
                Outcome::Violation { syscall, nr, args } => {
                    v["violation"] = serde_json::json!({
                        "syscall": syscall,
                        "nr": nr,
                        "args": args,
                    });
                }
                _ => {}
            }
            if !r.denials.is_empty() {
                v["denials"] = r
                    .denials
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "layer": d.layer.name(),
                            "operation": d.operation,
                            "target": d.target,
                            "count": d.count,
                            "allow_flag": d.allow.as_ref().map(|a| &a.flag),
                            "allow_toml": d.allow.as_ref().map(|a| &a.toml),
                        })
                    })
                    .collect();
            }
            v
        }
        Err(Failure::Cancelled) => serde_json::json!({
            "file": file.display().to_string(),
            "output": null,
            "ok": false,
            "outcome": "cancelled",
            "bytes_in": bytes_in,
        }),
        Err(Failure::Error(e)) => serde_json::json!({
            "file": file.display().to_string(),
            "output": null,
            "ok": false,
            "outcome": "error",
            "error": e,
            "bytes_in": bytes_in,
        }),
    }
}

/// Runs `hatchery map`.
pub fn execute(mut args: MapArgs) -> i32 {
    let from_profile = match &args.config {
        Some(path) => {
            let log = crate::log::Log {
                level: crate::log::Level::from_flags(0, 0),
            };
            match crate::config::load(path, &log) {
                Ok(p) => {
                    args.sandbox = p.sandbox;
                    if args.argv.is_empty() {
                        args.argv = p.command.cmdline;
                    }
                    true
                }
                Err(e) => {
                    eprintln!("hatchery map: --config: {e}");
                    return USAGE;
                }
            }
        }
        None => false,
    };
    if args.argv.is_empty() {
        eprintln!("hatchery map: no COMMAND (the profile has no command.cmdline)");
        return USAGE;
    }
    if args.sandbox.rootfs.is_some() || args.sandbox.rootdir.is_some() {
        eprintln!("hatchery map: --rootfs and --rootdir are not supported; the pool's minimal root is used (add paths with -b)");
        return USAGE;
    }
    // Every request gets a fresh /tmp: a bind under it would be hidden (and its landlock rule
    // would name a missing path), so it is refused here with the way out.
    for b in args
        .sandbox
        .bindmount_ro
        .iter()
        .chain(&args.sandbox.bindmount_rw)
    {
        let (host, ctr) = crate::sandbox::split_pair(b);
        if Path::new(ctr.unwrap_or(host)).starts_with("/tmp") {
            eprintln!(
                "hatchery map: -b {b}: every request gets a fresh /tmp, which would hide this bind; \
                 mount it elsewhere, e.g. -b {host}:/data"
            );
            return USAGE;
        }
    }
    if args.sandbox.network.is_some() {
        eprintln!(
            "hatchery map: --network is not supported: every request has a network namespace of \
             its own (loopback only)"
        );
        return USAGE;
    }
    let base = if from_profile {
        hatchery::Container::new()
    } else {
        default_profile()
    };
    let (mut profile, env, workdir) = match apply(base, &args.sandbox, None) {
        Ok(a) => (a.container, a.env, a.workdir),
        Err(e) => {
            eprintln!("hatchery map: {e}");
            return USAGE;
        }
    };
    let files = match inputs(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hatchery map: {e}");
            return USAGE;
        }
    };
    let mut names = HashSet::new();
    let mut outputs = Vec::with_capacity(files.len());
    for f in &files {
        let name = output_name(&args.name, f);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            eprintln!(
                "hatchery map: --name {:?} gives {name:?} for {}: not a file name",
                args.name,
                f.display()
            );
            return USAGE;
        }
        if !names.insert(name.clone()) {
            eprintln!(
                "hatchery map: two inputs would write the same output {name:?} (use --name, e.g. {{stem}}-{{ext}}.out)"
            );
            return USAGE;
        }
        outputs.push(args.out.join(name));
    }
    let wall = match args.sandbox.limit_walltime {
        None => DEFAULT_WALL_TIME,
        Some(t) if t.is_finite() && t > 0.0 => Duration::from_secs_f64(t),
        Some(t) => {
            eprintln!("hatchery map: --limit-walltime: {t} is not a positive number of seconds");
            return USAGE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("hatchery map: cannot create {}: {e}", args.out.display());
        return 125;
    }
    // SIGINT and SIGTERM are taken by a signalfd (blocked in every thread, which inherit the
    // mask), so a cancel reaches the workers through `cancel` instead of killing the process
    // with partial outputs left behind.
    let mut sigs = nix::sys::signal::SigSet::empty();
    sigs.add(nix::sys::signal::Signal::SIGINT);
    sigs.add(nix::sys::signal::Signal::SIGTERM);
    let signals = sigs.thread_block().ok().and_then(|()| {
        nix::sys::signalfd::SignalFd::with_flags(&sigs, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC)
            .ok()
    });
    let Ok((cancel_r, cancel_w)) = nix::unistd::pipe() else {
        eprintln!("hatchery map: cannot create a pipe");
        return 125;
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
        .min(files.len());
    if args.explain {
        profile.explain(true);
    }
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
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let running = AtomicUsize::new(jobs);
    let cancelled = AtomicBool::new(false);
    let signal = AtomicI32::new(0);
    let failed = AtomicUsize::new(0);
    // Lines and the progress display go out under one lock, so the counter never goes back.
    let out = Mutex::new((std::io::stdout(), 0usize));
    let totals = Mutex::new(Vec::new());
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let total = files.len();
    let emit = |line: serde_json::Value, is_failure: bool| {
        if is_failure {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        o.1 += 1;
        if progress {
            eprint!("\r\x1b[K");
        }
        let _ = writeln!(o.0, "{line}");
        let _ = o.0.flush();
        if progress {
            let width = 30;
            let filled = o.1 * width / total.max(1);
            eprint!(
                "[{}{}] {}/{total} files, {} failed",
                "#".repeat(filled),
                ".".repeat(width - filled),
                o.1,
                failed.load(Ordering::Relaxed)
            );
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(file), Some(output)) = (files.get(i), outputs.get(i)) else {
                        break;
                    };
                    if cancelled.load(Ordering::Relaxed) {
                        emit(report(file, output, 0, &Err(Failure::Cancelled)), true);
                        continue;
                    }
                    let mut bytes_in = 0;
                    let res = (|| -> Result<RunResult, Failure> {
                        let err = |e: String| Failure::Error(e);
                        let input = std::fs::File::open(file)
                            .map_err(|e| err(format!("open input: {e}")))?;
                        bytes_in = input.metadata().map(|m| m.len()).unwrap_or(0);
                        let sink = std::fs::File::create(output)
                            .map_err(|e| err(format!("create output: {e}")))?;
                        let name = file.file_name().unwrap_or_default().to_string_lossy();
                        // `{input}` in the arguments: a read-only copy of the input at a path
                        // of the request's own /tmp (a path the sandbox may read), besides stdin.
                        let placed = format!("/tmp/{name}");
                        let wants_path = args.argv.iter().any(|a| a.contains(INPUT_PLACEHOLDER));
                        let argv: Vec<String> = args
                            .argv
                            .iter()
                            .map(|a| a.replace(INPUT_PLACEHOLDER, &placed))
                            .collect();
                        let mut req = Request::exec(&argv[0]).args(&argv[1..]);
                        if wants_path {
                            let copy = std::fs::File::open(file)
                                .map_err(|e| err(format!("open input: {e}")))?;
                            req = req.place(&placed, copy);
                        }
                        let mut req = req
                            .stdin_fd(input)
                            .stdout(Sink::Fd(sink.into()))
                            .stderr(Sink::Capture(args.max_output))
                            .env("HATCHERY_INPUT_NAME", &*name)
                            .wall_time(wall);
                        for (k, v) in &env {
                            req = req.env(k, v);
                        }
                        if let Some(w) = &workdir {
                            req = req.current_dir(w);
                        }
                        let mut ticket = pool.submit(req).map_err(|e| err(e.to_string()))?;
                        // Wait for the result or a cancel; past the wall time (and a grace),
                        // `wait` itself notices a wedged zygote.
                        let until = Instant::now() + wall + Duration::from_secs(2);
                        loop {
                            let left = until.saturating_duration_since(Instant::now());
                            let ms = left.as_millis().min(i32::MAX as u128) as i32;
                            let mut p = [
                                nix::poll::PollFd::new(
                                    ticket.as_fd(),
                                    nix::poll::PollFlags::POLLIN,
                                ),
                                nix::poll::PollFd::new(
                                    cancel_r.as_fd(),
                                    nix::poll::PollFlags::POLLIN,
                                ),
                            ];
                            let n = nix::poll::poll(
                                &mut p,
                                nix::poll::PollTimeout::try_from(ms)
                                    .unwrap_or(nix::poll::PollTimeout::MAX),
                            );
                            let hit = |i: usize| p[i].revents().is_some_and(|r| !r.is_empty());
                            if hit(1) {
                                // Dropping the ticket kills the request.
                                drop(ticket);
                                return Err(Failure::Cancelled);
                            }
                            if hit(0) || matches!(n, Ok(0)) {
                                return ticket.wait().map_err(|e| err(e.to_string()));
                            }
                            if let Ok(Some(r)) = ticket.try_wait() {
                                return Ok(r);
                            }
                        }
                    })();
                    let ok = matches!(&res, Ok(r) if r.success());
                    if !ok {
                        let _ = std::fs::remove_file(output);
                    }
                    if let Ok(r) = &res {
                        totals
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(r.timings.total);
                    }
                    emit(report(file, output, bytes_in, &res), !ok);
                }
                running.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // This thread watches for SIGINT/SIGTERM until the workers are done.
        while running.load(Ordering::Relaxed) > 0 {
            let Some(sfd) = signals.as_ref() else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let mut p = [nix::poll::PollFd::new(
                sfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::from(50u8)), Ok(n) if n > 0)
            {
                if let Ok(Some(info)) = sfd.read_signal() {
                    if !cancelled.swap(true, Ordering::Relaxed) {
                        signal.store(info.ssi_signo as i32, Ordering::Relaxed);
                        let _ = nix::unistd::write(&cancel_w, b"x");
                    }
                }
            }
        }
    });
    let failed = failed.load(Ordering::Relaxed);
    let mut totals = totals.into_inner().unwrap_or_default();
    totals.sort();
    let median = totals.get(totals.len() / 2).copied().unwrap_or_default();
    if !args.quiet {
        if progress {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "hatchery map: {} files, {} failed, {:.2?} in all, median {:.2?} per file, {} zygotes",
            total,
            failed,
            started.elapsed(),
            median,
            jobs
        );
    }
    pool.shutdown(Duration::from_secs(1));
    match signal.load(Ordering::Relaxed) {
        0 if failed > 0 => 1,
        0 => 0,
        sig => 128 + sig,
    }
}
