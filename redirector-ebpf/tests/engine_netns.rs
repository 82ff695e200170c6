//! The engine's data plane on real interfaces, in network namespaces (root only; every
//! namespace is removed by the lab's teardown, failures included):
//!
//! ```text
//!  router  r0 10.2.0.1 ──veth── e0 10.2.0.2  engine ── cp0 ──veth── m0  monitor
//!  (client, stand-in GRE          (tc_engine, transparent        (captures copies)
//!   encapsulation on egress,       proxy on 0.0.0.0:3129)
//!   AF_PACKET frames and capture)
//! ```
//!
//! Original destinations are in 10.9.0.0/16, which exists nowhere: only the engine's
//! socket assignment can make a connection to them succeed.

use netns_tests::sockets::PacketSocket;
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use netns_tests::{
    netns::{Host, Lab},
    sockets,
};
use redirector_ebpf::engine_plane::{
    local_delivery_commands, Counter, EnginePlane, EngineSettings, LocalDelivery, ReturnRule,
    WccpEncap, DEFAULT_MARK, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE,
};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const ENGINE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 99);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const PROXY_PORT: u16 = 3129;
const SERVICE_ID: u8 = 90;

/// A raw packet socket (see `netns_tests::sockets`) that gathers what arrives.
struct RawSocket(PacketSocket);

impl RawSocket {
    /// Must run inside the namespace (the socket stays bound to it afterwards).
    fn open(ifindex: u32) -> Result<Self> {
        Ok(Self(PacketSocket::open(
            ifindex,
            Duration::from_millis(50),
        )?))
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        self.0.send(frame)
    }

    /// The frames received (not sent by this host) until `wait` passes.
    fn collect(&self, wait: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut frames = Vec::new();
        while start.elapsed() < wait {
            if let Some(r) = self.0.recv().filter(|r| !r.outgoing) {
                frames.push(r.bytes);
            }
        }
        frames
    }
}

use netns_tests::checksum::internet as checksum;

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: usize) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[8] = 17; // a TTL the engine must replace on return
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn tcp_checksum(ip: &[u8]) -> u16 {
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = &ip[ihl..total];
    let mut pseudo = Vec::with_capacity(12 + seg.len());
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    checksum(&pseudo)
}

/// The client's IPv4 + TCP packet, checksums correct.
fn client_packet(dst: SocketAddrV4, sport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(payload);
    let mut pkt = ipv4_header(CLIENT, *dst.ip(), 6, tcp.len()).to_vec();
    pkt.extend_from_slice(&tcp);
    let sum = tcp_checksum(&pkt);
    pkt[36..38].copy_from_slice(&sum.to_be_bytes());
    pkt
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// A frame as a router sends it to the engine: outer IPv4 `outer_src` -> engine, GRE
/// 0x883E, the redirect header, then `inner`.
fn gre_frame(
    macs: ([u8; 6], [u8; 6]),
    outer_src: Ipv4Addr,
    redirect: [u8; 4],
    inner: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ipv4_header(outer_src, ENGINE, 47, 8 + inner.len()));
    f.extend_from_slice(&[0, 0, 0x88, 0x3e]);
    f.extend_from_slice(&redirect);
    f.extend_from_slice(inner);
    f
}

const REDIRECT: [u8; 4] = [0x01, SERVICE_ID, 0, 7];

/// A frame that came back to the router from the engine as WCCP GRE: its outer header
/// and what it carries.
struct Returned {
    eth: Vec<u8>,
    outer: Vec<u8>,
    gre: Vec<u8>,
    inner: Vec<u8>,
}

fn returned_from_engine(frame: &[u8]) -> Option<Returned> {
    if frame.len() < 14 + 20 + 8 + 20 || frame[12..14] != [0x08, 0x00] || frame[23] != 47 {
        return None;
    }
    (frame[26..30] == ENGINE.octets()).then(|| Returned {
        eth: frame[..14].to_vec(),
        outer: frame[14..34].to_vec(),
        gre: frame[34..42].to_vec(),
        inner: frame[42..].to_vec(),
    })
}

