//! End to end, real daemons and real TCP (see `e2e_common` for the lab):
//!
//! 1. curl from the client to the server's port 80 is served through the engine's
//!    transparent proxy (the proxy logs it, the server sees the engine, the agent's
//!    data-plane counters count the SYN and the established segments);
//! 3. a flow a return rule names (destination prefix and port) is returned by the engine
//!    and reaches the server directly (the server sees the client);
//! 2. with two engines, each of a few hundred flows from random client source ports lands
//!    on the engine its bucket names (bucket from `wccp::assign`'s hash with the service
//!    flags and the assignment of `redirector-ctl show --json`, engine from the proxy logs);
//! 4. both agents stopped: traffic flows directly (fail open).

mod e2e_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e_common::*;
use netns_tests::daemons::{tail, Ctl};

/// GET / from the client's `src_port` (0: any) to `server`:80: the flow every test here
/// sends.
fn get(
    w: &World,
    src_port: u16,
    server: Ipv4Addr,
    timeout: Duration,
) -> Result<(String, SocketAddr)> {
    http_get(
        &w.client,
        src_port,
        SocketAddrV4::new(server, HTTP_PORT),
        "/",
        timeout,
    )
}

/// Whether `server` answered the client `me` itself (the flow went directly).
fn direct(body: &str, me: SocketAddr, server: Ipv4Addr) -> bool {
    body.trim_end() == format!("hello {me} -> {server}:80")
}

/// Whether the server answered engine 0's proxy (the flow was redirected to it).
fn proxied_by_engine0(body: &str) -> bool {
    body.starts_with(&format!("hello {}:", engine_ip(0)))
}

/// The agent's return rule for `SERVER2`:80, the bypassed flow's destination.
fn return_server2() -> String {
    format!("[[return_rule]]\nprefix = \"{SERVER2}/32\"\nport = {HTTP_PORT}\n")
}

/// Waits for the only engine to hold all 256 buckets (the logs on failure).
fn wait_one_engine(ctl: &Ctl, e1: &Engine) -> Result<(serde_json::Value, Duration)> {
    wait_slots(ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(ctl), &[e1]))
}

/// The engine's and the router's verdict counters, empty where unreadable: for the
/// context of a failed flow.
fn verdicts(e1: &Engine, ctl: &Ctl) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    (
        e1.counters().unwrap_or_default(),
        router_reasons(&ctl.pin_root).unwrap_or_default(),
    )
}

/// Runs `f` in a fresh lab with `engines` engines and panics with the whole error chain:
/// the body of every test here.
#[track_caller]
fn in_world(prefix: &str, engines: usize, f: fn(&World) -> Result<()>) {
    if let Err(e) = World::new(prefix, engines).and_then(|w| w.run(f)) {
        panic!("{e:#}");
    }
}

/// The controller with `ifaces` (its interface keys) and one engine with `service` keys
/// and the return rule for `SERVER2`, once the engine holds all buckets: the set-up of the
/// two bypass tests that configure the router's interfaces themselves.
fn one_returning_engine(
    w: &World,
    ifaces: &str,
    service: &str,
) -> Result<(Ctl, Engine, serde_json::Value)> {
    let files = ctl_files_with(w, "r", 30_000, ifaces)?;
    let ctl = spawn_ctl(w, &files)?;
    let extra = AgentExtra {
        service: service.into(),
        tables: return_server2(),
        ..AgentExtra::default()
    };
    let e1 = Engine::start(w, 0, &extra)?;
    let (s, _) = wait_one_engine(&ctl, &e1)?;
    Ok((ctl, e1, s))
}

#[test]
fn curl_through_the_proxy_and_a_bypassed_flow_returned() {
    in_world("e2ecurl", 1, curl_and_bypass);
}

