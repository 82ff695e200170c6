//! End to end, malformed traffic at every interface (see `e2e_common` for the lab), sent
//! with AF_PACKET sockets while the real daemons run:
//!
//! - client → router `r0` (XDP, client side): truncated and lying IPv4 headers, a
//!   truncated TCP header to port 80, non-IP frames of random bytes, GRE from a stranger:
//!   passed to the stack and counted (`Malformed`, `NotIpv4`, `NoService`);
//! - engine → router `r1` (XDP, engine side): GRE from the engine that is truncated, not
//!   WCCP, or has a broken inner packet (passed untouched, `ReturnBad`), WCCP GRE from a
//!   stranger (not decapsulated), random bytes;
//! - router → engine `eth0` (tc): WCCP GRE from a stranger (`stranger`), truncated GRE
//!   (`truncated`), bad GRE flags and redirect-header flags (`bad_header`), bad inner
//!   headers (`bad_inner`), random bytes;
//! - server → router `r2` (no program): random bytes.
//!
//! Router verdicts are read from the pinned stats map by reason (`show` has per-engine and
//! per-service counters only), engine verdicts from `engine-agent show --json`. Afterwards
//! both daemons still answer `show` and a new flow is still proxied.

mod e2e_common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e_common::*;

const N: u64 = 10;

#[test]
fn malformed_traffic_everywhere_is_dropped_or_passed_and_counted() {
    if let Err(e) = World::new("e2ebad", 1).and_then(|w| w.run(malformed)) {
        panic!("{e:#}");
    }
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, k: &str) -> u64 {
    after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// 46 to 245 random bytes.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let n = 46 + (rng.next() % 200) as usize;
    random_bytes(rng, n)
}

