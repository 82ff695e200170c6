//! The whole path, both data planes: the router's XDP program redirects a client's flows
//! to the engine in WCCP GRE; the engine's tc program hands new flows to a transparent
//! proxy that fetches from the real server, and returns the segments of a flow that began
//! before redirection, which the router decapsulates and forwards to the server. Root
//! only; the lab's namespaces are removed on drop, failures included.
//!
//! ```text
//!  client c0 ──── r0 router r2 ──── s0 server 10.9.0.1:80 (echo)
//!  10.1.0.2  10.1.0.1   │    10.9.0.254
//!            (XDP redirect) r1 10.2.0.1 (XDP: returns, engine-facing)
//!                       │
//!                      e0 10.2.0.2 engine (tc_engine; proxy on 0.0.0.0:3129)
//! ```

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use netns_tests::{
    netns::{Host, Lab},
    sockets,
};
use redirector_ebpf::{
    engine_plane::{
        Counter, EnginePlane, EngineSettings, LocalDelivery, DEFAULT_MARK, DEFAULT_RULE_PRIORITY,
        DEFAULT_TABLE,
    },
    layout::IFACE_ENGINE_FACING,
    model::Reason,
    table::{Assignment, EngineConfig, Method, Protocol, ServiceConfig, Slot, TableConfig},
    EbpfObject, Redirector,
};
use wccp::assign::flags;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ROUTER_E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const ENGINE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const PROXY_PORT: u16 = 3129;
const SERVICE_ID: u8 = 90;

/// Accepts on a non-blocking listener until `deadline`.
fn accept_by(listener: &TcpListener, deadline: Instant) -> Result<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(Instant::now() < deadline, "nothing to accept");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line (up to '\n') from `conn`.
fn read_line(conn: &mut TcpStream) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte)? == 1 {
        if byte[0] == b'\n' {
            return Ok(String::from_utf8(line)?);
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8(line)?)
}

/// The server: answers each line with "echo <line> from <peer>" until the peer closes;
/// returns the peers it served.
fn serve(listener: TcpListener, connections: usize) -> Result<Vec<SocketAddr>> {
    listener.set_nonblocking(true)?;
    let mut peers = Vec::new();
    let mut workers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..connections {
        let (mut conn, peer) = accept_by(&listener, deadline)?;
        peers.push(peer);
        workers.push(std::thread::spawn(move || -> Result<()> {
            loop {
                let line = read_line(&mut conn)?;
                if line.is_empty() {
                    return Ok(());
                }
                conn.write_all(format!("echo {line} from {peer}\n").as_bytes())?;
            }
        }));
    }
    for w in workers {
        w.join().expect("server worker")?;
    }
    Ok(peers)
}

/// The proxy: for one connection, connects to the original destination (its own local
/// address), relays one request line and prefixes the answer.
fn proxy_one(listener: TcpListener) -> Result<(SocketAddr, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let (mut client, peer) = accept_by(&listener, Instant::now() + Duration::from_secs(20))?;
    let original = client.local_addr()?;
    let mut upstream = TcpStream::connect_timeout(&original, Duration::from_secs(5))?;
    upstream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = read_line(&mut client)?;
    upstream.write_all(format!("{request}\n").as_bytes())?;
    let answer = read_line(&mut upstream)?;
    client.write_all(format!("proxy {original}: {answer}\n").as_bytes())?;
    Ok((original, peer))
}

struct Net {
    client: Host,
    router: Host,
    engine: Host,
    server: Host,
}

