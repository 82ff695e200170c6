//! End to end under load (see `e2e_common` for the lab): parallel downloads and uploads
//! through two engines' proxies, every byte checked, throughput printed next to the same
//! transfers without redirection (the engines gone: fail open).

mod e2e_common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e_common::*;

const DOWN: u64 = 20_000_000;
const UP: usize = 5_000_000;
const STREAMS: u16 = 4;

#[test]
fn parallel_transfers_through_two_engines() {
    if let Err(e) = World::new("e2eload", 2).and_then(|w| w.run(load)) {
        panic!("{e:#}");
    }
}

/// Runs STREAMS downloads and STREAMS uploads at once from ports `base..`; returns the
/// seconds taken and the answers' peers (who the server saw).
fn transfers(w: &World, base: u16) -> Result<(f64, Vec<String>)> {
    let t0 = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..STREAMS {
        let client = w.client.clone();
        jobs.push(std::thread::spawn(move || -> Result<String> {
            let (body, _) = http_get_raw(
                &client,
                base + i,
                SocketAddrV4::new(SERVER, HTTP_PORT),
                &format!("/bytes/{DOWN}/0"),
                Duration::from_secs(30),
            )?;
            ensure!(
                body.len() as u64 == DOWN,
                "downloaded {} of {DOWN}",
                body.len()
            );
            let bad = body
                .iter()
                .enumerate()
                .position(|(k, b)| *b != pattern(k as u64));
            ensure!(bad.is_none(), "download byte {bad:?} differs");
            Ok("download".into())
        }));
        let client = w.client.clone();
        jobs.push(std::thread::spawn(move || -> Result<String> {
            let body: Vec<u8> = (0..UP as u64).map(pattern).collect();
            let (whole, answer) = http_post(
                &client,
                base + 100 + i,
                SocketAddrV4::new(SERVER, HTTP_PORT),
                &body,
                Duration::from_secs(30),
            )?;
            ensure!(whole, "upload answer {answer:?}");
            Ok("upload".into())
        }));
    }
    let mut out = Vec::new();
    for j in jobs {
        out.push(j.join().expect("transfer thread")?);
    }
    Ok((t0.elapsed().as_secs_f64(), out))
}

fn load(w: &World) -> Result<()> {
    let ctl = start_ctl(w, "r", 30_000)?;
    let mut e1 = Engine::start(w, 0, &AgentExtra::default())?;
    let mut e2 = Engine::start(w, 1, &AgentExtra::default())?;
    let (s, _) = wait_split(&ctl, &[engine_ip(0), engine_ip(1)], Duration::from_secs(25))
        .with_context(|| logs(Some(&ctl), &[&e1, &e2]))?;
    let base = 40_000;
    let mut on = [0; 2];
    for p in (base..base + STREAMS).chain(base + 100..base + 100 + STREAMS) {
        let owner = owner_of(&s, p)?;
        on[usize::from(owner != Some(engine_ip(0)))] += 1;
    }
    let (secs, _) = transfers(w, base).with_context(|| logs(Some(&ctl), &[&e1, &e2]))?;
    let total = (DOWN * u64::from(STREAMS) + (UP as u64) * u64::from(STREAMS)) as f64;
    let c = [e1.counters()?, e2.counters()?];
    let proxied: usize = [&e1, &e2].iter().map(|e| e.proxy().accepted().len()).sum();
    ensure!(
        proxied >= 2 * usize::from(STREAMS),
        "every transfer proxied: {proxied}"
    );
    let st = ctl.status()?;
    println!(
        "(load) {} downloads of {} MB and {} uploads of {} MB through the proxies ({} on engine 1, \
         {} on engine 2): {:.2} s, {:.0} MB/s; engine counters {:?} {:?}; router {}",
        STREAMS,
        DOWN / 1_000_000,
        STREAMS,
        UP / 1_000_000,
        on[0],
        on[1],
        secs,
        total / secs / 1e6,
        c[0],
        c[1],
        st["stats"]["dataplane"]
    );
    for bad in [
        "bad_inner",
        "truncated",
        "assign_failed",
        "adjust_failed",
        "redirect_failed",
    ] {
        ensure!(
            !c[0].contains_key(bad) && !c[1].contains_key(bad),
            "{bad}: {c:?}"
        );
    }
    // The same without redirection.
    e1.agent.take();
    e2.agent.take();
    wait_for("no engines", Duration::from_secs(10), || {
        Ok(slots(&ctl.service(SERVICE)?).is_empty())
    })?;
    let (direct, _) = transfers(w, base + 1000)?;
    println!(
        "(load) the same directly (fail open): {direct:.2} s, {:.0} MB/s",
        total / direct / 1e6
    );
    Ok(())
}
