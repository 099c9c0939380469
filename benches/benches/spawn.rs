//! Spawn latency per strategy, pool throughput with 1..N clients, payload sizes through sealed
//! memfds, and the pure pool slot policy.
//!
//! Run: `cargo build --release -p hatchery-guest && cargo bench -p hatchery-benches --bench spawn`
//! (the benches find `hatchery-shim` next to them in `target/release`).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hatchery::pool::slots::{Policy, Slots};
use hatchery::pool::{default_profile, sealed_memfd, Sink};
use hatchery::{Pool, Request, Stdio};

fn pool(n: usize) -> Pool {
    Pool::builder()
        .min_zygotes(n)
        .max_zygotes(n)
        .idle_timeout(None)
        .build()
        .expect("pool (is hatchery-shim built? cargo build --release -p hatchery-guest)")
}

fn spawn(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    g.bench_function(BenchmarkId::new("direct", "true"), |b| {
        b.iter(|| {
            std::process::Command::new("/bin/true")
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
        })
    });
    let p = pool(1);
    g.bench_function(BenchmarkId::new("pool-fresh", "true"), |b| {
        b.iter(|| {
            p.run(
                Request::exec("/bin/true")
                    .stdout(Sink::Null)
                    .stderr(Sink::Null),
            )
            .unwrap()
        })
    });
    let profile = default_profile();
    g.bench_function(BenchmarkId::new("oneshot", "true"), |b| {
        b.iter(|| {
            profile
                .command("/bin/true")
                .stdout(Stdio::null())
                .status()
                .unwrap()
        })
    });
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    for clients in 1..=cpus {
        let p = pool(clients);
        let batch = 40;
        g.throughput(Throughput::Elements((batch * clients) as u64));
        g.bench_function(
            BenchmarkId::new("pool-fresh", format!("{clients}-clients")),
            |b| {
                b.iter(|| {
                    std::thread::scope(|s| {
                        for _ in 0..clients {
                            s.spawn(|| {
                                for _ in 0..batch {
                                    p.run(
                                        Request::exec("/bin/true")
                                            .stdout(Sink::Null)
                                            .stderr(Sink::Null),
                                    )
                                    .unwrap();
                                }
                            });
                        }
                    })
                })
            },
        );
    }
    g.finish();
}

fn payload(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let p = pool(1);
    for (name, size) in [
        ("4KiB", 4usize << 10),
        ("1MiB", 1 << 20),
        ("16MiB", 16 << 20),
        ("256MiB", 256 << 20),
    ] {
        let data = vec![0x5au8; size];
        // Sealed once; every request gets the same immutable memfd (no copy per request).
        let memfd = sealed_memfd("bench-input", &data).unwrap();
        drop(data);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("memfd-stdin-wc", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh open file description at offset 0 for each request.
                    let input = std::fs::File::open(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&memfd)
                    ))
                    .unwrap();
                    let t = Instant::now();
                    let r = p
                        .run(
                            Request::exec("/usr/bin/wc")
                                .arg("-c")
                                .stdin_fd(input)
                                .stderr(Sink::Null),
                        )
                        .unwrap();
                    total += t.elapsed();
                    black_box(r);
                }
                total
            })
        });
    }
    g.finish();
}

fn slot_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool-logic");
    let mut s = Slots::new(Policy {
        min: 8,
        max: 16,
        per_zygote: 1,
        recycle_after: Some(1_000_000),
        idle_timeout: Some(Duration::from_secs(60)),
        dedicated: false,
    });
    let now = Instant::now();
    for _ in 0..16 {
        let id = s.add_starting(now);
        s.mark_ready(id, now);
    }
    g.bench_function(BenchmarkId::new("lease+release", "16-slots"), |b| {
        b.iter(|| {
            let id = s.lease().unwrap();
            black_box(s.release(id, now));
        })
    });
    g.finish();
}

/// One benchmark per container setup step of the one-shot path (host: clone + exec of the shim,
/// id maps, handshake; shim: mounts, pivot_root, fork + exec of the command, …): each sample
/// spawns containers and sums only that step's duration, as measured by the sandbox itself.
fn setup_breakdown(c: &mut Criterion) {
    let mut g = c.benchmark_group("oneshot-setup");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let profile = default_profile();
    let spawn_one = || {
        let mut child = profile
            .command("/bin/true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let steps = child.setup_timings().to_vec();
        child.wait().unwrap();
        steps
    };
    let steps: Vec<String> = spawn_one().into_iter().map(|(s, _)| s).collect();
    for step in steps {
        g.bench_function(BenchmarkId::new("oneshot", &step), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        spawn_one()
                            .into_iter()
                            .find(|(s, _)| *s == step)
                            .map_or(Duration::ZERO, |(_, d)| d)
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    spawn,
    throughput,
    payload,
    slot_policy,
    setup_breakdown
);
criterion_main!(benches);
