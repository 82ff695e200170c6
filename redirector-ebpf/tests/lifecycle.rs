//! The data plane's lifecycle on real interfaces: attach, redirect, survive the loader
//! being dropped (pinned link and maps), adoption by a new loader that updates the tables,
//! and a clear that leaves nothing behind. Root only; everything happens in network
//! namespaces of a `netns_tests::netns::Lab`, removed on drop (failures included), and the
//! pin root is per lab, under the root mount namespace's /sys/fs/bpf.
//!
//! ```text
//!  client c0 ──veth── r0 router r1 ──veth── e0 engine
//!  10.1.0.2        (XDP redirect)           (xdp_pass, AF_PACKET capture)
//! ```

use netns_tests::sockets::PacketSocket;
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use netns_tests::netns::{Host, Lab};
use redirector_ebpf::{
    table::{Assignment, EngineConfig, Method, Protocol, ServiceConfig, Slot, TableConfig},
    AttachMode, EbpfObject, PinRoot, Redirector,
};
use wccp::assign::flags;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const ROUTER_E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const ENGINE_A: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const ENGINE_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);

/// A raw packet socket (see `netns_tests::sockets`) with the 100 ms timeout these probes
/// poll with.
struct RawSocket(PacketSocket);

impl RawSocket {
    /// Must run inside the namespace (the socket stays bound to it afterwards).
    fn open(ifindex: u32) -> Result<Self> {
        Ok(Self(PacketSocket::open(
            ifindex,
            Duration::from_millis(100),
        )?))
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        self.0.send(frame)
    }

    /// The next frame received, or None after the socket's 100 ms timeout.
    fn recv(&self) -> Option<Vec<u8>> {
        self.0.recv().map(|r| r.bytes)
    }
}

/// Ethernet + IPv4 + TCP SYN from the client to the server's port 80.
fn syn(dst_mac: [u8; 6], src_mac: [u8; 6], sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&CLIENT.octets());
    ip[16..20].copy_from_slice(&SERVER.octets());
    let check = netns_tests::checksum::internet(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

/// What arrived at the engine for one SYN: the outer destination and the redirect
/// header's service id, when it was WCCP GRE carrying our SYN.
fn gre_of(frame: &[u8], sport: u16) -> Option<(Ipv4Addr, u8)> {
    if frame.len() < 14 + 20 + 8 + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[23] != 47 {
        return None;
    }
    let outer_dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let gre = &frame[34..];
    if gre[..4] != [0, 0, 0x88, 0x3e] {
        return None;
    }
    let service = gre[5];
    let inner = &gre[8..];
    let inner_src = Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]);
    let inner_sport = u16::from_be_bytes([inner[20], inner[21]]);
    (inner_src == CLIENT && inner_sport == sport).then_some((outer_dst, service))
}

/// Sends SYNs until one arrives GRE-encapsulated at the engine (or `wait` passes).
fn probe(
    client: &RawSocket,
    engine: &RawSocket,
    macs: ([u8; 6], [u8; 6]),
    sport: u16,
    wait: Duration,
) -> Option<(Ipv4Addr, u8)> {
    let start = Instant::now();
    while start.elapsed() < wait {
        client.send(&syn(macs.0, macs.1, sport)).ok()?;
        let round = Instant::now();
        while round.elapsed() < Duration::from_millis(100) {
            match engine.recv() {
                Some(frame) => {
                    if let Some(found) = gre_of(&frame, sport) {
                        return Some(found);
                    }
                }
                None => break,
            }
        }
    }
    None
}

fn table(service: u8, engine: Ipv4Addr, engine_mac: [u8; 6], r1: (u32, [u8; 6])) -> TableConfig {
    TableConfig {
        services: vec![ServiceConfig {
            id: service,
            dynamic: true,
            protocol: Protocol::Tcp,
            priority: 1,
            flags: flags::SRC_IP_HASH | flags::PORTS_DEFINED,
            ports: vec![80, 443],
            assignment: Assignment::Hash(vec![
                Slot {
                    engine: Some(0),
                    alternate: false,
                    sticky: false,
                };
                256
            ]),
            ..ServiceConfig::default()
        }],
        engines: vec![EngineConfig {
            addr: engine,
            router_addr: ROUTER_E,
            dst_mac: engine_mac,
            src_mac: r1.1,
            ifindex: r1.0,
            mtu: 1500,
            method: Method::Gre,
            usable: true,
            ..EngineConfig::default()
        }],
        ..TableConfig::default()
    }
}