fn curl_and_bypass(w: &World) -> Result<()> {
    let ctl = start_ctl(w, "r", 30_000)?;
    let t0 = Instant::now();
    let extra = AgentExtra {
        // SERVER2:80 is not for the proxy: returned to the router.
        tables: return_server2(),
        ..AgentExtra::default()
    };
    let e1 = Engine::start(w, 0, &extra)?;
    let (_, took) = wait_one_engine(&ctl, &e1)?;
    println!(
        "(1) engine joined, all 256 buckets, next hop resolved {} ms after start ({} ms wait)",
        ms(t0.elapsed()),
        ms(took)
    );

    // (1) curl, Debian's.
    let out = w.client.run(w.client.command("curl")?.args([
        "-s",
        "-S",
        "-m",
        "5",
        "-w",
        "\nlocal_port %{local_port}\n",
        &format!("http://{SERVER}/"),
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("local_port ")?.trim().parse().ok())
        .with_context(|| format!("curl said {text:?}"))?;
    let peer = SocketAddr::from((CLIENT, port));
    println!("(1) curl: {}", text.lines().next().unwrap_or(""));
    ensure!(
        text.starts_with(&format!("hello {}:", engine_ip(0)))
            && text.contains(&format!("-> {SERVER}:80")),
        "the server answered the proxy's connection (from the engine): {text:?}\n{}",
        logs(Some(&ctl), &[&e1])
    );
    ensure!(
        e1.proxy().saw(peer),
        "the proxy logged {peer}:\n{}",
        e1.proxy().log()
    );
    ensure!(
        e1.proxy()
            .log()
            .contains(&format!("accept {peer} -> {SERVER}:80")),
        "the proxy's accepted socket has the original destination:\n{}",
        e1.proxy().log()
    );
    ensure!(
        w.server().accepted_from(peer) == 0,
        "the client never reached the server itself"
    );
    let shown = e1.show_cli()?;
    let c: BTreeMap<String, u64> = shown["dataplane"]["counters"]
        .as_object()
        .context("engine-agent show --json has dataplane.counters")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    println!("(1) engine-agent show --json dataplane counters: {c:?}");
    ensure!(shown["mode"] == "wccp+dataplane", "{:#}", shown["mode"]);
    ensure!(c.get("proxied_syn").copied().unwrap_or(0) >= 1, "{c:?}");
    ensure!(c.get("established").copied().unwrap_or(0) >= 3, "{c:?}");
    for bad in [
        "stranger",
        "truncated",
        "bad_header",
        "bad_inner",
        "assign_failed",
    ] {
        ensure!(!c.contains_key(bad), "{bad}: {c:?}");
    }
    let s = ctl.service(SERVICE)?;
    let e = &s["engines"][0];
    ensure!(
        e["packets_redirected"].as_u64().unwrap_or(0) >= 4,
        "the router counts what it redirected: {e:#}"
    );

    // (3) A bypassed flow: redirected, returned by the rule, decapsulated by the router,
    // answered by the server to the client itself.
    let before = e1.counter("return_rule");
    let returned_before = s["engines"][0]["packets_returned"].as_u64().unwrap_or(0);
    let (body, me) =
        get(w, 0, SERVER2, Duration::from_secs(5)).with_context(|| logs(Some(&ctl), &[&e1]))?;
    println!("(3) bypassed flow to {SERVER2}: {}", body.trim_end());
    ensure!(
        direct(&body, me, SERVER2),
        "the server saw the client itself: {body:?}"
    );
    ensure!(!e1.proxy().saw(me), "the proxy never saw {me}");
    let after = e1.counter("return_rule");
    ensure!(after >= before + 3, "return_rule {before} -> {after}");
    let s = ctl.service(SERVICE)?;
    let returned = s["engines"][0]["packets_returned"].as_u64().unwrap_or(0);
    ensure!(
        returned >= returned_before + 3,
        "the router decapsulated the returns: {returned_before} -> {returned}"
    );
    println!(
        "(3) engine return_rule {before} -> {after}, router packets_returned {returned_before} -> {returned}"
    );

    // `redirector-ctl stop --clear`: redirection removed at once, nothing left pinned.
    let mut ctl = ctl;
    let out = std::process::Command::new(netns_tests::daemons::binary("redirector-ctl")?)
        .args(["stop", "--clear", "-s"])
        .arg(&ctl.socket)
        .output()?;
    ensure!(
        out.status.success(),
        "stop --clear: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    ctl.process.wait_timeout(Duration::from_secs(10))?;
    let (body, me) = get(w, 0, SERVER, Duration::from_secs(5))?;
    ensure!(
        direct(&body, me, SERVER),
        "served directly right after stop --clear: {body:?}"
    );
    ensure!(!ctl.pin_root.exists(), "pin root removed");
    println!(
        "(4'') stop --clear: controller gone in {} ms, the next flow went directly, pin root removed",
        ms(t0.elapsed())
    );
    drop(e1);
    drop(ctl);
    Ok(())
}

#[test]
fn flows_land_on_their_buckets_engine_and_fail_open_without_engines() {
    in_world("e2ehash", 2, buckets_and_fail_open);
}

fn buckets_and_fail_open(w: &World) -> Result<()> {
    let ctl = start_ctl(w, "r", 30_000)?;
    let mut e1 = Engine::start(w, 0, &AgentExtra::default())?;
    let mut e2 = Engine::start(w, 1, &AgentExtra::default())?;
    let (_, took) = wait_split(&ctl, &[engine_ip(0), engine_ip(1)], Duration::from_secs(25))
        .with_context(|| logs(Some(&ctl), &[&e1, &e2]))?;
    println!("(2) two engines, 128 buckets each, after {} ms", ms(took));
    // The assignment and the flags as the operator's `redirector-ctl show --json` has them.
    let s = shown_service(&ctl)?;
    let flags = flag_bits(&s);
    ensure!(
        flags & wccp::assign::flags::SRC_PORT_HASH != 0,
        "the service hashes the source port: {:#}",
        s["definition"]
    );

    // (2) A few hundred flows from random source ports.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ports = BTreeSet::new();
    while ports.len() < 300 {
        ports.insert(20_000 + (rng.next() % 40_000) as u16);
    }
    let t0 = Instant::now();
    let mut expected: BTreeMap<u16, Ipv4Addr> = BTreeMap::new();
    for &p in &ports {
        let owner = owner_of(&s, p)?.with_context(|| format!("bucket of port {p} unassigned"))?;
        let (body, _) = get(w, p, SERVER, Duration::from_secs(5))
            .with_context(|| format!("port {p}\n{}", logs(Some(&ctl), &[&e1, &e2])))?;
        ensure!(
            body.starts_with(&format!("hello {owner}:")),
            "port {p}: the server heard from {owner}'s proxy: {body:?}"
        );
        expected.insert(p, owner);
    }
    let elapsed = t0.elapsed();
    let seen = [e1.proxy().accepted(), e2.proxy().accepted()];
    let mut per_engine = [0usize; 2];
    let mut wrong = Vec::new();
    for (&p, owner) in &expected {
        let peer = SocketAddr::from((CLIENT, p));
        let by: Vec<usize> = (0..2).filter(|&i| seen[i].contains(&peer)).collect();
        let want = if *owner == engine_ip(0) { 0 } else { 1 };
        if by != [want] {
            wrong.push(format!("port {p}: bucket owner {owner}, proxies {by:?}"));
        } else {
            per_engine[want] += 1;
        }
    }
    println!(
        "(2) {} flows in {} ms: {} on {} and {} on {}, {} misplaced",
        expected.len(),
        ms(elapsed),
        per_engine[0],
        engine_ip(0),
        per_engine[1],
        engine_ip(1),
        wrong.len()
    );
    ensure!(wrong.is_empty(), "misplaced flows:\n{}", wrong.join("\n"));
    ensure!(
        per_engine[0] > 50 && per_engine[1] > 50,
        "both engines took flows: {per_engine:?}"
    );
    for (i, e) in [&e1, &e2].iter().enumerate() {
        let n = e.counter("proxied_syn");
        ensure!(
            n as usize >= per_engine[i],
            "engine {} proxied_syn {n} < {}",
            i + 1,
            per_engine[i]
        );
    }

    // (4) Both agents stop (SHUTDOWN): the router's view empties and traffic flows
    // directly.
    let t0 = Instant::now();
    e1.agent.take();
    e2.agent.take();
    let stopped = t0.elapsed();
    let gone = wait_for(
        "the service to have no assignment",
        Duration::from_secs(10),
        || {
            let s = ctl.service(SERVICE)?;
            Ok(slots(&s).is_empty() && s["engines"].as_array().is_none_or(|e| e.is_empty()))
        },
    )
    .with_context(|| format!("{:#}", ctl.service(SERVICE).unwrap_or_default()))?;
    println!(
        "(4) agents stopped in {} ms; router without engines {} ms later",
        ms(stopped),
        ms(gone)
    );
    let before = [e1.proxy().accepted().len(), e2.proxy().accepted().len()];
    for p in [20_001u16, 30_002, 40_003, 50_004, 60_005] {
        let (body, me) =
            get(w, p, SERVER, Duration::from_secs(5)).with_context(|| logs(Some(&ctl), &[]))?;
        ensure!(
            direct(&body, me, SERVER),
            "port {p}: served directly: {body:?}"
        );
    }
    let after = [e1.proxy().accepted().len(), e2.proxy().accepted().len()];
    ensure!(
        before == after,
        "no proxy saw them: {before:?} -> {after:?}"
    );
    let st = ctl.status()?;
    let failed_open = st["stats"]["dataplane"]["services"][SERVICE]["failed_open"]
        .as_u64()
        .unwrap_or(0);
    println!("(4) 5 flows served directly; service packets failed open: {failed_open}");
    drop(e1);
    drop(e2);
    drop(ctl);
    Ok(())
}

/// The other way to configure the engine-facing interface: in `redirect_in` (not
/// excluded). Returned GRE is decapsulated there just the same, and the engines' own
/// traffic is never redirected (it comes from an engine's address).
#[test]
fn bypassed_flow_returned_with_the_engine_side_redirected_in() {
    in_world("e2ein", 1, bypass_redirected_in);
}

fn bypass_redirected_in(w: &World) -> Result<()> {
    let (ctl, e1, _) = one_returning_engine(w, "redirect_in = [\"r0\", \"r1\"]", "")?;
    let (body, me) =
        get(w, 0, SERVER, Duration::from_secs(5)).with_context(|| logs(Some(&ctl), &[&e1]))?;
    ensure!(proxied_by_engine0(&body), "proxied: {body:?}");
    ensure!(e1.proxy().saw(me));
    let (body, me) = get(w, 0, SERVER2, Duration::from_secs(3)).with_context(|| {
        let (e, r) = verdicts(&e1, &ctl);
        format!(
            "the bypassed flow, engine side in redirect_in: engine {e:?}, router {r:?}\n{}",
            logs(Some(&ctl), &[&e1])
        )
    })?;
    ensure!(direct(&body, me, SERVER2), "{body:?}");
    let st = ctl.status()?;
    println!(
        "(3') engine side in redirect_in: bypassed flow returned and served directly; router \
         interfaces {}, excluded {}",
        st["dataplane"]["interfaces"], st["dataplane"]["excluded"]
    );
    Ok(())
}

/// (4, crash variant) Both agents killed with SIGKILL: no SHUTDOWN, so the router removes
/// them after 3 T of silence; until then their buckets are black holes (the engines'
/// packet side died with the agents). Measured: the time until new flows go directly.
#[test]
fn killed_engines_fail_open_after_their_removal() {
    in_world("e2ecrash", 2, engines_killed);
}

fn engines_killed(w: &World) -> Result<()> {
    use nix::sys::signal::Signal;
    let ctl = start_ctl(w, "r", 30_000)?;
    let mut e1 = Engine::start(w, 0, &AgentExtra::default())?;
    let mut e2 = Engine::start(w, 1, &AgentExtra::default())?;
    wait_split(&ctl, &[engine_ip(0), engine_ip(1)], Duration::from_secs(25))
        .with_context(|| logs(Some(&ctl), &[&e1, &e2]))?;
    let t0 = Instant::now();
    for e in [&mut e1, &mut e2] {
        let a = e.agent.as_mut().unwrap();
        a.process.signal(Signal::SIGKILL)?;
        a.process.wait_timeout(Duration::from_secs(5))?;
    }
    let (mut failed, mut port) = (0, 47_000u16);
    let first_direct = loop {
        ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "no direct flow within 10 s\n{}",
            logs(Some(&ctl), &[])
        );
        port += 1;
        match get(w, port, SERVER, Duration::from_millis(300)) {
            Ok((body, me)) if direct(&body, me, SERVER) => break t0.elapsed(),
            Ok((body, _)) => anyhow::bail!("unexpected answer {body:?}"),
            Err(_) => failed += 1,
        }
    };
    let removed = wait_for(
        "no engines in the router's view",
        Duration::from_secs(10),
        || {
            let s = ctl.service(SERVICE)?;
            Ok(slots(&s).is_empty())
        },
    )?;
    // From now on every flow goes directly.
    for p in 48_000..48_020u16 {
        let (body, me) = get(w, p, SERVER, Duration::from_secs(2))?;
        ensure!(direct(&body, me, SERVER), "{body:?}");
    }
    println!(
        "(4') both agents killed (-9): first direct flow {} ms after the kill ({failed} attempts \
         of 300 ms timed out before: the black-hole window until the router's 3 T removal, \
         T = {T_MS} ms); 20 flows after that all direct",
        ms(first_direct),
    );
    let _ = removed;
    ensure!(
        first_direct < Duration::from_millis(T_MS * 3 + 2000),
        "took {first_direct:?}"
    );
    Ok(())
}

/// (1) and (3) with L2 forwarding and L2 return: the router rewrites the client's frames
/// to the engine's MAC; the engine takes new flows to its proxy and returns the bypassed
/// flow by swapping the MACs back, and the router forwards it (the engine side excluded,
/// so a returned frame is not redirected again; with the engine side in `redirect_in`
/// this branch's XDP program redirects it again, a loop of about 280 000 packets a
/// second between router and engine, measured: L2 returns are not recognised there).
#[test]
fn l2_forwarding_proxies_and_returns() {
    in_world("e2el2", 1, l2);
}

fn l2(w: &World) -> Result<()> {
    let (ctl, e1, s) = one_returning_engine(
        w,
        "redirect_in = [\"r0\"]\nexclude = [\"r1\"]",
        "forwarding = \"l2\"\nreturn = \"l2\"",
    )?;
    ensure!(
        s["engines"][0]["forwarding"] == "l2",
        "{:#}",
        s["engines"][0]
    );
    let (body, me) = get(w, 0, SERVER, Duration::from_secs(5)).with_context(|| {
        let (e, r) = verdicts(&e1, &ctl);
        format!(
            "L2: engine {e:?} router {r:?}\n{}",
            logs(Some(&ctl), &[&e1])
        )
    })?;
    ensure!(proxied_by_engine0(&body), "{body:?}");
    ensure!(e1.proxy().saw(me));
    let (body, me) = get(w, 0, SERVER2, Duration::from_secs(5)).with_context(|| {
        let (e, r) = verdicts(&e1, &ctl);
        format!("L2 bypass: engine {e:?} router {r:?}")
    })?;
    ensure!(direct(&body, me, SERVER2), "{body:?}");
    let c = e1.counters()?;
    let r = router_reasons(&ctl.pin_root)?;
    println!("(1/3 L2) proxied and returned by L2; engine {c:?}; router {r:?}");
    ensure!(
        c.get("l2").copied().unwrap_or(0) > 0 || reason(&r, "RedirectL2") > 0,
        "{c:?} {r:?}"
    );
    Ok(())
}

/// (2) with mask assignment: the engines ask for a 6-bit source-port mask (64 values);
/// each flow lands on the engine that `show --json`'s mask/value list names for its
/// masked source port.
#[test]
fn mask_assignment_flows_land_on_their_values_engine() {
    in_world("e2emask", 2, mask_flows);
}

fn mask_flows(w: &World) -> Result<()> {
    let ctl = start_ctl(w, "r", 30_000)?;
    let extra = AgentExtra {
        service: "assignment = \"mask\"\nmask = { src_port = 0x3f }".into(),
        ..AgentExtra::default()
    };
    let e1 = Engine::start(w, 0, &extra)?;
    let e2 = Engine::start(w, 1, &extra)?;
    let (_, took) = wait_slots(
        &ctl,
        &[(engine_ip(0), 32), (engine_ip(1), 32)],
        Duration::from_secs(25),
    )
    .with_context(|| logs(Some(&ctl), &[&e1, &e2]))?;
    let s = shown_service(&ctl)?;
    let sets = s["assignment"]["masks"]
        .as_array()
        .context("masks in show --json")?;
    ensure!(sets.len() == 1, "{sets:#?}");
    ensure!(sets[0]["mask"][2] == "0x003f", "{:#}", sets[0]["mask"]);
    let mut owner: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for v in sets[0]["values"].as_array().into_iter().flatten() {
        let key = v[0][2].as_str().unwrap_or("").to_string();
        owner.insert(key, v[1].as_str().unwrap_or("").parse()?);
    }
    ensure!(owner.len() == 64, "{} values", owner.len());
    println!("(2 mask) 64 mask values, 32 each, after {} ms", ms(took));
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut ports = BTreeSet::new();
    while ports.len() < 150 {
        ports.insert(20_000 + (rng.next() % 40_000) as u16);
    }
    let mut per = [0usize; 2];
    for &p in &ports {
        let want = owner[&format!("{:#06x}", p & 0x3f)];
        let (body, _) =
            get(w, p, SERVER, Duration::from_secs(5)).with_context(|| format!("port {p}"))?;
        ensure!(
            body.starts_with(&format!("hello {want}:")),
            "port {p} (value {:#06x}): expected {want}, got {body:?}",
            p & 0x3f
        );
        let i = usize::from(want != engine_ip(0));
        ensure!(
            [&e1, &e2][i].proxy().saw(SocketAddr::from((CLIENT, p))),
            "port {p}: engine {} proxy",
            i + 1
        );
        per[i] += 1;
    }
    println!(
        "(2 mask) {} flows: {} on {}, {} on {}, none misplaced",
        ports.len(),
        per[0],
        engine_ip(0),
        per[1],
        engine_ip(1)
    );
    Ok(())
}

/// (1) with `engine-agent run --dataplane-only`: another process speaks WCCP for the
/// engine (here a second engine-agent without `[dataplane]`, as a proxy with its own WCCP
/// would), the data-plane-only agent decapsulates the GRE to the transparent proxy.
#[test]
fn dataplane_only_agent_beside_a_wccp_speaker() {
    in_world("e2edponly", 1, dataplane_only);
}

fn dataplane_only(w: &World) -> Result<()> {
    use netns_tests::daemons::{binary, Agent};
    let ctl = start_ctl(w, "r", 30_000)?;
    let host = &w.engines[0];
    let proxy = Proxy::start(w, 0)?;
    // The WCCP speaker: no [dataplane] (mode "wccp").
    let full = agent_config(0, &AgentExtra::default());
    let wccp_only = full
        .split("[dataplane]")
        .next()
        .context("config shape")?
        .to_string();
    let speaker = Agent::start(host, "wccp", &wccp_only)?;
    // The packet side alone, with the full configuration (its [[service]] gives the ports).
    let dir = host.scratch_dir();
    let socket = dir.join("dp-agent.sock");
    let path = dir.join("dp-agent.toml");
    std::fs::write(
        &path,
        format!("control_socket = \"{}\"\n{full}", socket.display()),
    )?;
    let mut cmd = std::process::Command::new(binary("engine-agent")?);
    cmd.args(["run", "--dataplane-only", "--log-format", "json", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info");
    let process = host.spawn(&mut cmd)?;
    let packet_side = Agent {
        process,
        name: "dp".into(),
        socket,
    };
    wait_for(
        "the data-plane-only agent's socket",
        Duration::from_secs(15),
        || Ok(packet_side.status().is_ok()),
    )
    .with_context(|| packet_side.log())?;
    let st = packet_side.status()?;
    ensure!(st["mode"] == "dataplane-only", "{:#}", st["mode"]);
    ensure!(speaker.status()?["mode"] == "wccp");
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| format!("{}\n{}", tail(&ctl.log(), 20), tail(&speaker.log(), 20)))?;
    let (body, me) = get(w, 0, SERVER, Duration::from_secs(5)).with_context(|| {
        format!(
            "{:#}\n{}",
            packet_side.status().unwrap_or_default(),
            packet_side.log()
        )
    })?;
    ensure!(proxied_by_engine0(&body), "{body:?}");
    ensure!(proxy.saw(me));
    let c = packet_side.status()?["dataplane"]["counters"].clone();
    println!("(1 dataplane-only) proxied through the data-plane-only agent: counters {c}");
    ensure!(c["proxied_syn"].as_u64().unwrap_or(0) >= 1, "{c}");
    Ok(())
}
