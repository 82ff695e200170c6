//! Two engine-agents and one `redirector-ctl` (XDP data plane on the client-facing veth),
//! T = 1 s on both sides: both engines usable, the 256 buckets split by weight (100 and
//! 300: 64 and 192); then the designated engine leaves, by SIGTERM (it sends SHUTDOWN, the
//! router drops it at once) or by SIGKILL (the router removes it 3 T after its last
//! Here-I-Am), and the other takes over and holds all 256 buckets. The failover time is
//! measured from the signal to the router's table holding only the survivor, and printed.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;

use common::{engine, engine_ip, poll, router_ip, slots, Net};
use netns_tests::daemons::{tail, Agent, Ctl, CtlConfig};

/// T, on the router and the agents.
const T_MS: u64 = 1000;

fn agent_config(address: Ipv4Addr, weight: u16) -> String {
    format!(
        "address = \"{address}\"\nrouters = [\"{}\"]\n[timers]\nhere_i_am_ms = {T_MS}\n\
         [[service]]\nid = 0\nweight = {weight}\n",
        router_ip(0)
    )
}

fn failover(prefix: &str, signal: Signal) -> Result<Duration> {
    Net::new(prefix, 1, 2)?.run(|net| failover_in(net, prefix, signal))
}

fn failover_in(net: &Net, prefix: &str, signal: Signal) -> Result<Duration> {
    let mut cfg = CtlConfig::new(router_ip(0), &["cli0"], "[[service]]\nid = 0\n");
    cfg.here_i_am_ms = T_MS;
    let ctl = Ctl::start(&net.routers[0], "r1", &cfg)?;
    let (a, b) = (engine_ip(0), engine_ip(1));
    let mut agent_a = Agent::start(&net.engines[0], "a", &agent_config(a, 100))?;
    let agent_b = Agent::start(&net.engines[1], "b", &agent_config(b, 300))?;

    let t0 = Instant::now();
    let split = ctl
        .wait_service(
            "standard/0",
            "buckets split by weight",
            Duration::from_secs(20),
            |s| {
                let sl = slots(s);
                [a, b]
                    .iter()
                    .all(|x| engine(s, *x).is_some_and(|e| e["state"] == "usable"))
                    && sl.get(&a.to_string()) == Some(&64)
                    && sl.get(&b.to_string()) == Some(&192)
            },
        )
        .with_context(|| {
            format!(
                "A:\n{}\nB:\n{}",
                tail(&agent_a.log(), 20),
                tail(&agent_b.log(), 20)
            )
        })?;
    println!(
        "{prefix}: joined and split 64/192 after {:.1?}",
        t0.elapsed()
    );
    ensure!(
        split["designated"] == a.to_string(),
        "A (lowest address) designated: {split:#}"
    );
    ensure!(
        engine(&split, a).unwrap()["weight"] == 100 && engine(&split, b).unwrap()["weight"] == 300
    );
    common::check_plane_matches(&ctl.pin_root, &split)?;
    // The engines' side agrees.
    poll(Duration::from_secs(5), || {
        let sb = agent_b.status().ok()?;
        let s = &sb["services"][0];
        (s["designated"] == a.to_string() && s["assignment"]["bucket_count"] == 192).then_some(())
    })
    .with_context(|| format!("B's view: {:#}", agent_b.status().unwrap_or_default()))?;

    let removed = ctl.status()?["stats"]["events"]["engine_removed"]
        .as_u64()
        .unwrap_or(0);
    agent_a.process.signal(signal)?;
    let limit = match signal {
        // SHUTDOWN: removed at once; B hears of it within T and assigns 1.5 T later.
        Signal::SIGTERM => Duration::from_millis(T_MS * 5 / 2 + 1500),
        // Silence: removal after 3 T, then T and 1.5 T.
        _ => Duration::from_millis(T_MS * 11 / 2 + 1500),
    };
    let (s, took) = poll(limit + Duration::from_secs(5), || {
        let s = ctl.service("standard/0").ok()?;
        let sl = slots(&s);
        (sl.len() == 1 && sl.get(&b.to_string()) == Some(&256) && engine(&s, a).is_none())
            .then_some(s)
    })
    .with_context(|| {
        format!(
            "B never held all buckets: {:#}\nrouter:\n{}\nB:\n{}",
            ctl.service("standard/0").unwrap_or_default(),
            tail(&ctl.log(), 30),
            tail(&agent_b.log(), 30)
        )
    })?;
    println!(
        "{prefix}: {signal} of the designated engine -> all 256 buckets on the other after {} ms \
         (T = {T_MS} ms, bound {} ms)",
        took.as_millis(),
        limit.as_millis()
    );
    ensure!(took <= limit, "failover took {took:?}, more than {limit:?}");
    ensure!(s["designated"] == b.to_string(), "B designated now: {s:#}");
    common::check_plane_matches(&ctl.pin_root, &s)?;
    let events = ctl.status()?["stats"]["events"].clone();
    ensure!(
        events["engine_removed"].as_u64() == Some(removed + 1),
        "{events:#}"
    );
    if signal == Signal::SIGTERM {
        let st = agent_a.process.wait_timeout(Duration::from_secs(5))?;
        ensure!(
            st.success(),
            "engine-agent exits cleanly after SIGTERM: {st}"
        );
        ensure!(
            ctl.log().contains("Shutdown"),
            "the router logs the SHUTDOWN removal:\n{}",
            tail(&ctl.log(), 20)
        );
    }
    // B's own view follows once the router's next I-See-You reflects the new assignment.
    poll(Duration::from_millis(T_MS * 3), || {
        let sb = agent_b.status().ok()?;
        let s = &sb["services"][0];
        (s["designated_is_us"] == true && s["assignment"]["bucket_count"] == 256).then_some(())
    })
    .with_context(|| format!("B's view: {:#}", agent_b.status().unwrap_or_default()))?;
    Ok(took)
}

#[test]
fn sigterm_of_the_designated_engine_moves_its_buckets() {
    if let Err(e) = failover("failterm", Signal::SIGTERM) {
        panic!("{e:#}");
    }
}

#[test]
fn sigkill_of_the_designated_engine_moves_its_buckets_after_the_timeout() {
    if let Err(e) = failover("failkill", Signal::SIGKILL) {
        panic!("{e:#}");
    }
}