/// The lab, with the engine program attached and configured, and the proxy's
/// transparent listener bound (not yet accepting).
struct Setup {
    lab: Lab,
    router: Host,
    engine: Host,
    monitor: Host,
    plane: EnginePlane,
    router_mac: [u8; 6],
    engine_mac: [u8; 6],
    listener: TcpListener,
    /// Held for its drop (the namespace's deletion would remove it anyway).
    _routing: Option<LocalDelivery>,
}

/// What a lab leaves out or changes, for the tests of what the kernel needs.
#[derive(Clone, Copy)]
struct Options {
    l2: bool,
    local_route: bool,
    transparent: bool,
}

const NORMAL: Options = Options {
    l2: false,
    local_route: true,
    transparent: true,
};

fn setup(prefix: &str) -> Result<Setup> {
    setup_with(prefix, NORMAL)
}

fn setup_with(prefix: &str, options: Options) -> Result<Setup> {
    let lab = Lab::new(prefix)?;
    let router = lab.host("router")?;
    let engine = lab.host("engine")?;
    let monitor = lab.host("monitor")?;
    lab.link(&router, "r0", &engine, "e0")?;
    lab.link(&engine, "cp0", &monitor, "m0")?;
    router.add_addr("r0", &format!("{ROUTER}/24"))?;
    engine.add_addr("e0", &format!("{ENGINE}/24"))?;
    // The proxy's answers to the crafted clients' addresses go back by the router.
    engine.add_route("10.1.0.0/16", &ROUTER.to_string())?;
    let routing = if options.local_route {
        Some(engine.in_ns(|| {
            LocalDelivery::install(DEFAULT_MARK, DEFAULT_TABLE, DEFAULT_RULE_PRIORITY)
        })??)
    } else {
        None
    };
    let router_mac = router.mac("r0")?;
    let engine_mac = engine.mac("e0")?;
    let copy_ifindex = engine.ifindex("cp0")?;

    let mut plane = EnginePlane::load()?;
    plane.configure(&EngineSettings {
        addr: Some(ENGINE),
        copy_ifindex: Some(copy_ifindex),
        l2: options.l2,
        ..EngineSettings::default()
    })?;
    plane.add_router(ROUTER)?;
    plane.set_service_port(80, PROXY_PORT)?;
    engine.in_ns(|| plane.attach("e0"))??;
    let listener = engine
        .in_ns(|| sockets::wildcard_listener(PROXY_PORT, options.transparent, true, 16))??;
    Ok(Setup {
        lab,
        router,
        engine,
        monitor,
        plane,
        router_mac,
        engine_mac,
        listener,
        _routing: routing,
    })
}