struct Net {
    client: Host,
    router: Host,
    engine: Host,
}

fn pins_left(root: &PinRoot) -> Vec<String> {
    let mut left = Vec::new();
    for dir in [root.maps_dir(), root.links_dir(), root.path().to_owned()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            left.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }
    left
}

#[test]
fn attach_pin_survive_adopt_clear() -> Result<()> {
    let lab = Lab::new("dplife")?;
    let net = Net {
        client: lab.host("client")?,
        router: lab.host("router")?,
        engine: lab.host("engine")?,
    };
    lab.link(&net.client, "c0", &net.router, "r0")?;
    lab.link(&net.router, "r1", &net.engine, "e0")?;
    let r0_mac = net.router.mac("r0")?;
    let c0_mac = net.client.mac("c0")?;
    let r1 = (net.router.ifindex("r1")?, net.router.mac("r1")?);
    let e0_mac = net.engine.mac("e0")?;
    let macs = (r0_mac, c0_mac);

    // Frames redirected into a veth arrive only when its peer runs XDP.
    let mut pass = EbpfObject::open("xdp_pass")?;
    net.engine.in_ns(|| -> Result<()> {
        pass.xdp("xdp_pass")?
            .attach("e0", aya::programs::XdpMode::Driver)?;
        Ok(())
    })??;

    let client = {
        let ix = net.client.ifindex("c0")?;
        net.client.in_ns(|| RawSocket::open(ix))??
    };
    let capture = {
        let ix = net.engine.ifindex("e0")?;
        net.engine.in_ns(|| RawSocket::open(ix))??
    };

    let root = PinRoot::instance(lab.id())?;
    let guard = PinGuard(root.clone());

    // 1. A fresh, pinned data plane attached natively redirects.
    let mut first = Redirector::open(&root)?;
    first.install(&table(90, ENGINE_A, e0_mac, r1).compile()?)?;
    first.heartbeat(Duration::from_secs(60))?;
    let mode = net.router.in_ns(|| first.attach("r0"))??;
    assert_eq!(mode, AttachMode::Native);
    assert_eq!(
        probe(&client, &capture, macs, 40001, Duration::from_secs(3)),
        Some((ENGINE_A, 90)),
        "redirected in GRE to engine A"
    );
    assert!(root.links_dir().join("r0").exists(), "link pinned");
    assert!(root.maps_dir().join("slots").exists(), "maps pinned");

    // 2. The loader goes away without detaching: the pinned link keeps redirecting.
    drop(first);
    assert_eq!(
        probe(&client, &capture, macs, 40002, Duration::from_secs(3)),
        Some((ENGINE_A, 90)),
        "still redirected after the loader was dropped"
    );

    // 3. A new loader adopts the link and maps, and its table update takes effect.
    let mut second = Redirector::open(&root)?;
    assert_eq!(
        second.attached(),
        vec![("r0".to_owned(), AttachMode::Adopted)]
    );
    assert!(
        second.control().generation >= 1,
        "generation carried over: {:?}",
        second.control()
    );
    assert_eq!(
        probe(&client, &capture, macs, 40003, Duration::from_secs(3)),
        Some((ENGINE_A, 90)),
        "redirected by the adopting program before its first install"
    );
    second.install(&table(91, ENGINE_B, e0_mac, r1).compile()?)?;
    second.heartbeat(Duration::from_secs(60))?;
    assert_eq!(
        probe(&client, &capture, macs, 40004, Duration::from_secs(3)),
        Some((ENGINE_B, 91)),
        "the adopter's table is in force"
    );
    let stats = second.stats()?;
    assert!(
        stats[redirector_ebpf::layout::STATS_SERVICE_BASE
            + 91 * redirector_ebpf::layout::STATS_PER_SERVICE]
            .packets
            >= 1,
        "counters read through the adopted maps"
    );

    // 4. Clear: detached at once, nothing left on bpffs.
    second.clear()?;
    assert_eq!(pins_left(&root), Vec::<String>::new(), "pins left");
    assert!(!root.path().exists(), "pin root removed");
    assert_eq!(
        probe(&client, &capture, macs, 40005, Duration::from_millis(600)),
        None,
        "no redirection after clear"
    );
    let link = net
        .router
        .run(net.router.command("ip")?.args(["-d", "link", "show", "r0"]))?;
    let shown = String::from_utf8_lossy(&link.stdout);
    assert!(!shown.contains("xdp"), "r0 still has XDP: {shown}");
    drop(guard);
    drop(pass);
    lab.teardown().context("lab teardown")
}

