//! `hatchery bench [--requests N] [--concurrency C] [--json] [-- COMMAND ARGS]`: spawn latency
//! and throughput of the sandboxes, measured side by side on this machine.
//!
//! Cases run interleaved in rounds (each round gives every case the same slice of requests), so
//! drifting machine load hits all of them alike. Warm-up requests are excluded; failed requests
//! are counted, never dropped.

use std::io::IsTerminal;
use std::process::Stdio as StdStdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;

mod peers;
use hatchery::pool::{default_profile, CallRequest, Sink};
use hatchery::{Isolation, Pool, Request, Stdio};

/// Options of `hatchery bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measured requests per case (after warm-up)
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Requests in flight at once, per case
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Print one JSON object on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// Also break one-shot setup down by step (medians over the measured requests)
    #[arg(long)]
    breakdown: bool,
    /// Only these cases (comma-separated names: direct, socket-rtt, oneshot, run-cli,
    /// pool-fresh, pool-dedicated, call-fresh, call-reuse, and the peers bwrap, bwrap-seccomp,
    /// hakoniwa, hakoniwa-unconfined, crun, firejail, sandlock, nsjail). Peers that are not
    /// installed are skipped with the reason; `scripts/bench-peers.sh` installs them.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// The command to spawn (default: /bin/true)
    #[arg(last = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

type Runner = Box<dyn Fn() -> bool + Send + Sync>;

struct Case {
    name: String,
    command_line: Option<String>,
    run: Runner,
    latencies: Mutex<Vec<Duration>>,
    busy: Mutex<Duration>,
    ok: Mutex<usize>,
    failed: Mutex<usize>,
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn std_status(program: &str, args: &[String]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(StdStdio::null())
        .stdout(StdStdio::null())
        .stderr(StdStdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Links and binds that give bwrap the same minimal root as hatchery's default profile.
fn system_dir_flags() -> Vec<String> {
    let mut out = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let p = std::path::Path::new("/").join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&p) {
                    out.extend([
                        "--symlink".into(),
                        t.to_string_lossy().into_owned(),
                        format!("/{name}"),
                    ]);
                }
            }
            Ok(m) if m.is_dir() => {
                out.extend(["--ro-bind".into(), format!("/{name}"), format!("/{name}")])
            }
            _ => {}
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": cpu,
        "memory_kib": mem_kib,
        "root": nix::unistd::geteuid().is_root(),
    })
}

/// Median duration of every one-shot setup step over `n` spawns (steps in their order).
fn oneshot_breakdown(program: &str, rest: &[String], n: usize) -> Vec<(String, f64)> {
    let profile = default_profile();
    let mut steps: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut add = |name: &str, d: Duration| match steps.iter_mut().find(|(s, _)| s == name) {
        Some((_, v)) => v.push(d),
        None => steps.push((name.to_string(), vec![d])),
    };
    for _ in 0..n {
        let t = Instant::now();
        let Ok(mut child) = profile
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        let ready = t.elapsed();
        for (name, d) in child.setup_timings() {
            add(name, *d);
        }
        add("total: spawn() until the command runs", ready);
        let t = Instant::now();
        let _ = child.wait();
        add("total: command run + container teardown", t.elapsed());
    }
    steps
        .into_iter()
        .map(|(name, mut v)| {
            v.sort();
            (name, percentile(&v, 0.5))
        })
        .collect()
}

/// Builds a pool for a case (never shrinking while measured), or prints why it could not.
fn build_pool(name: &str, builder: hatchery::PoolBuilder) -> Option<Pool> {
    match builder.idle_timeout(None).build() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("hatchery bench: {name}: {e}");
            None
        }
    }
}