/// What both ends of one proxied connection saw.
struct Session {
    proxy_local: SocketAddr,
    proxy_peer: SocketAddr,
    request: Vec<u8>,
    client_local: SocketAddr,
    answer: String,
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// A real TCP client in the router's namespace connects to `SERVER:80`, which exists
/// nowhere, sends a request and reads the proxy's answer to the end. With
/// `rule_mid_flow`, a return rule covering the destination is added between the
/// handshake and the request.
fn proxied_connection(s: &mut Setup, rule_mid_flow: bool) -> Result<Session> {
    let listener = s.listener.try_clone()?;
    listener.set_nonblocking(true)?;
    let proxy = s
        .engine
        .thread(move || -> Result<(SocketAddr, SocketAddr, Vec<u8>)> {
            let deadline = Instant::now() + Duration::from_secs(6);
            let (mut conn, peer) = loop {
                match listener.accept() {
                    Ok(accepted) => break accepted,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        ensure!(Instant::now() < deadline, "the proxy accepted nothing");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let local = conn.local_addr()?;
            let mut request = [0u8; 64];
            let n = conn.read(&mut request)?;
            conn.write_all(format!("proxied {local}").as_bytes())?;
            Ok((local, peer, request[..n].to_vec()))
        })?;

    let server = SocketAddr::from((SERVER, 80));
    let mut c = s
        .router
        .in_ns(|| TcpStream::connect_timeout(&server, Duration::from_secs(3)))?
        .context("connecting to the original destination through the engine")?;
    if rule_mid_flow {
        s.plane
            .add_rule(&ReturnRule::returning(Ipv4Addr::new(10, 9, 0, 0), 16))?;
    }
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(REQUEST)?;
    let mut answer = String::new();
    c.read_to_string(&mut answer)?;
    let (proxy_local, proxy_peer, request) = proxy.join()?;
    Ok(Session {
        proxy_local,
        proxy_peer,
        request,
        client_local: c.local_addr()?,
        answer,
    })
}

/// The session reached the proxy with the original addresses, and the counters show
/// one proxied SYN and the rest of the flow on its socket, nothing returned or refused.
fn assert_proxied(s: &mut Setup, session: &Session) -> Result<()> {
    let server = SocketAddr::from((SERVER, 80));
    assert_eq!(
        session.proxy_local, server,
        "the accepted socket's local address"
    );
    assert_eq!(
        session.proxy_peer, session.client_local,
        "the proxy sees the client as it is"
    );
    assert_eq!(session.request, REQUEST);
    assert_eq!(session.answer, format!("proxied {server}"));
    let counters = s.plane.counters()?;
    let shown = counters.nonzero();
    assert_eq!(counters.packets(Counter::ProxiedSyn), 1, "{shown:?}");
    // The handshake's ACK, the request, the ACKs and FIN of the close.
    assert!(counters.packets(Counter::Established) >= 3, "{shown:?}");
    for bad in [
        Counter::ReturnNoSocket,
        Counter::ReturnRule,
        Counter::ReturnNoListener,
        Counter::AssignFailed,
        Counter::AdjustFailed,
        Counter::BadInner,
    ] {
        assert_eq!(counters.packets(bad), 0, "{}: {shown:?}", bad.name());
    }
    Ok(())
}

/// The stand-in router wraps the client's packets in WCCP GRE; the engine decapsulates
/// them and the transparent proxy accepts the connection with the original destination
/// as its local address, and answers from it. A return rule added mid-flow does not cut
/// the connection.
#[test]
fn gre_connection_reaches_transparent_proxy_with_original_destination() -> Result<()> {
    let mut s = setup("enggre")?;
    let mut encap = WccpEncap::load()?;
    encap.configure(ROUTER, ENGINE, Ipv4Addr::new(10, 9, 0, 0), 16, REDIRECT)?;
    s.router.in_ns(|| encap.attach("r0"))??;
    s.router.add_route("10.9.0.0/16", &ENGINE.to_string())?;

    let session = proxied_connection(&mut s, true)?;
    assert_proxied(&mut s, &session)?;
    assert_eq!(s.plane.counters()?.packets(Counter::L2), 0);
    let [done, gso, failed] = encap.counters()?;
    assert!(
        done >= 4 && gso == 0 && failed == 0,
        "encap {done} {gso} {failed}"
    );

    // The rule added mid-flow applies to the next new flow: its SYN goes back.
    let next = s.router.in_ns(|| {
        TcpStream::connect_timeout(&SocketAddr::from((SERVER, 80)), Duration::from_millis(500))
    })?;
    assert!(
        next.is_err(),
        "a new flow is returned, and nothing answers it"
    );
    assert!(s.plane.counters()?.packets(Counter::ReturnRule) >= 1);
    drop(encap);
    s.plane.teardown()?;
    s.lab.teardown()
}

/// With L2 forwarding the client's packets arrive as they are, to the engine's MAC: the
/// router here simply routes the destination via the engine.
#[test]
fn l2_connection_reaches_transparent_proxy_with_original_destination() -> Result<()> {
    let mut s = setup_with("engl2", Options { l2: true, ..NORMAL })?;
    s.router.add_route("10.9.0.0/16", &ENGINE.to_string())?;
    let session = proxied_connection(&mut s, false)?;
    assert_proxied(&mut s, &session)?;
    let counters = s.plane.counters()?;
    assert!(
        counters.packets(Counter::L2) >= 4,
        "{:?}",
        counters.nonzero()
    );
    s.plane.teardown()?;
    s.lab.teardown()
}

/// What the kernel needs besides the socket assignment, measured: without the policy
/// route for the mark, or without IP_TRANSPARENT on the listener, the SYN is assigned
/// (counted) but no connection is made.
#[test]
fn assignment_needs_local_route_and_ip_transparent() -> Result<()> {
    for (prefix, options) in [
        (
            "engnoroute",
            Options {
                local_route: false,
                ..NORMAL
            },
        ),
        (
            "engnotp",
            Options {
                transparent: false,
                ..NORMAL
            },
        ),
    ] {
        let mut s = setup_with(prefix, options)?;
        s.router.add_route("10.9.0.0/16", &ENGINE.to_string())?;
        let mut encap = WccpEncap::load()?;
        encap.configure(ROUTER, ENGINE, Ipv4Addr::new(10, 9, 0, 0), 16, REDIRECT)?;
        s.router.in_ns(|| encap.attach("r0"))??;
        let server = SocketAddr::from((SERVER, 80));
        let attempt = s
            .router
            .in_ns(|| TcpStream::connect_timeout(&server, Duration::from_millis(1500)))?;
        let counters = s.plane.counters()?;
        eprintln!(
            "{prefix}: connect {:?}, counters {:?}",
            attempt.as_ref().map(|_| ()),
            counters.nonzero()
        );
        assert!(attempt.is_err(), "{prefix}: no connection");
        assert!(
            counters.packets(Counter::ProxiedSyn) >= 1,
            "{prefix}: the SYN was assigned to the listener: {:?}",
            counters.nonzero()
        );
        drop(encap);
        s.plane.teardown()?;
        s.lab.teardown()?;
    }
    Ok(())
}

/// A segment of a flow the engine has no socket for goes back to the router that sent
/// it, as WCCP GRE from the engine, carrying the same redirect header and inner packet.
#[test]
fn segment_without_socket_is_returned_to_its_router() -> Result<()> {
    let mut s = setup("engret")?;
    let (tx, rx) = {
        let ix = s.router.ifindex("r0")?;
        (
            s.router.in_ns(|| RawSocket::open(ix))??,
            s.router.in_ns(|| RawSocket::open(ix))??,
        )
    };
    let inner = client_packet(SocketAddrV4::new(SERVER, 80), 40001, PSH_ACK, b"old flow");
    let frame = gre_frame((s.engine_mac, s.router_mac), ROUTER, REDIRECT, &inner);
    tx.send(&frame)?;
    let back: Vec<Returned> = rx
        .collect(Duration::from_millis(500))
        .iter()
        .filter_map(|f| returned_from_engine(f))
        .collect();
    assert_eq!(back.len(), 1, "one returned frame");
    let r = &back[0];
    assert_eq!(r.eth[..6], s.router_mac, "to the router's MAC");
    assert_eq!(r.eth[6..12], s.engine_mac, "from the engine's MAC");
    assert_eq!(r.outer[12..16], ENGINE.octets(), "outer source: the engine");
    assert_eq!(
        r.outer[16..20],
        ROUTER.octets(),
        "outer destination: the router"
    );
    assert_eq!(r.outer[8], 64, "a fresh TTL");
    assert_eq!(checksum(&r.outer), 0, "outer checksum valid");
    assert_eq!(r.gre, frame[34..42], "GRE and redirect header as received");
    assert_eq!(r.inner, inner, "the client's packet untouched");

    let counters = s.plane.counters()?;
    assert_eq!(
        counters.packets(Counter::ReturnNoSocket),
        1,
        "{:?}",
        counters.nonzero()
    );

    // Once torn down, the program is gone from the interface: nothing comes back.
    s.plane.teardown()?;
    tx.send(&frame)?;
    let after = rx.collect(Duration::from_millis(300));
    assert!(
        !after.iter().any(|f| returned_from_engine(f).is_some()),
        "no return after teardown"
    );
    s.lab.teardown()
}

/// With L2 forwarding, a segment without a socket goes back to the router's MAC as it
/// came, only the MACs swapped.
#[test]
fn l2_segment_without_socket_is_returned_to_its_router() -> Result<()> {
    let mut s = setup_with("engl2ret", Options { l2: true, ..NORMAL })?;
    let (tx, rx) = {
        let ix = s.router.ifindex("r0")?;
        (
            s.router.in_ns(|| RawSocket::open(ix))??,
            s.router.in_ns(|| RawSocket::open(ix))??,
        )
    };
    let inner = client_packet(SocketAddrV4::new(SERVER, 80), 40007, PSH_ACK, b"old flow");
    let mut frame = Vec::new();
    frame.extend_from_slice(&s.engine_mac);
    frame.extend_from_slice(&s.router_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&inner);
    tx.send(&frame)?;
    let back: Vec<Vec<u8>> = rx
        .collect(Duration::from_millis(500))
        .into_iter()
        .filter(|f| f.len() > 14 && f[14..] == inner[..])
        .collect();
    assert_eq!(back.len(), 1, "one returned frame");
    assert_eq!(back[0][..6], s.router_mac, "to the router's MAC");
    assert_eq!(back[0][6..12], s.engine_mac, "from the engine's MAC");
    let c = s.plane.counters()?;
    assert_eq!(c.packets(Counter::ReturnNoSocket), 1, "{:?}", c.nonzero());
    assert_eq!(c.packets(Counter::L2), 1, "{:?}", c.nonzero());
    s.plane.teardown()?;
    s.lab.teardown()
}

/// GRE from an address that is not a known router is dropped and counted; truncated GRE
/// and unknown redirect header flags from a known router too.
#[test]
fn stranger_truncated_and_bad_headers_are_dropped_and_counted() -> Result<()> {
    let mut s = setup("engbad")?;
    let (tx, rx) = {
        let ix = s.router.ifindex("r0")?;
        (
            s.router.in_ns(|| RawSocket::open(ix))??,
            s.router.in_ns(|| RawSocket::open(ix))??,
        )
    };
    let macs = (s.engine_mac, s.router_mac);
    let ack = client_packet(SocketAddrV4::new(SERVER, 80), 40002, ACK, b"");
    let syn = client_packet(SocketAddrV4::new(SERVER, 80), 40003, SYN, b"");
    // A SYN from a stranger would reach the proxy if it were accepted; an ACK would be
    // returned. Neither may happen.
    tx.send(&gre_frame(macs, STRANGER, REDIRECT, &syn))?;
    tx.send(&gre_frame(macs, STRANGER, REDIRECT, &ack))?;
    let mut truncated = gre_frame(macs, ROUTER, REDIRECT, &ack);
    truncated.truncate(14 + 20 + 8 + 10);
    // The outer length must agree with the frame, or the stack trims it first.
    let outer = ipv4_header(ROUTER, ENGINE, 47, 8 + 10);
    truncated[14..34].copy_from_slice(&outer);
    tx.send(&truncated)?;
    tx.send(&gre_frame(macs, ROUTER, [0x40, SERVICE_ID, 0, 7], &ack))?;

    let back: Vec<Returned> = rx
        .collect(Duration::from_millis(500))
        .iter()
        .filter_map(|f| returned_from_engine(f))
        .collect();
    assert!(back.is_empty(), "nothing returned");
    s.listener.set_nonblocking(true)?;
    assert!(
        s.listener.accept().is_err(),
        "no connection reached the proxy"
    );
    let c = s.plane.counters()?;
    let shown = c.nonzero();
    assert_eq!(c.packets(Counter::Stranger), 2, "{shown:?}");
    assert_eq!(c.packets(Counter::Truncated), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::BadHeader), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::ProxiedSyn), 0, "{shown:?}");
    s.plane.teardown()?;
    s.lab.teardown()
}

/// A return rule with a rewrite sends a SYN back instead of proxying it, with the inner
/// destination changed and both inner checksums still right.
#[test]
fn return_rule_rewrites_inner_destination() -> Result<()> {
    let mut s = setup("engrw")?;
    let new_dst = Ipv4Addr::new(10, 9, 0, 200);
    s.plane.add_rule(&ReturnRule {
        port: Some(80),
        rewrite_dst: Some(new_dst),
        ..ReturnRule::returning(Ipv4Addr::new(10, 9, 5, 0), 24)
    })?;
    let (tx, rx) = {
        let ix = s.router.ifindex("r0")?;
        (
            s.router.in_ns(|| RawSocket::open(ix))??,
            s.router.in_ns(|| RawSocket::open(ix))??,
        )
    };
    let macs = (s.engine_mac, s.router_mac);
    let inner = client_packet(
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 5, 5), 80),
        40004,
        SYN,
        b"",
    );
    tx.send(&gre_frame(macs, ROUTER, REDIRECT, &inner))?;
    // Port 443 is no service here and the rule names port 80: returned as not served,
    // not rewritten.
    let other = client_packet(
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 5, 5), 443),
        40005,
        SYN,
        b"",
    );
    tx.send(&gre_frame(macs, ROUTER, REDIRECT, &other))?;

    let back: Vec<Returned> = rx
        .collect(Duration::from_millis(500))
        .iter()
        .filter_map(|f| returned_from_engine(f))
        .collect();
    assert_eq!(back.len(), 2, "both returned");
    let rewritten = back
        .iter()
        .find(|r| r.inner[22..24] == 80u16.to_be_bytes())
        .context("the port 80 SYN came back")?;
    let got = &rewritten.inner;
    assert_eq!(got[16..20], new_dst.octets(), "inner destination rewritten");
    assert_eq!(checksum(&got[..20]), 0, "inner IP checksum valid");
    assert_eq!(
        tcp_checksum(got),
        0,
        "TCP checksum valid over the new pseudo-header"
    );
    let mut expected = inner.clone();
    expected[16..20].copy_from_slice(&new_dst.octets());
    expected[10..12].copy_from_slice(&got[10..12]);
    expected[36..38].copy_from_slice(&got[36..38]);
    assert_eq!(got, &expected, "nothing else changed");
    let untouched = back
        .iter()
        .find(|r| r.inner[22..24] == 443u16.to_be_bytes())
        .context("the port 443 SYN came back")?;
    assert_eq!(untouched.inner, other);

    let c = s.plane.counters()?;
    let shown = c.nonzero();
    assert_eq!(c.packets(Counter::ReturnRule), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::Rewritten), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::ReturnNotServed), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::ProxiedSyn), 0, "{shown:?}");
    s.plane.teardown()?;
    s.lab.teardown()
}