#[test]
fn instance_names_are_one_path_component() {
    for bad in ["", ".", "..", "a/b", "a b"] {
        assert!(PinRoot::instance(bad).is_err(), "{bad:?} accepted");
    }
    let root = PinRoot::instance("ctl-1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        root.path(),
        std::path::Path::new("/sys/fs/bpf/wccp-redirector/ctl-1")
    );
}

/// Removes the test's pin root however the test ends, so a failure leaves no pins (and
/// no attached link: removing the link's pin detaches it once its interface's namespace
/// is gone as well).
struct PinGuard(PinRoot);

impl Drop for PinGuard {
    fn drop(&mut self) {
        for dir in [
            self.0.links_dir(),
            self.0.out_links_dir(),
            self.0.maps_dir(),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        let _ = std::fs::remove_dir(self.0.path());
        let _ = std::fs::remove_dir(redirector_ebpf::lifecycle::PIN_BASE);
    }
}

/// Pinned links whose interface went away while no controller ran (the XDP and the tc
/// egress one): adoption removes their pins with a warning instead of failing, and the
/// links of interfaces still there are adopted as usual.
#[test]
fn adoption_unpins_links_of_interfaces_that_went_away() -> Result<()> {
    let lab = Lab::new("dpgone")?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "a0", &b, "b0")?;
    lab.link(&a, "a1", &b, "b1")?;
    let root = PinRoot::instance(lab.id())?;
    let guard = PinGuard(root.clone());
    let mut first = Redirector::open(&root)?;
    for iface in ["a0", "a1"] {
        a.in_ns(|| first.attach(iface))??;
        a.in_ns(|| first.attach_out(iface))??;
    }
    drop(first);
    a.run(a.command("ip")?.args(["link", "del", "a0"]))?;

    let second = Redirector::open(&root)?;
    assert_eq!(
        second.attached(),
        vec![("a1".to_owned(), AttachMode::Adopted)],
        "the link of the interface that is left adopted"
    );
    for dir in [root.links_dir(), root.out_links_dir()] {
        assert!(
            !dir.join("a0").exists(),
            "{} unpinned",
            dir.join("a0").display()
        );
        assert!(dir.join("a1").exists(), "{} kept", dir.join("a1").display());
    }
    second.clear()?;
    assert_eq!(pins_left(&root), Vec::<String>::new(), "pins left");
    drop(guard);
    lab.teardown().context("lab teardown")
}

/// A device without native XDP (loopback) gets generic XDP, not an error; an unpinned
/// attachment pins nothing and detaches on request.
#[test]
fn generic_fallback_and_unpinned_detach() -> Result<()> {
    let lab = Lab::new("dpgen")?;
    let host = lab.host("h")?;
    let mut r = Redirector::load()?;
    let mode = host.in_ns(|| r.attach("lo"))??;
    assert_eq!(mode, AttachMode::Generic);
    assert!(matches!(
        host.in_ns(|| r.attach("lo"))?,
        Err(redirector_ebpf::RedirectorError::AlreadyAttached(_))
    ));
    r.detach("lo")?;
    let out = host.run(host.command("ip")?.args(["-d", "link", "show", "lo"]))?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("xdpgeneric"), "lo still has XDP: {shown}");
    lab.teardown().context("lab teardown")
}

/// The dead-man switch counts in jiffies: `jiffies()` advances at `tick_hz()`, a fresh
/// `heartbeat` lets packets be redirected, one older than its grace fails them open.
#[test]
fn heartbeat_in_jiffies() -> Result<()> {
    use aya::programs::{TestRun as _, TestRunOptions};
    use redirector_ebpf::{layout::STATS_ENTRIES, model::Reason, tick_hz};

    let mut r = Redirector::load()?;
    let hz = tick_hz();
    assert!([100, 250, 300, 1000].contains(&hz), "HZ {hz}");
    let t0 = r.jiffies()?;
    std::thread::sleep(Duration::from_millis(200));
    let t1 = r.jiffies()?;
    let expected = hz / 5;
    assert!(
        (t1 - t0).abs_diff(expected) <= 2 + expected / 5,
        "{} ticks in 200 ms at HZ {hz}",
        t1 - t0
    );

    r.install(&table(90, ENGINE_A, [2; 6], (0, [4; 6])).compile()?)?;
    let reasons = |r: &mut Redirector| -> Result<(u64, u64)> {
        let s = r.stats()?;
        assert_eq!(s.len(), STATS_ENTRIES);
        Ok((
            s[Reason::RedirectGre as usize].packets,
            s[Reason::Heartbeat as usize].packets,
        ))
    };
    let frame = syn([2; 6], [6; 6], 40100);
    let run = |r: &mut Redirector| -> Result<u32> {
        Ok(r.program()?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::new()
            })?
            .return_value)
    };
    r.heartbeat(Duration::from_secs(5))?;
    let before = reasons(&mut r)?;
    assert_eq!(run(&mut r)?, 3, "XDP_TX");
    assert_eq!(reasons(&mut r)?, (before.0 + 1, before.1), "redirected");
    let now = r.jiffies()?;
    r.set_heartbeat(now - 100, 50)?;
    assert_eq!(run(&mut r)?, 2, "XDP_PASS");
    assert_eq!(
        reasons(&mut r)?,
        (before.0 + 1, before.1 + 1),
        "failed open"
    );
    Ok(())
}

