//! Several routers in one service group, each `redirector-ctl` with its own control socket
//! and pin root, XDP on its own client-facing veth:
//! - one engine-agent announcing to two routers by unicast: both list it usable and program
//!   the same assignment (in `show` and in their pinned maps);
//! - a multicast service group (routers and engines on `224.0.1.77`, TTL 1, across the
//!   bridge): two controllers and two engine-agents agree on the members, the designated
//!   engine and the buckets.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use common::{bucket_owners, engine, engine_ip, poll, router_ip, slots, Net};
use netns_tests::daemons::{tail, Agent, Ctl, CtlConfig};

const T_MS: u64 = 1000;
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 1, 77);

fn routers(net: &Net, services: &str) -> Result<Vec<Ctl>> {
    let mut out = Vec::new();
    for (i, host) in net.routers.iter().enumerate() {
        let mut cfg = CtlConfig::new(router_ip(i), &["cli0"], services);
        cfg.here_i_am_ms = T_MS;
        cfg.multicast_interval_ms = T_MS;
        out.push(Ctl::start(host, &format!("r{}", i + 1), &cfg)?);
    }
    Ok(out)
}

/// Waits until every router shows `want` (engine → slots) with every listed engine usable,
/// and returns each router's service.
fn wait_all(ctls: &[Ctl], want: &[(Ipv4Addr, u64)], timeout: Duration) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for ctl in ctls {
        let s = ctl.wait_service("standard/0", "engines usable and assigned", timeout, |s| {
            let sl = slots(s);
            sl.len() == want.len()
                && want.iter().all(|(e, n)| {
                    engine(s, *e).is_some_and(|x| x["state"] == "usable")
                        && sl.get(&e.to_string()) == Some(n)
                })
        })?;
        out.push(s);
    }
    Ok(out)
}

/// The routers agree: same buckets, same designated engine, each pinned data plane holds
/// what its `show` says.
fn check_agreement(ctls: &[Ctl], services: &[Value]) -> Result<()> {
    let first = bucket_owners(&services[0]).context("buckets")?;
    for (ctl, s) in ctls.iter().zip(services) {
        ensure!(
            bucket_owners(s).as_ref() == Some(&first),
            "{}: other buckets: {s:#}",
            ctl.name
        );
        ensure!(
            s["designated"] == services[0]["designated"],
            "{}: {s:#}",
            ctl.name
        );
        common::check_plane_matches(&ctl.pin_root, s)
            .with_context(|| format!("{}'s data plane", ctl.name))?;
    }
    let planes: Vec<_> = ctls
        .iter()
        .map(|c| common::read_plane(&c.pin_root).map(|p| p.service(0, false).cloned()))
        .collect::<Result<_>>()?;
    ensure!(
        planes.windows(2).all(|w| w[0] == w[1]),
        "data planes differ: {planes:?}"
    );
    Ok(())
}

#[test]
fn one_engine_two_routers_same_assignment() {
    if let Err(e) = one_engine_two_routers() {
        panic!("{e:#}");
    }
}

fn one_engine_two_routers() -> Result<()> {
    Net::new("tworouter", 2, 1)?.run(one_engine_two_routers_in)
}