/// A rule with a copy sends the frame, byte for byte as it arrived, out of the copy
/// interface, and still returns it to the router.
#[test]
fn copy_rule_delivers_identical_bytes_to_the_local_consumer() -> Result<()> {
    let mut s = setup("engcopy")?;
    s.plane.add_rule(&ReturnRule {
        copy: true,
        ..ReturnRule::returning(Ipv4Addr::new(10, 9, 6, 0), 24)
    })?;
    let (tx, rx) = {
        let ix = s.router.ifindex("r0")?;
        (
            s.router.in_ns(|| RawSocket::open(ix))??,
            s.router.in_ns(|| RawSocket::open(ix))??,
        )
    };
    let copies = {
        let ix = s.monitor.ifindex("m0")?;
        s.monitor.in_ns(|| RawSocket::open(ix))??
    };
    let inner = client_packet(
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 6, 6), 80),
        40006,
        PSH_ACK,
        b"inspect me",
    );
    let frame = gre_frame((s.engine_mac, s.router_mac), ROUTER, REDIRECT, &inner);
    tx.send(&frame)?;
    let back: Vec<Returned> = rx
        .collect(Duration::from_millis(300))
        .iter()
        .filter_map(|f| returned_from_engine(f))
        .collect();
    let copied: Vec<Vec<u8>> = copies
        .collect(Duration::from_millis(300))
        .into_iter()
        .filter(|f| f.len() > 23 && f[23] == 47)
        .collect();
    assert_eq!(
        copied,
        vec![frame.clone()],
        "one copy, identical to the frame sent"
    );
    assert_eq!(back.len(), 1, "and the packet itself returned");
    assert_eq!(back[0].inner, inner);

    let c = s.plane.counters()?;
    let shown = c.nonzero();
    assert_eq!(c.packets(Counter::Copied), 1, "{shown:?}");
    assert_eq!(c.packets(Counter::ReturnRule), 1, "{shown:?}");
    s.plane.teardown()?;
    s.lab.teardown()
}