/// An adopting loader does not know what the slots hold, so its first install of a slot
/// must also remove the list prefixes and L2-return MACs a predecessor left there: a
/// stale redirect prefix would redirect a client the new list leaves out, a stale MAC
/// would pass an ex-engine's traffic as returned. Test runs only, no interfaces.
#[test]
fn adoption_removes_stale_prefixes_and_engine_macs() -> Result<()> {
    use aya::programs::{TestRun as _, TestRunOptions};
    use redirector_ebpf::{model::Reason, table::Prefix};

    let root = PinRoot::instance(&format!("dpadopt-{}", std::process::id()))?;
    let _guard = PinGuard(root.clone());
    let listed = |list: &str, l2_mac: Option<[u8; 6]>| -> Result<_> {
        let mut t = table(90, ENGINE_A, [2; 6], (0, [4; 6]));
        t.services[0].redirect_list = vec![list.parse::<Prefix>()?];
        if let Some(mac) = l2_mac {
            t.engines.push(EngineConfig {
                addr: ENGINE_B,
                dst_mac: mac,
                return_method: Method::L2,
                usable: true,
                ..EngineConfig::default()
            });
        }
        Ok(t.compile()?)
    };
    let ex_engine = [2, 0xee, 0, 0, 0, 9];
    {
        let mut first = Redirector::open(&root)?;
        first.heartbeat(Duration::from_secs(60))?;
        // Slot 1: the client's network listed, an L2-return engine. Slot 0: another.
        first.install(&listed("10.1.0.0/16", Some(ex_engine))?)?;
        first.install(&listed("10.1.0.0/16", None)?)?;
    }
    let mut second = Redirector::open(&root)?;
    second.heartbeat(Duration::from_secs(60))?;
    // Writes slot 1 again, knowing nothing of it.
    second.install(&listed("10.200.0.0/16", None)?)?;
    let run = |r: &mut Redirector, frame: &[u8]| -> Result<Reason> {
        let before = r.stats()?;
        r.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
        let after = r.stats()?;
        Reason::ALL
            .into_iter()
            .find(|&reason| after[reason as usize].packets > before[reason as usize].packets)
            .context("no reason counted")
    };
    assert_eq!(
        run(&mut second, &syn([2; 6], [6; 6], 40200))?,
        Reason::NotListed,
        "the old redirect prefix is gone"
    );
    assert_eq!(
        run(&mut second, &syn([2; 6], ex_engine, 40201))?,
        Reason::NotListed,
        "the old engine MAC is gone"
    );
    second.clear()?;
    Ok(())
}

/// Whether a frame is our SYN from the client, forwarded unencapsulated.
fn plain_syn_of(frame: &[u8], sport: u16) -> bool {
    frame.len() >= 54
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 6
        && frame[26..30] == CLIENT.octets()
        && u16::from_be_bytes([frame[34], frame[35]]) == sport
}

/// Sends one SYN from `from` and reports whether it reached `to` as a plain SYN.
fn forwarded(from: &RawSocket, to: &RawSocket, macs: ([u8; 6], [u8; 6]), sport: u16) -> bool {
    for _ in 0..10 {
        if from.send(&syn(macs.0, macs.1, sport)).is_err() {
            return false;
        }
        let round = Instant::now();
        while round.elapsed() < Duration::from_millis(100) {
            match to.recv() {
                Some(frame) if plain_syn_of(&frame, sport) => return true,
                Some(_) => {}
                None => break,
            }
        }
    }
    false
}