/// PSS of a process in KiB (needs root for the non-dumpable shim).
fn pss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Runs `hatchery bench`.
pub fn execute(args: BenchArgs) -> i32 {
    let argv: Vec<String> = if args.argv.is_empty() {
        vec!["/bin/true".into()]
    } else {
        args.argv.clone()
    };
    let program = argv[0].clone();
    let rest: Vec<String> = argv[1..].to_vec();
    let c = args.concurrency.max(1);
    let want = |name: &str| args.cases.is_empty() || args.cases.iter().any(|c| c == name);
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &str, command_line: Option<String>, run: Runner| {
        cases.push(Case {
            name: name.to_string(),
            command_line,
            run,
            latencies: Mutex::new(Vec::new()),
            busy: Mutex::new(Duration::ZERO),
            ok: Mutex::new(0),
            failed: Mutex::new(0),
        })
    };
    let mut pools: Vec<Pool> = Vec::new();
    if want("direct") {
        let (p, r) = (program.clone(), rest.clone());
        add("direct", None, Box::new(move || std_status(&p, &r)));
    }
    if want("socket-rtt") {
        // Reference: one message with one fd to an echo thread and back over a SOCK_SEQPACKET
        // socketpair (what a reused call costs at the least).
        let (ours, mut theirs) = match hatchery_protocol::Channel::pair() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("hatchery bench: socket-rtt: {e}");
                return 125;
            }
        };
        std::thread::spawn(move || {
            while let Ok(r) = theirs.recv(None) {
                if theirs.send(&r.message, &[], None).is_err() {
                    break;
                }
            }
        });
        let null = std::fs::File::open("/dev/null").ok();
        let ours = Mutex::new(ours);
        add(
            "socket-rtt",
            None,
            Box::new(move || {
                let mut ch = ours.lock().unwrap_or_else(|e| e.into_inner());
                let fds: Vec<std::os::fd::BorrowedFd<'_>> =
                    null.iter().map(std::os::fd::AsFd::as_fd).collect();
                let msg =
                    hatchery_protocol::Message::Request(Box::new(hatchery_protocol::Request {
                        id: 1,
                        reply: 0,
                        work: hatchery_protocol::Work::Call {
                            export: "noop".into(),
                            arg: hatchery_protocol::Bytes(Vec::new()),
                        },
                        limits: Default::default(),
                        stdio: [hatchery_protocol::FdSlot::Null; 3],
                        named: Vec::new(),
                        placed: Vec::new(),
                    }));
                ch.send(&msg, &fds, None).is_ok() && ch.recv(None).is_ok()
            }),
        );
    }
    if want("oneshot") {
        let profile = default_profile();
        let (p, r) = (program.clone(), rest.clone());
        add(
            "oneshot",
            None,
            Box::new(move || {
                profile
                    .command(&p)
                    .args(&r)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            }),
        );
    }
    if want("run-cli") {
        // The whole `hatchery run` process as a user times it: exec of this binary, option
        // parsing, the shim's sealed copy, the filter's compile, the container, the exit.
        match std::env::current_exe() {
            Ok(exe) => {
                let mut a: Vec<String> = ["run", "--profile", "default", "--"]
                    .map(String::from)
                    .into();
                a.push(program.clone());
                a.extend(rest.clone());
                let exe = exe.to_string_lossy().into_owned();
                let line = format!("{exe} {}", a.join(" "));
                add(
                    "run-cli",
                    Some(line),
                    Box::new(move || std_status(&exe, &a)),
                );
            }
            Err(e) => eprintln!("hatchery bench: run-cli skipped: finding this executable: {e}"),
        }
    }
    for (name, isolation) in [
        ("pool-fresh", Isolation::Fresh),
        ("pool-dedicated", Isolation::Dedicated),
    ] {
        if !want(name) {
            continue;
        }
        let dedicated = isolation == Isolation::Dedicated;
        let Some(pool) = build_pool(
            name,
            Pool::builder()
                .isolation(isolation)
                .min_zygotes(if dedicated { 2 * c } else { c })
                .max_zygotes(if dedicated { 4 * c } else { c }),
        ) else {
            return 125;
        };
        pools.push(pool.clone());
        let (p, r) = (program.clone(), rest.clone());
        add(
            name,
            None,
            Box::new(move || {
                pool.run(
                    Request::exec(&p)
                        .args(&r)
                        .stdout(Sink::Null)
                        .stderr(Sink::Null),
                )
                .map(|res| res.success())
                .unwrap_or(false)
            }),
        );
    }
    // Call mode: the bundled helper's no-op export, a fresh process per call and a reused worker.
    let helper = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("hatchery-noop-helper")))
        .filter(|p| p.is_file());
    for (name, isolation) in [
        ("call-fresh", Isolation::Fresh),
        (
            "call-reuse",
            Isolation::Reuse {
                max_requests: u64::MAX,
            },
        ),
    ] {
        if !want(name) {
            continue;
        }
        let Some(helper) = &helper else {
            eprintln!(
                "hatchery bench: {name} skipped: hatchery-noop-helper not found next to hatchery"
            );
            continue;
        };
        let Some(pool) = build_pool(
            name,
            Pool::builder()
                .call_helper(helper)
                .isolation(isolation)
                .min_zygotes(c)
                .max_zygotes(c),
        ) else {
            return 125;
        };
        pools.push(pool.clone());
        add(
            name,
            None,
            Box::new(move || {
                pool.call_request(
                    CallRequest::new("noop", Vec::new())
                        .stdout(Sink::Null)
                        .stderr(Sink::Null),
                )
                .is_ok()
            }),
        );
    }
    peers::add_peers(&want, &program, &rest, &mut add);
    if cases.is_empty() {
        eprintln!("hatchery bench: no case selected");
        return 125;
    }
    let warmup = (args.requests / 20).clamp(5, 50);
    let rounds = 10usize;
    let per_round = args.requests.div_ceil(rounds).max(1);
    let progress = !args.json && std::io::stderr().is_terminal();
    // Warm-up, excluded.
    for case in &cases {
        for _ in 0..warmup {
            (case.run)();
        }
    }
    for round in 0..rounds {
        for case in &cases {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..c {
                    s.spawn(|| {
                        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < per_round {
                            let t0 = Instant::now();
                            let ok = (case.run)();
                            let d = t0.elapsed();
                            if ok {
                                case.latencies
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(d);
                                *case.ok.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                            } else {
                                *case.failed.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                            }
                        }
                    });
                }
            });
            *case.busy.lock().unwrap_or_else(|e| e.into_inner()) += t.elapsed();
        }
        if progress {
            eprint!("\rhatchery bench: round {}/{rounds}", round + 1);
        }
    }
    if progress {
        eprintln!();
    }
    let breakdown = if args.breakdown {
        oneshot_breakdown(&program, &rest, args.requests.min(500))
    } else {
        Vec::new()
    };
    let idle_pss: Vec<u64> = pools
        .iter()
        .flat_map(|p| p.zygote_pids())
        .filter_map(pss_kib)
        .collect();
    let mut rows = Vec::new();
    let mut direct_median = None;
    let mut bwrap_median = None;
    for case in &cases {
        let mut l = case
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        l.sort();
        let ok = *case.ok.lock().unwrap_or_else(|e| e.into_inner());
        let failed = *case.failed.lock().unwrap_or_else(|e| e.into_inner());
        let busy = *case.busy.lock().unwrap_or_else(|e| e.into_inner());
        let median = percentile(&l, 0.5);
        if case.name == "direct" {
            direct_median = Some(median);
        }
        if case.name == "bwrap" {
            bwrap_median = Some(median);
        }
        rows.push((
            case,
            median,
            percentile(&l, 0.9),
            percentile(&l, 0.99),
            ok as f64 / busy.as_secs_f64(),
            ok,
            failed,
        ));
    }
    if args.json {
        let cases_json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(case, med, p90, p99, rps, ok, failed)| {
                serde_json::json!({
                    "name": case.name,
                    "median_us": med,
                    "p90_us": p90,
                    "p99_us": p99,
                    "throughput_rps": rps,
                    "ok": ok,
                    "failed": failed,
                    "ratio_to_direct": direct_median.map(|d| med / d),
                    "ratio_to_bwrap": bwrap_median.map(|b| med / b),
                    "command_line": case.command_line,
                })
            })
            .collect();
        let out = serde_json::json!({
            "machine": machine(),
            "command": argv,
            "requests": args.requests,
            "concurrency": c,
            "idle_zygote_pss_kib": idle_pss,
            "cases": cases_json,
            "oneshot_breakdown": breakdown
                .iter()
                .map(|(step, us)| serde_json::json!({"step": step, "median_us": us}))
                .collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!("command: {argv:?}, {} requests per case, concurrency {c}, {warmup} warm-up requests excluded", args.requests);
        println!(
            "{:<20} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9} {:>7}",
            "case", "median µs", "p90 µs", "p99 µs", "req/s", "vs direct", "vs bwrap", "failed"
        );
        for (case, med, p90, p99, rps, _, failed) in &rows {
            let ratio = |base: Option<f64>| {
                base.map(|d| format!("{:.2}x", med / d))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<20} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>9} {:>9} {:>7}",
                case.name,
                med,
                p90,
                p99,
                rps,
                ratio(direct_median),
                ratio(bwrap_median),
                failed
            );
        }
        for (case, ..) in &rows {
            if let Some(line) = &case.command_line {
                println!("{}: {line}", case.name);
            }
        }
        if !breakdown.is_empty() {
            println!("one-shot setup, median per step:");
            for (step, us) in &breakdown {
                println!("  {step:<40} {us:>8.0} µs");
            }
        }
        if !idle_pss.is_empty() {
            println!("idle zygote PSS: {:?} KiB", idle_pss);
        } else if !pools.is_empty() {
            println!("idle zygote PSS: not readable (run as root to read the non-dumpable zygotes' smaps_rollup)");
        }
    }
    for p in pools {
        p.shutdown(Duration::from_secs(1));
    }
    if rows.iter().any(|r| r.6 > 0) {
        1
    } else {
        0
    }
}
