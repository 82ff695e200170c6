//! End to end, malformed traffic at every interface (see `e2e_common` for the lab), sent
//! with AF_PACKET sockets while the real daemons run:
//!
//! - client → router `r0` (XDP, client side): truncated and lying IPv4 headers, a
//!   truncated TCP header to port 80, non-IP frames of random bytes, GRE from a stranger:
//!   passed to the stack and counted (`Malformed`, `NotIpv4`, `NoService`);
//! - engine → router `r1` (XDP, engine side, excluded): GRE from the engine that is
//!   truncated, not WCCP, or has a broken inner packet (passed untouched, `ReturnBad`),
//!   WCCP GRE from a stranger (not decapsulated: `Excluded`), random bytes;
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

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Sends batches of frames and checks what each did to the counters.
struct Batches<'a> {
    pin_root: std::path::PathBuf,
    engine: &'a Engine,
    rows: Vec<String>,
}

impl Batches<'_> {
    fn send(
        &mut self,
        label: &str,
        sock: &RawSocket,
        frames: Vec<Vec<u8>>,
        router: &[(&str, u64)],
        engine: &[(&str, u64)],
    ) -> Result<()> {
        let (r0, e0) = (router_reasons(&self.pin_root)?, self.engine.counters()?);
        for f in &frames {
            sock.send(f)?;
        }
        std::thread::sleep(Duration::from_millis(100));
        let (r1, e1) = (router_reasons(&self.pin_root)?, self.engine.counters()?);
        let (dr, de) = (delta(&r0, &r1), delta(&e0, &e1));
        self.rows.push(format!(
            "{label} ({} frames): router {dr:?} engine {de:?}",
            frames.len()
        ));
        // `*`: any verdict, summed.
        let get = |d: &BTreeMap<String, u64>, k: &str| {
            if k == "*" {
                d.values().sum()
            } else {
                d.get(k).copied().unwrap_or(0)
            }
        };
        for (k, n) in router {
            let got = get(&dr, k);
            ensure!(
                got >= *n,
                "{label}: router {k} +{got}, expected +{n}: {dr:?}"
            );
        }
        for (k, n) in engine {
            let got = get(&de, k);
            ensure!(
                got >= *n,
                "{label}: engine {k} +{got}, expected +{n}: {de:?}"
            );
        }
        Ok(())
    }

    /// Sends `N` frames built by `make(i)` and checks `expect`: the shape of every batch
    /// but the server side's.
    fn batch(
        &mut self,
        label: &str,
        sock: &RawSocket,
        expect: Expect,
        mut make: impl FnMut(u16) -> Vec<u8>,
    ) -> Result<()> {
        let frames = (0..N).map(|i| make(i as u16)).collect();
        let (router, engine) = match expect {
            AtRouter(k) => (vec![(k, N)], vec![]),
            AtEngine(k) => (vec![], vec![(k, N)]),
        };
        self.send(label, sock, frames, &router, &engine)
    }
}