/// "Redirect out" on real interfaces: the router forwards the client's SYN toward the
/// server, and the tc egress program on the server-side interface sends it to the engine
/// in GRE instead; what arrives from the engine-facing interface (the engine's returns)
/// leaves unredirected; the pinned egress link survives its loader, is adopted, and
/// detaching or clearing gives the server its traffic back.
///
/// ```text
///  client c0 ──── r0 router r2 ──── s0 server
///  10.1.0.2  10.1.0.1    10.9.0.254  10.9.0.1
///                  r1 10.2.0.1 (engine-facing)
///                  │
///                  e0 engine 10.2.0.2
/// ```
#[test]
fn redirect_out_on_forwarded_traffic() -> Result<()> {
    let lab = Lab::new("dpout")?;
    let client = lab.host("client")?;
    let router = lab.host("router")?;
    let engine = lab.host("engine")?;
    let server = lab.host("server")?;
    lab.link(&client, "c0", &router, "r0")?;
    lab.link(&router, "r1", &engine, "e0")?;
    lab.link(&router, "r2", &server, "s0")?;
    client.add_addr("c0", "10.1.0.2/24")?;
    router.add_addr("r0", "10.1.0.1/24")?;
    router.add_addr("r1", "10.2.0.1/24")?;
    router.add_addr("r2", "10.9.0.254/24")?;
    engine.add_addr("e0", "10.2.0.2/24")?;
    server.add_addr("s0", "10.9.0.1/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    for key in ["all", "default", "r0", "r1", "r2"] {
        router.sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
    }

    let r1 = (router.ifindex("r1")?, router.mac("r1")?);
    let e0_mac = engine.mac("e0")?;
    let from_client = (router.mac("r0")?, client.mac("c0")?);
    let from_engine = (r1.1, e0_mac);
    let socket = |host: &Host, ifname: &str| -> Result<RawSocket> {
        let ix = host.ifindex(ifname)?;
        host.in_ns(|| RawSocket::open(ix))?
    };
    let client_tx = socket(&client, "c0")?;
    let engine_io = socket(&engine, "e0")?;
    let server_rx = socket(&server, "s0")?;
    assert!(
        forwarded(&client_tx, &server_rx, from_client, 41000),
        "the router forwards before any redirection"
    );

    let root = PinRoot::instance(&format!("{}-out", lab.id()))?;
    let guard = PinGuard(root.clone());
    let mut first = Redirector::open(&root)?;
    first.install(&table(90, ENGINE_A, e0_mac, r1).compile()?)?;
    first.heartbeat(Duration::from_secs(60))?;
    first.set_iface_flags(r1.0, redirector_ebpf::layout::IFACE_ENGINE_FACING)?;
    router.in_ns(|| first.attach_out("r2"))??;
    assert!(
        root.out_links_dir().join("r2").exists(),
        "egress link pinned"
    );
    assert_eq!(
        probe(
            &client_tx,
            &engine_io,
            from_client,
            41001,
            Duration::from_secs(3)
        ),
        Some((ENGINE_A, 90)),
        "redirected out: GRE to the engine"
    );
    assert!(
        !forwarded(&client_tx, &server_rx, from_client, 41002),
        "the server no longer sees redirected SYNs"
    );
    assert!(
        forwarded(&engine_io, &server_rx, from_engine, 41003),
        "what comes from the engine-facing interface leaves unredirected"
    );

    // The pinned egress link outlives its loader and is adopted.
    drop(first);
    assert_eq!(
        probe(
            &client_tx,
            &engine_io,
            from_client,
            41004,
            Duration::from_secs(3)
        ),
        Some((ENGINE_A, 90)),
        "still redirected out after the loader was dropped"
    );
    let mut second = Redirector::open(&root)?;
    assert_eq!(second.attached_out(), vec!["r2".to_owned()]);
    second.heartbeat(Duration::from_secs(60))?;
    assert_eq!(
        probe(
            &client_tx,
            &engine_io,
            from_client,
            41005,
            Duration::from_secs(3)
        ),
        Some((ENGINE_A, 90)),
        "redirected out by the adopting program"
    );
    second.detach_out("r2")?;
    assert!(
        forwarded(&client_tx, &server_rx, from_client, 41006),
        "detached: forwarded to the server again"
    );
    router.in_ns(|| second.attach_out("r2"))??;
    second.clear()?;
    assert_eq!(pins_left(&root), Vec::<String>::new(), "pins left");
    assert!(
        forwarded(&client_tx, &server_rx, from_client, 41007),
        "cleared: forwarded to the server again"
    );
    drop(guard);
    lab.teardown().context("lab teardown")
}