fn malformed(w: &World) -> Result<()> {
    let ctl = start_ctl(w, "r", 30_000)?;
    let e1 = Engine::start(w, 0, &AgentExtra::default())?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;
    let mut rng = Rng(0xdead_beef_1234_5678);
    let stranger = Ipv4Addr::new(10, 2, 0, 99);
    let (c0, r0) = (w.client.mac("c0")?, w.router.mac("r0")?);
    let (r1, eth0) = (w.router.mac("r1")?, w.engines[0].mac("eth0")?);
    let (s0, r2) = (w.server_host.mac("s0")?, w.router.mac("r2")?);
    let router0 = router_reasons(&ctl.pin_root)?;
    let engine0 = e1.counters()?;

    // 1. Client side, into r0's XDP program.
    let sock = RawSocket::open(&w.client, "c0")?;
    for i in 0..N {
        let mut f = eth(r0, c0, 0x0800);
        // Ten bytes of an IPv4 header.
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]);
        sock.send(&f)?;
        // A header whose total length is far beyond the frame.
        let mut f = eth(r0, c0, 0x0800);
        let mut ip = ipv4(CLIENT, SERVER, 6, 20);
        ip[2..4].copy_from_slice(&1400u16.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp(
            CLIENT,
            SERVER,
            50_000 + i as u16,
            HTTP_PORT,
            0x02,
            &[],
        ));
        sock.send(&f)?;
        // Version 6 in an IPv4 frame.
        let mut f = eth(r0, c0, 0x0800);
        let mut ip = ipv4(CLIENT, SERVER, 6, 20);
        ip[0] = 0x65;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 20]);
        sock.send(&f)?;
        // TCP to port 80 with 8 of its 20 header bytes.
        let mut f = eth(r0, c0, 0x0800);
        f.extend_from_slice(&ipv4(CLIENT, SERVER, 6, 8));
        f.extend_from_slice(&tcp(CLIENT, SERVER, 50_100 + i as u16, HTTP_PORT, 0x02, &[])[..8]);
        sock.send(&f)?;
        // Random bytes, not IP.
        let mut f = eth(r0, c0, 0x88b5);
        f.extend_from_slice(&random_frame(&mut rng));
        sock.send(&f)?;
        // Truncated GRE from the client (a stranger to the router).
        let mut f = eth(r0, c0, 0x0800);
        f.extend_from_slice(&ipv4(CLIENT, ROUTER_C, 47, 2));
        f.extend_from_slice(&[0, 0]);
        sock.send(&f)?;
    }

    // 2. Engine side, into r1's XDP program (returns are recognised by source address).
    let e = engine_ip(0);
    let sock = RawSocket::open(&w.engines[0], "eth0")?;
    for i in 0..N {
        // GRE from the engine, cut after two bytes.
        let mut f = eth(r1, eth0, 0x0800);
        f.extend_from_slice(&ipv4(e, ROUTER_E, 47, 2));
        f.extend_from_slice(&[0, 0]);
        sock.send(&f)?;
        // GRE from the engine that is not WCCP (protocol 0x0800).
        let inner = client_syn(51_000 + i as u16);
        let mut f = gre_frame(r1, eth0, e, ROUTER_E, [0; 4], &inner);
        f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&[0x08, 0x00]);
        sock.send(&f)?;
        // WCCP GRE from the engine whose inner packet is not IPv4.
        let mut bad = client_syn(51_100 + i as u16);
        bad[0] = 0x05;
        sock.send(&gre_frame(r1, eth0, e, ROUTER_E, [0; 4], &bad))?;
        // WCCP GRE from a stranger on the engines' LAN: not a return.
        let inner = client_syn(51_200 + i as u16);
        sock.send(&gre_frame(r1, eth0, stranger, ROUTER_E, [0; 4], &inner))?;
        // Random bytes.
        let mut f = eth(r1, eth0, 0x0800);
        f.extend_from_slice(&random_frame(&mut rng));
        sock.send(&f)?;
    }

    // 3. Into the engine's tc program, from the router's side of the LAN.
    let sock = RawSocket::open(&w.router, "r1")?;
    for i in 0..N {
        let inner = client_syn(52_000 + i as u16);
        // WCCP GRE from a stranger.
        sock.send(&gre_frame(eth0, r1, stranger, e, [0; 4], &inner))?;
        // From the router, cut inside the redirect header.
        let mut f = eth(eth0, r1, 0x0800);
        f.extend_from_slice(&ipv4(ROUTER_E, e, 47, 6));
        f.extend_from_slice(&[0, 0, 0x88, 0x3e, 0, 0]);
        sock.send(&f)?;
        // Unknown redirect-header flags; GRE flags set.
        sock.send(&gre_frame(eth0, r1, ROUTER_E, e, [0xf0, 90, 0, 0], &inner))?;
        let mut f = gre_frame(eth0, r1, ROUTER_E, e, [0x01, 90, 0, 0], &inner);
        f[14 + 20] = 0x80;
        sock.send(&f)?;
        // Inner packet: not IPv4; longer than the frame.
        let mut bad = client_syn(52_100 + i as u16);
        bad[0] = 0x65;
        sock.send(&gre_frame(eth0, r1, ROUTER_E, e, [0x01, 90, 0, 0], &bad))?;
        let mut bad = client_syn(52_200 + i as u16);
        bad[2..4].copy_from_slice(&1400u16.to_be_bytes());
        sock.send(&gre_frame(eth0, r1, ROUTER_E, e, [0x01, 90, 0, 0], &bad))?;
        // Random bytes.
        let mut f = eth(eth0, r1, 0x0800);
        f.extend_from_slice(&random_frame(&mut rng));
        sock.send(&f)?;
    }

    // 4. Server side (no program there).
    let sock = RawSocket::open(&w.server_host, "s0")?;
    for _ in 0..N {
        let mut f = eth(r2, s0, 0x0800);
        f.extend_from_slice(&random_frame(&mut rng));
        sock.send(&f)?;
        let mut f = eth(r2, s0, 0x88b5);
        f.extend_from_slice(&random_bytes(&mut rng, 60));
        sock.send(&f)?;
    }
    std::thread::sleep(Duration::from_millis(300));

    let router1 = router_reasons(&ctl.pin_root)?;
    let engine1 = e1.counters()?;
    let rd = |k: &str| delta(&router0, &router1, k);
    let ed = |k: &str| delta(&engine0, &engine1, k);
    println!(
        "(7) router verdicts (pinned stats, delta): {:?}",
        router1
            .keys()
            .map(|k| (k.clone(), rd(k)))
            .filter(|(_, v)| *v > 0)
            .collect::<BTreeMap<_, _>>()
    );
    println!(
        "(7) engine counters (show --json, delta): {:?}",
        engine1
            .keys()
            .map(|k| (k.clone(), ed(k)))
            .filter(|(_, v)| *v > 0)
            .collect::<BTreeMap<_, _>>()
    );
    // r0: four malformed kinds, random non-IP, GRE that no engine sent.
    ensure!(rd("Malformed") >= 4 * N, "Malformed {}", rd("Malformed"));
    ensure!(rd("NotIpv4") >= N, "NotIpv4 {}", rd("NotIpv4"));
    ensure!(rd("NoService") >= 2 * N, "NoService {}", rd("NoService"));
    // r1: the engine's three broken GREs pass untouched; the stranger's is never
    // decapsulated.
    ensure!(rd("ReturnBad") >= 3 * N, "ReturnBad {}", rd("ReturnBad"));
    ensure!(
        rd("ReturnGre") == 0,
        "nothing decapsulated: {}",
        rd("ReturnGre")
    );
    // The engine's tc program.
    ensure!(ed("stranger") >= N, "stranger {}", ed("stranger"));
    ensure!(ed("truncated") >= N, "truncated {}", ed("truncated"));
    ensure!(ed("bad_header") >= 2 * N, "bad_header {}", ed("bad_header"));
    ensure!(ed("bad_inner") >= 2 * N, "bad_inner {}", ed("bad_inner"));
    ensure!(ed("proxied_syn") == 0, "no forged SYN reached the proxy");
    ensure!(e1.proxy().accepted().is_empty(), "{}", e1.proxy().log());

    // Nothing crashed: both answer show, and a real flow is still proxied.
    let mut ctl = ctl;
    ensure!(ctl.process.is_running(), "redirector-ctl still runs");
    let st = ctl.status()?;
    let shown = ctl.show_cli(&["stats"])?;
    println!(
        "(7) router show stats: errors {} dataplane {}",
        shown["errors"], shown["dataplane"]
    );
    ensure!(st["services"][0]["state"] == "active", "{st:#}");
    let mut e1 = e1;
    ensure!(
        e1.agent.as_mut().unwrap().process.is_running(),
        "engine-agent still runs"
    );
    e1.agent().status()?;
    let (body, me) = http_get(
        &w.client,
        0,
        SocketAddrV4::new(SERVER, HTTP_PORT),
        "/",
        Duration::from_secs(5),
    )?;
    ensure!(
        body.starts_with(&format!("hello {}:", engine_ip(0))),
        "{body:?}"
    );
    ensure!(e1.proxy().saw(me));
    Ok(())
}
