//! `cargo xtask bench`: timings of the protocol state machines, each next to a baseline
//! measured in the same run (ratios travel between machines better than nanoseconds).
//!
//! Rows:
//! * Here-I-Am -> I-See-You: a router in steady state with one usable engine handles the
//!   engine's Here-I-Am (parse, authenticate, update the view, build and emit the
//!   I-See-You); baseline: parsing and re-emitting the same bytes with `wccp::wire` alone.
//! * Assignment for 32 engines: `assign_buckets` when a 32nd engine joins 31 (and for a
//!   fresh table); baseline: the same for 2 engines.
//!
//! Timing in a debug build means little, so a debug `xtask` re-runs itself in release.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant as WallClock};

use anyhow::{bail, Context, Result};
use clap::Args;
use wccp::assign::{assign_buckets, BucketTable};
use wccp::engine::{self, Engine, EngineConfig};
use wccp::proto::ServiceId;
use wccp::router::{self, Router, RouterConfig, ServiceConfig};
use wccp::time::Instant;
use wccp::wire::{Message, ServiceFlags, ServiceInfo};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Options {
    /// Iterations per row (more for steadier figures).
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
}

const GUARD: &str = "XTASK_BENCH_RELEASE";

/// Runs the benchmark rows and prints a table.
pub fn run(options: &Options) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var_os(GUARD).is_none() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "bench",
            ])
            .args(["--iterations", &options.iterations.to_string()])
            .env(GUARD, "1")
            .status()
            .context("re-running xtask in release")?;
        if !status.success() {
            bail!("release bench failed: {status}");
        }
        return Ok(());
    }
    let n = options.iterations.max(1);
    println!(
        "{:<48} {:>12} {:>12} {:>8}",
        "row", "ns/op", "baseline", "ratio"
    );
    let (hia, mut router) = steady_state()?;
    // The same Here-I-Am again and again: every call takes the full path (parse, security,
    // view update, I-See-You built and emitted); the engine stays usable throughout.
    let isy = time(n, || {
        black_box(router.handle_message(E, black_box(&hia), Instant::from_secs(20)));
    });
    let codec = time(n, || {
        let m = Message::parse(black_box(&hia)).ok();
        black_box(m.and_then(|m| m.to_bytes().ok()));
    });
    row("Here-I-Am -> I-See-You (router, 1 engine)", isy, codec);

    let engines = |k: u8| -> Vec<(Ipv4Addr, u16)> {
        (1..=k).map(|i| (Ipv4Addr::new(10, 0, 1, i), 1)).collect()
    };
    let e31 = engines(31);
    let e32 = engines(32);
    let t31 = assign_buckets(&e31, &BucketTable::unassigned());
    let join32 = time(n, || {
        black_box(assign_buckets(black_box(&e32), &t31));
    });
    let e1 = engines(1);
    let e2 = engines(2);
    let t1 = assign_buckets(&e1, &BucketTable::unassigned());
    let join2 = time(n, || {
        black_box(assign_buckets(black_box(&e2), &t1));
    });
    row("assign_buckets: 32nd engine joins 31", join32, join2);
    let fresh32 = time(n, || {
        black_box(assign_buckets(black_box(&e32), &BucketTable::unassigned()));
    });
    let fresh2 = time(n, || {
        black_box(assign_buckets(black_box(&e2), &BucketTable::unassigned()));
    });
    row("assign_buckets: fresh table, 32 engines", fresh32, fresh2);
    println!("baselines: wire parse+emit of the same Here-I-Am; the same assignment for 2 engines");
    Ok(())
}

fn row(name: &str, ns: f64, base: f64) {
    let ratio = if base > 0.0 { ns / base } else { 0.0 };
    println!("{name:<48} {ns:>12.0} {base:>12.0} {ratio:>7.2}x");
}

/// Mean nanoseconds per call over `n` calls, after a warm-up.
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..(n / 10).max(1) {
        f();
    }
    let start = WallClock::now();
    for _ in 0..n {
        f();
    }
    let d: Duration = start.elapsed();
    d.as_nanos() as f64 / f64::from(n)
}

const R: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const E: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn service() -> ServiceInfo {
    ServiceInfo::dynamic(
        90,
        0,
        6,
        ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED,
        &[80],
    )
}

/// Joins one engine to one router and returns the engine's next Here-I-Am and the router.
fn steady_state() -> Result<(Vec<u8>, Router)> {
    let config = RouterConfig {
        router_id: R,
        services: vec![ServiceConfig::new(
            ServiceId {
                dynamic: true,
                id: 90,
            },
            None,
        )],
        jitter_seed: 1,
    };
    let mut router = Router::new(config);
    let mut eng = Engine::new(EngineConfig::new(E, service(), vec![R]));
    let mut to_router: Vec<Vec<u8>> = sends_e(eng.start(Instant::ZERO));
    for step in 1..=4u64 {
        let now = Instant::from_millis(step);
        let mut to_engine = Vec::new();
        for b in to_router.drain(..) {
            to_engine.extend(sends_r(router.handle_message(E, &b, now)));
        }
        for b in to_engine {
            to_router.extend(sends_e(eng.handle_message(R, &b, now)));
        }
    }
    let at = eng.next_timeout().context("engine has no timer")?;
    let hia = sends_e(eng.handle_timeout(at))
        .into_iter()
        .next()
        .context("no Here-I-Am at T")?;
    let usable = router.state().services[0]
        .engines
        .iter()
        .any(|e| e.status == router::EngineStatus::Usable);
    if !usable {
        bail!("engine did not join");
    }
    Ok((hia, router))
}

fn sends_e(a: Vec<engine::Action>) -> Vec<Vec<u8>> {
    a.into_iter()
        .filter_map(|a| match a {
            engine::Action::Send(t) => Some(t.bytes),
            _ => None,
        })
        .collect()
}

fn sends_r(a: Vec<router::Action>) -> Vec<Vec<u8>> {
    a.into_iter()
        .filter_map(|a| match a {
            router::Action::Send(t) => Some(t.bytes),
            _ => None,
        })
        .collect()
}