fn one_engine_two_routers_in(net: &Net) -> Result<()> {
    let ctls = routers(net, "[[service]]\nid = 0\n")?;
    let e = engine_ip(0);
    let agent = Agent::start(
        &net.engines[0],
        "e1",
        &format!(
            "address = \"{e}\"\nrouters = [\"{}\", \"{}\"]\n[timers]\nhere_i_am_ms = {T_MS}\n[[service]]\nid = 0\nweight = 100\n",
            router_ip(0),
            router_ip(1)
        ),
    )?;
    let t0 = Instant::now();
    let services = wait_all(&ctls, &[(e, 256)], Duration::from_secs(20))
        .with_context(|| format!("agent:\n{}", tail(&agent.log(), 30)))?;
    println!(
        "two routers: both programmed all 256 buckets to {e} after {:.1?}",
        t0.elapsed()
    );
    check_agreement(&ctls, &services)?;
    for (i, s) in services.iter().enumerate() {
        ensure!(s["designated"] == e.to_string(), "router {i}: {s:#}");
        // Each router sees the engine report both routers.
        let want: Vec<String> = vec![router_ip(0).to_string(), router_ip(1).to_string()];
        ensure!(s["routers"] == serde_json::json!(want), "router {i}: {s:#}");
    }
    let (st, _) = poll(Duration::from_secs(5), || {
        let st = agent.status().ok()?;
        let s = &st["services"][0];
        (s["routers"].as_array().map(Vec::len) == Some(2) && s["assignment"]["bucket_count"] == 256)
            .then_some(st)
    })
    .with_context(|| format!("agent: {:#}", agent.status().unwrap_or_default()))?;
    ensure!(st["services"][0]["designated_is_us"] == true, "{st:#}");
    Ok(())
}

#[test]
fn multicast_group_two_routers_two_engines_agree() {
    if let Err(e) = multicast_group() {
        panic!("{e:#}");
    }
}

fn multicast_group() -> Result<()> {
    Net::new("mcast", 2, 2)?.run(multicast_group_in)
}

fn multicast_group_in(net: &Net) -> Result<()> {
    let ctls = routers(
        net,
        &format!("[[service]]\nid = 0\nmulticast = \"{GROUP}\"\n"),
    )?;
    let (a, b) = (engine_ip(0), engine_ip(1));
    let agent_cfg = |addr: Ipv4Addr, weight: u16| {
        format!(
            "address = \"{addr}\"\nmulticast = \"{GROUP}\"\nmulticast_ttl = 1\n[timers]\nhere_i_am_ms = {T_MS}\n\
             [[service]]\nid = 0\nweight = {weight}\n"
        )
    };
    let agents = [
        Agent::start(&net.engines[0], "a", &agent_cfg(a, 100))?,
        Agent::start(&net.engines[1], "b", &agent_cfg(b, 300))?,
    ];
    let t0 = Instant::now();
    let services =
        wait_all(&ctls, &[(a, 64), (b, 192)], Duration::from_secs(30)).with_context(|| {
            format!(
                "A:\n{}\nB:\n{}",
                tail(&agents[0].log(), 30),
                tail(&agents[1].log(), 30)
            )
        })?;
    println!(
        "multicast {GROUP}: both routers list both engines, 64/192, after {:.1?}",
        t0.elapsed()
    );
    check_agreement(&ctls, &services)?;
    for s in &services {
        ensure!(s["multicast"] == GROUP.to_string(), "{s:#}");
        ensure!(s["designated"] == a.to_string(), "{s:#}");
    }
    let want_routers = serde_json::json!([router_ip(0).to_string(), router_ip(1).to_string()]);
    let want_engines = serde_json::json!([a.to_string(), b.to_string()]);
    for (agent, held) in agents.iter().zip([64, 192]) {
        let (st, _) = poll(Duration::from_secs(5), || {
            let st = agent.status().ok()?;
            let s = &st["services"][0];
            let routers: Vec<Value> = s["routers"]
                .as_array()?
                .iter()
                .map(|r| r["address"].clone())
                .collect();
            (Value::Array(routers) == want_routers
                && s["engines"] == want_engines
                && s["designated"] == a.to_string()
                && s["assignment"]["bucket_count"] == held)
                .then_some(st)
        })
        .with_context(|| format!("{}: {:#}", agent.name, agent.status().unwrap_or_default()))?;
        ensure!(st["multicast"] == GROUP.to_string(), "{st:#}");
    }
    // Both routers heard the engines' group Here-I-Ams.
    for ctl in &ctls {
        let st = ctl.status()?;
        ensure!(
            st["stats"]["messages_in"]["here_i_am"].as_u64() >= Some(2),
            "{:#}",
            st["stats"]
        );
    }
    Ok(())
}