fn ip_output(host: &Host, args: &[&str]) -> Result<String> {
    let out = host.run(std::process::Command::new("ip").args(args))?;
    Ok(String::from_utf8(out.stdout)?)
}

/// The policy routing by netlink is what the documented commands make, and leaves
/// nothing behind when removed.
#[test]
fn local_delivery_adds_and_removes_rule_and_route() -> Result<()> {
    let lab = Lab::new("engroute")?;
    let host = lab.host("engine")?;
    let show = |host: &Host| -> Result<(String, String)> {
        let ours = format!("table {DEFAULT_TABLE} ");
        let routes = ip_output(host, &["-4", "route", "show", "table", "all"])?
            .lines()
            .filter(|l| l.contains(&ours))
            .map(|l| format!("{l}\n"))
            .collect();
        Ok((ip_output(host, &["-4", "rule", "list"])?, routes))
    };
    let (rules_before, routes_before) = show(&host)?;
    let routing =
        host.in_ns(|| LocalDelivery::install(DEFAULT_MARK, DEFAULT_TABLE, DEFAULT_RULE_PRIORITY))??;
    let (rules, routes) = show(&host)?;
    let rule = format!(
        "{DEFAULT_RULE_PRIORITY}:\tfrom all fwmark {DEFAULT_MARK:#x} lookup {DEFAULT_TABLE}"
    );
    assert!(rules.contains(&rule), "{rules}");
    assert!(routes.contains("local default dev lo"), "{routes}");
    // Installing again (a restarted agent) takes the existing ones over.
    let again =
        host.in_ns(|| LocalDelivery::install(DEFAULT_MARK, DEFAULT_TABLE, DEFAULT_RULE_PRIORITY))??;
    assert_eq!(
        show(&host)?,
        (rules.clone(), routes.clone()),
        "no duplicates"
    );
    drop(again);
    assert_eq!(show(&host)?, (rules_before.clone(), routes_before.clone()));
    routing.remove()?;
    assert_eq!(show(&host)?, (rules_before.clone(), routes_before.clone()));

    // The commands for operators make the same rule and route.
    for argv in local_delivery_commands(DEFAULT_MARK, DEFAULT_TABLE) {
        host.run(std::process::Command::new(&argv[0]).args(&argv[1..]))?;
    }
    let (cmd_rules, cmd_routes) = show(&host)?;
    assert!(
        cmd_rules.contains(&format!("fwmark {DEFAULT_MARK:#x} lookup {DEFAULT_TABLE}")),
        "{cmd_rules}"
    );
    assert!(cmd_routes.contains("local default dev lo"), "{cmd_routes}");
    lab.teardown()
}