fn table(engine_mac: [u8; 6], r1: (u32, [u8; 6])) -> TableConfig {
    TableConfig {
        services: vec![ServiceConfig {
            id: SERVICE_ID,
            dynamic: true,
            protocol: Protocol::Tcp,
            priority: 1,
            flags: flags::SRC_IP_HASH | flags::PORTS_DEFINED,
            ports: vec![80],
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
            addr: ENGINE,
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

#[test]
fn router_redirects_engine_proxies_new_flows_and_returns_old_ones() -> Result<()> {
    let lab = Lab::new("engwccp")?;
    let net = Net {
        client: lab.host("client")?,
        router: lab.host("router")?,
        engine: lab.host("engine")?,
        server: lab.host("server")?,
    };
    lab.link(&net.client, "c0", &net.router, "r0")?;
    lab.link(&net.router, "r1", &net.engine, "e0")?;
    lab.link(&net.router, "r2", &net.server, "s0")?;
    net.client.add_addr("c0", &format!("{CLIENT}/24"))?;
    net.client.add_route("default", "10.1.0.1")?;
    net.router.add_addr("r0", "10.1.0.1/24")?;
    net.router.add_addr("r1", &format!("{ROUTER_E}/24"))?;
    net.router.add_addr("r2", "10.9.0.254/24")?;
    net.router.sysctl("net.ipv4.ip_forward", "1")?;
    // The proxy answers from the server's address out of the engine's side.
    for key in ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.r1.rp_filter"] {
        net.router.sysctl(key, "0")?;
    }
    net.engine.add_addr("e0", &format!("{ENGINE}/24"))?;
    net.engine.add_route("default", &ROUTER_E.to_string())?;
    net.server.add_addr("s0", &format!("{SERVER}/24"))?;
    net.server.add_route("default", "10.9.0.254")?;
    // Only the client's frames are sent on by XDP (redirected); everything else the
    // router's XDP passes to the stack, which keeps the checksum state.
    net.client.in_ns(|| sockets::tx_checksum_off("c0"))??;
    let routing = net
        .engine
        .in_ns(|| LocalDelivery::install(DEFAULT_MARK, DEFAULT_TABLE, DEFAULT_RULE_PRIORITY))??;

    // The engine: its program, and XDP on e0, without which frames the router's XDP
    // redirects into the veth are dropped.
    let mut pass = EbpfObject::open("xdp_pass")?;
    net.engine.in_ns(|| -> Result<()> {
        pass.xdp("xdp_pass")?
            .attach("e0", aya::programs::XdpMode::Driver)?;
        Ok(())
    })??;
    let mut plane = EnginePlane::load()?;
    plane.configure(&EngineSettings {
        addr: Some(ENGINE),
        ..EngineSettings::default()
    })?;
    plane.add_router(ROUTER_E)?;
    plane.set_service_port(80, PROXY_PORT)?;
    net.engine.in_ns(|| plane.attach("e0"))??;
    let proxy_listener = net
        .engine
        .in_ns(|| sockets::wildcard_listener(PROXY_PORT, true, false, 16))??;

    // The router, attached but with no table yet: everything passes.
    let mut router = Redirector::load()?;
    net.router.in_ns(|| router.attach("r0"))??;
    net.router.in_ns(|| router.attach("r1"))??;
    let r1 = (net.router.ifindex("r1")?, net.router.mac("r1")?);
    router.set_iface_flags(r1.0, IFACE_ENGINE_FACING)?;
    let engine_mac = net.engine.mac("e0")?;

    let server_listener = net.server.in_ns(|| TcpListener::bind((SERVER, 80)))??;
    let server = net.server.thread(move || serve(server_listener, 2))?;
    let target = SocketAddr::from((SERVER, 80));

    // 1. A flow that begins before redirection.
    let mut old = net
        .client
        .in_ns(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))??;
    old.set_read_timeout(Some(Duration::from_secs(5)))?;
    old.write_all(b"one\n")?;
    let first = read_line(&mut old)?;
    assert_eq!(first, format!("echo one from {}", old.local_addr()?));

    // 2. Redirection starts.
    router.install(&table(engine_mac, r1).compile()?)?;
    router.heartbeat(Duration::from_secs(60))?;

    // 3. The old flow's next segment goes to the engine, which has no socket for it and
    // returns it; the router decapsulates it and forwards it to the server.
    old.write_all(b"two\n")?;
    let second = read_line(&mut old);
    if second.is_err() {
        let r = router.stats()?;
        let reasons: Vec<_> = Reason::ALL
            .iter()
            .map(|x| (*x, r[*x as usize].packets))
            .filter(|(_, n)| *n != 0)
            .collect();
        eprintln!(
            "engine {:?}\nrouter {reasons:?}",
            plane.counters()?.nonzero()
        );
    }
    let second = second.context("the old flow survives redirection")?;
    assert_eq!(second, format!("echo two from {}", old.local_addr()?));

    // 4. A new flow is proxied: the proxy sees the server's address as its own, fetches
    // from the server and answers.
    let proxy = net.engine.thread(move || proxy_one(proxy_listener))?;
    let mut new = net
        .client
        .in_ns(|| TcpStream::connect_timeout(&target, Duration::from_secs(5)))??;
    new.set_read_timeout(Some(Duration::from_secs(5)))?;
    new.write_all(b"three\n")?;
    let third = read_line(&mut new)?;
    let (original, proxy_peer) = proxy.join()?;
    assert_eq!(original, target, "the proxy's local address");
    assert_eq!(proxy_peer, new.local_addr()?, "the proxy sees the client");
    let upstream_peer = {
        drop(old);
        drop(new);
        server.join()?
    };
    assert_eq!(upstream_peer.len(), 2);
    assert_eq!(upstream_peer[0].ip(), std::net::IpAddr::V4(CLIENT));
    assert_eq!(
        upstream_peer[1].ip(),
        std::net::IpAddr::V4(ENGINE),
        "the server's second connection is the proxy's"
    );
    assert_eq!(
        third,
        format!("proxy {target}: echo three from {}", upstream_peer[1])
    );

    // Every return the engine counted reaches the router (the last ACKs may be in
    // flight for a moment).
    let deadline = Instant::now() + Duration::from_secs(3);
    let (e, r) = loop {
        let e = plane.counters()?;
        let r = router.stats()?;
        let settled = r[Reason::ReturnGre as usize].packets == e.packets(Counter::ReturnNoSocket);
        if settled || Instant::now() > deadline {
            break (e, r);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let shown = e.nonzero();
    assert!(e.packets(Counter::ReturnNoSocket) >= 1, "{shown:?}");
    assert_eq!(e.packets(Counter::ProxiedSyn), 1, "{shown:?}");
    assert!(e.packets(Counter::Established) >= 2, "{shown:?}");
    for bad in [
        Counter::Stranger,
        Counter::Truncated,
        Counter::BadHeader,
        Counter::BadInner,
        Counter::AssignFailed,
        Counter::AdjustFailed,
        Counter::RedirectFailed,
    ] {
        assert_eq!(e.packets(bad), 0, "{}: {shown:?}", bad.name());
    }
    let redirected = r[Reason::RedirectGre as usize].packets;
    let returned = r[Reason::ReturnGre as usize].packets;
    assert!(redirected >= 3, "router redirected {redirected}");
    assert_eq!(
        returned,
        e.packets(Counter::ReturnNoSocket),
        "the router decapsulated every return"
    );

    plane.teardown()?;
    routing.remove()?;
    drop(router);
    lab.teardown()
}