/// The one verdict a batch must count `N` times (`*`: any), on the router or the engine;
/// the other side is not checked.
#[derive(Clone, Copy)]
enum Expect<'a> {
    AtRouter(&'a str),
    AtEngine(&'a str),
}
use Expect::{AtEngine, AtRouter};

/// An Ethernet frame whose payload is `parts` in order: most batches build one.
fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, parts: &[&[u8]]) -> Vec<u8> {
    let mut f = eth(dst, src, ethertype);
    for p in parts {
        f.extend_from_slice(p);
    }
    f
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
    let e = engine_ip(0);
    let mut b = Batches {
        pin_root: ctl.pin_root.clone(),
        engine: &e1,
        rows: Vec::new(),
    };

    // 1. Client side, into r0's XDP program.
    let sock = RawSocket::open(&w.client, "c0")?;
    b.batch(
        "r0: 10 bytes of IPv4 header",
        &sock,
        AtRouter("Malformed"),
        |_| frame(r0, c0, 0x0800, &[&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]]),
    )?;
    b.batch(
        "r0: IPv4 total length beyond the frame",
        &sock,
        AtRouter("Malformed"),
        |i| {
            let mut ip = ipv4(CLIENT, SERVER, 6, 20);
            ip[2..4].copy_from_slice(&1400u16.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let syn = tcp(CLIENT, SERVER, 50_000 + i, HTTP_PORT, 0x02, &[]);
            frame(r0, c0, 0x0800, &[&ip, &syn])
        },
    )?;
    b.batch(
        "r0: version 6 in an IPv4 frame",
        &sock,
        AtRouter("Malformed"),
        |_| {
            let mut ip = ipv4(CLIENT, SERVER, 6, 20);
            ip[0] = 0x65;
            frame(r0, c0, 0x0800, &[&ip, &[0; 20]])
        },
    )?;
    b.batch(
        "r0: TCP to port 80, 8 header bytes",
        &sock,
        AtRouter("Malformed"),
        |i| {
            let syn = tcp(CLIENT, SERVER, 50_100 + i, HTTP_PORT, 0x02, &[]);
            frame(r0, c0, 0x0800, &[&ipv4(CLIENT, SERVER, 6, 8), &syn[..8]])
        },
    )?;
    b.batch(
        "r0: random bytes, not IP",
        &sock,
        AtRouter("NotIpv4"),
        |_| frame(r0, c0, 0x88b5, &[&random_frame(&mut rng)]),
    )?;
    b.batch(
        "r0: truncated GRE from the client",
        &sock,
        AtRouter("NoService"),
        |_| frame(r0, c0, 0x0800, &[&ipv4(CLIENT, ROUTER_C, 47, 2), &[0, 0]]),
    )?;

    // 2. Engine side, into r1's XDP program (returns are recognised by source address).
    let sock = RawSocket::open(&w.engines[0], "eth0")?;
    b.batch(
        "r1: GRE from the engine, 2 bytes",
        &sock,
        AtRouter("ReturnBad"),
        |_| frame(r1, eth0, 0x0800, &[&ipv4(e, ROUTER_E, 47, 2), &[0, 0]]),
    )?;
    b.batch(
        "r1: GRE from the engine, not WCCP",
        &sock,
        AtRouter("ReturnBad"),
        |i| {
            let mut f = gre_frame(r1, eth0, e, ROUTER_E, [0; 4], &client_syn(51_000 + i));
            f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&[0x08, 0x00]);
            f
        },
    )?;
    b.batch(
        "r1: WCCP GRE from the engine, inner not IPv4",
        &sock,
        AtRouter("ReturnBad"),
        |i| {
            let mut bad = client_syn(51_100 + i);
            bad[0] = 0x05;
            gre_frame(r1, eth0, e, ROUTER_E, [0; 4], &bad)
        },
    )?;
    b.batch(
        "r1: WCCP GRE from a stranger",
        &sock,
        AtRouter("Excluded"),
        |i| {
            gre_frame(
                r1,
                eth0,
                stranger,
                ROUTER_E,
                [0; 4],
                &client_syn(51_200 + i),
            )
        },
    )?;
    b.batch("r1: random bytes as IPv4", &sock, AtRouter("*"), |_| {
        frame(r1, eth0, 0x0800, &[&random_frame(&mut rng)])
    })?;

    // 3. Into the engine's tc program, from the router's side of the LAN.
    let sock = RawSocket::open(&w.router, "r1")?;
    b.batch(
        "engine: WCCP GRE from a stranger",
        &sock,
        AtEngine("stranger"),
        |i| gre_frame(eth0, r1, stranger, e, [0; 4], &client_syn(52_000 + i)),
    )?;
    b.batch(
        "engine: GRE cut in the redirect header",
        &sock,
        AtEngine("truncated"),
        |_| {
            frame(
                eth0,
                r1,
                0x0800,
                &[&ipv4(ROUTER_E, e, 47, 6), &[0, 0, 0x88, 0x3e, 0, 0]],
            )
        },
    )?;
    b.batch(
        "engine: unknown redirect-header flags",
        &sock,
        AtEngine("bad_header"),
        |i| {
            gre_frame(
                eth0,
                r1,
                ROUTER_E,
                e,
                [0xf0, 90, 0, 0],
                &client_syn(52_300 + i),
            )
        },
    )?;
    b.batch(
        "engine: GRE flags set",
        &sock,
        AtEngine("bad_header"),
        |i| {
            let mut f = gre_frame(
                eth0,
                r1,
                ROUTER_E,
                e,
                [0x01, 90, 0, 0],
                &client_syn(52_400 + i),
            );
            f[14 + 20] = 0x80;
            f
        },
    )?;
    b.batch(
        "engine: inner packet not IPv4",
        &sock,
        AtEngine("bad_inner"),
        |i| {
            let mut bad = client_syn(52_100 + i);
            bad[0] = 0x65;
            gre_frame(eth0, r1, ROUTER_E, e, [0x01, 90, 0, 0], &bad)
        },
    )?;
    b.batch(
        "engine: inner length beyond the frame",
        &sock,
        AtEngine("bad_inner"),
        |i| {
            let mut bad = client_syn(52_200 + i);
            bad[2..4].copy_from_slice(&1400u16.to_be_bytes());
            gre_frame(eth0, r1, ROUTER_E, e, [0x01, 90, 0, 0], &bad)
        },
    )?;
    b.batch("engine: random bytes as IPv4", &sock, AtEngine("*"), |_| {
        frame(eth0, r1, 0x0800, &[&random_frame(&mut rng)])
    })?;

    // 4. Server side (no program there).
    let sock = RawSocket::open(&w.server_host, "s0")?;
    let frames = (0..2 * N)
        .map(|i| {
            let ethertype = if i % 2 == 0 { 0x0800 } else { 0x88b5 };
            frame(r2, s0, ethertype, &[&random_frame(&mut rng)])
        })
        .collect();
    b.send("r2: random bytes", &sock, frames, &[], &[])?;
    for row in &b.rows {
        println!("(7) {row}");
    }
    ensure!(
        e1.proxy().accepted().is_empty(),
        "no forged SYN reached the proxy: {}",
        e1.proxy().log()
    );
    let router = router_reasons(&ctl.pin_root)?;
    ensure!(
        reason(&router, "ReturnGre") == 0,
        "nothing was decapsulated: {router:?}"
    );

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
