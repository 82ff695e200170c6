//! The real `redirector-ctl run` with the XDP data plane, in network namespaces: an engine
//! (`wccp::engine` over UDP 2048) joins, the controller resolves its next hop through
//! netlink (`show engines --json` says so), a client's TCP SYN arrives at the engine in
//! GRE, and when the engine's MAC moves the redirected traffic follows it: once learnt
//! from the engine's gratuitous ARP, once by re-resolution after the router's neighbour
//! entry is flushed. Also: engines behind a gateway (GRE through it; L2 refused, with the
//! reason) and an on-link L2 engine (frames rewritten, not encapsulated). Root only;
//! everything lives in a `netns_tests::netns::Lab` (torn down on drop, failures included)
//! and a per-lab pin root (removed by a guard).
//!
//! ```text
//!  client c0 ──veth── r0 router r1 ──veth── e0 engine
//!  10.1.0.2    10.1.0.1  (XDP on r0)  10.2.0.1   10.2.0.2 (xdp_pass, AF_PACKET capture)
//! ```

use netns_tests::sockets::PacketSocket;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netns_tests::netns::{wait_until, Host, Lab};
use redirector_ebpf::{EbpfObject, PinRoot};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const ROUTER_E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const ENGINE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const WCCP_PORT: u16 = 2048;
const BIN: &str = env!("CARGO_BIN_EXE_redirector-ctl");

/// A raw packet socket (see `netns_tests::sockets`) that looks for redirected SYNs.
struct Capture(PacketSocket);

impl Capture {
    /// Must run inside the namespace (the socket stays bound to it afterwards).
    fn open(ifindex: u32) -> Result<Self> {
        Ok(Self(PacketSocket::open(
            ifindex,
            Duration::from_millis(50),
        )?))
    }

    /// The next frame, or None after the 50 ms timeout.
    fn recv(&self) -> Option<Vec<u8>> {
        self.0.recv().map(|r| r.bytes)
    }

    /// Waits up to `wait` for a redirected SYN; returns its frame's destination MAC and
    /// outer source (the GRE source: the router's address).
    fn redirected(&self, wait: Duration) -> Option<Redirected> {
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Some(r) = self.recv().as_deref().and_then(redirected_syn) {
                return Some(r);
            }
        }
        None
    }
}

/// A client SYN to the server's port 80 as the engine received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Redirected {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    service: u8,
}

/// Ethernet + IPv4 (GRE) + GRE 0x883E + redirect header + IPv4 + TCP SYN from the client
/// to the server's port 80.
fn redirected_syn(f: &[u8]) -> Option<Redirected> {
    if f.len() < 14 + 20 + 8 + 20 + 20 || f[12..14] != [0x08, 0x00] || f[23] != 47 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let gre = f.get(14 + ihl..)?;
    if gre.get(..4)? != [0, 0, 0x88, 0x3e] {
        return None;
    }
    let inner = gre.get(8..)?;
    let inner_ihl = usize::from(inner.first()? & 0x0f) * 4;
    let tcp = inner.get(inner_ihl..)?;
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let is_syn = inner[9] == 6
        && ip4(&inner[12..16]) == CLIENT
        && ip4(&inner[16..20]) == SERVER
        && tcp.get(2..4)? == 80u16.to_be_bytes()
        && tcp.get(13)? & 0x12 == 0x02;
    is_syn.then(|| Redirected {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        outer_src: ip4(&f[26..30]),
        outer_dst: ip4(&f[30..34]),
        service: gre[5],
    })
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Removes the test's pin root however the test ends.
struct PinGuard(PinRoot);

impl Drop for PinGuard {
    fn drop(&mut self) {
        for dir in [self.0.links_dir(), self.0.maps_dir()] {
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

/// Sets a flag on drop, so background threads stop however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `wccp::engine` at `address` for the web-cache service over UDP until `stop`,
/// forwarding by L2 (`l2`) or GRE.
fn run_engine(address: Ipv4Addr, l2: bool, stop: Arc<AtomicBool>) -> Result<()> {
    use wccp::engine::{Action, Engine, EngineConfig};
    use wccp::time::Instant as PInstant;
    use wccp::wire::{ForwardingMethods, ServiceInfo};

    let socket = UdpSocket::bind(SocketAddrV4::new(address, WCCP_PORT))?;
    let mut cfg = EngineConfig::new(address, ServiceInfo::web_cache(), vec![ROUTER_E]);
    cfg.interval = Duration::from_millis(500);
    if l2 {
        cfg.forwarding = ForwardingMethods::L2;
    }
    let mut engine = Engine::new(cfg);
    let origin = Instant::now();
    let now = || PInstant::from_millis(origin.elapsed().as_millis() as u64);
    let send = |actions: Vec<Action>| {
        for a in actions {
            if let Action::Send(t) = a {
                let _ = socket.send_to(&t.bytes, SocketAddrV4::new(t.to, WCCP_PORT));
            }
        }
    };
    send(engine.start(now()));
    while !stop.load(Ordering::SeqCst) {
        let wait = engine
            .next_timeout()
            .map(|t| Duration::from_millis(t.as_millis().saturating_sub(now().as_millis())))
            .unwrap_or(Duration::from_millis(50))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait))?;
        let mut buf = [0u8; 4096];
        match socket.recv_from(&mut buf) {
            Ok((n, std::net::SocketAddr::V4(from))) => {
                send(engine.handle_message(*from.ip(), &buf[..n], now()))
            }
            _ => {
                if engine.next_timeout().is_some_and(|t| t <= now()) {
                    send(engine.handle_timeout(now()));
                }
            }
        }
    }
    send(engine.shutdown(now()));
    Ok(())
}

/// Sends one client SYN to the server's port 80 every few milliseconds until `stop`
/// (kernel TCP: each connect is a fresh flow, abandoned after a short timeout).
fn run_client(stop: Arc<AtomicBool>) {
    let to = SocketAddrV4::new(SERVER, 80).into();
    while !stop.load(Ordering::SeqCst) {
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(15));
    }
}

/// Port of the controller's metrics endpoint, on the router namespace's loopback.
const METRICS_PORT: u16 = 9848;

/// Starts `redirector-ctl run` with the XDP data plane in `router`: web-cache service,
/// redirecting in on r0, r1 (the engine side) excluded, pinned under `root`. Returns the
/// control socket and the process, once it runs.
fn start_daemon(
    lab: &Lab,
    router: &Host,
    root: &PinRoot,
    metrics_port: u16,
) -> Result<(PathBuf, netns_tests::netns::Process)> {
    let dir: PathBuf = lab.scratch_dir().to_owned();
    let sock = dir.join("ctl.sock");
    let config = dir.join("redirector.toml");
    std::fs::write(
        &config,
        format!(
            "[router]\naddress = \"{ROUTER_E}\"\nredirect_in = [\"r0\"]\nexclude = [\"r1\"]\ncontrol_socket = \"{}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n\n[timers]\nhere_i_am_ms = 1000\n\n[dataplane]\npin_root = \"{}\"\ngrace_ms = 30000\n\n[[service]]\nid = 0\n",
            sock.display(),
            root.path().display()
        ),
    )?;
    let mut daemon = router.spawn(
        Command::new(BIN)
            .args(["run", "--log-format", "json", "-c"])
            .arg(&config),
    )?;
    daemon.wait_for_output("redirector-ctl running", Duration::from_secs(20))?;
    Ok((sock, daemon))
}

/// Attaches `xdp_pass` to `iface` of `host`: frames redirected into a veth arrive only
/// when its peer runs XDP.
fn xdp_pass(host: &Host, iface: &str) -> Result<EbpfObject> {
    let mut pass = EbpfObject::open("xdp_pass")?;
    host.in_ns(|| -> Result<()> {
        pass.xdp("xdp_pass")?
            .attach(iface, aya::programs::XdpMode::Driver)?;
        Ok(())
    })??;
    Ok(pass)
}

fn ctl(sock: &Path, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(BIN)
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .context("running redirector-ctl")?;
    if !out.status.success() {
        bail!(
            "redirector-ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn show(sock: &Path, args: &[&str]) -> Result<Value> {
    let mut all = vec!["show"];
    all.extend_from_slice(args);
    all.push("--json");
    Ok(serde_json::from_slice(&ctl(sock, &all)?.stdout)?)
}

fn metrics(router: &Host, port: u16) -> Result<String> {
    use std::io::{Read, Write};
    router.in_ns(|| -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// A metric's value from the exposition text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Changes `e0`'s MAC, waits for redirected SYNs to arrive with it, and returns how long
/// that took from just before the change; `after` runs right after the change (a flush).
fn move_mac_and_time(
    engine: &Host,
    capture: &Capture,
    mac: &str,
    after: impl FnOnce() -> Result<()>,
) -> Result<Duration> {
    let new: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    engine.run(
        engine
            .command("ip")?
            .args(["link", "set", "dev", "e0", "address", mac]),
    )?;
    after()?;
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(r) = capture.redirected(Duration::from_millis(50)) {
            if r.dst_mac[..] == new[..] {
                return Ok(t0.elapsed());
            }
        }
    }
    bail!("no redirected SYN reached {mac} within 10 s of the MAC change")
}

/// `wccp_engine_next_hop_resolved` of the web-cache service's engine `engine`, from the
/// exposition text: the metric every test reads.
fn next_hop_resolved(text: &str, engine: &str) -> Option<f64> {
    metric(
        text,
        &format!("wccp_engine_next_hop_resolved{{service=\"standard/0\",engine=\"{engine}\"}}"),
    )
}

/// A lab with the client and the router (c0 ── r0, forwarding), the engine side left to
/// each test: every test starts with it.
fn client_and_router(name: &str) -> Result<(Lab, Host, Host)> {
    let lab = Lab::new(name)?;
    let client = lab.host("client")?;
    let router = lab.host("router")?;
    lab.link(&client, "c0", &router, "r0")?;
    client.add_addr("c0", "10.1.0.2/24")?;
    router.add_addr("r0", "10.1.0.1/24")?;
    client.add_route("default", &ROUTER_C.to_string())?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    Ok((lab, client, router))
}

/// The picture at the top: the client, the router and an on-link engine (r1 ── e0), as
/// both on-link tests have it.
fn on_link_lab(name: &str) -> Result<(Lab, Host, Host, Host)> {
    let (lab, client, router) = client_and_router(name)?;
    let engine = lab.host("engine")?;
    lab.link(&router, "r1", &engine, "e0")?;
    router.add_addr("r1", "10.2.0.1/24")?;
    engine.add_addr("e0", "10.2.0.2/24")?;
    Ok((lab, client, router, engine))
}

/// What every test runs beside its lab: `xdp_pass` where frames are redirected to, the
/// capture on the engines' `e0`, the pin root and its guard, the daemon, and the flag
/// that stops the background threads. Fields drop in this order when a test fails: the
/// threads are told to stop first, the XDP program is detached last.
struct Rig {
    _stop: StopOnDrop,
    stop: Arc<AtomicBool>,
    sock: PathBuf,
    daemon: netns_tests::netns::Process,
    _pins: PinGuard,
    root: PinRoot,
    capture: Capture,
    pass: EbpfObject,
}

impl Rig {
    /// Attaches `xdp_pass` to `pass_iface` of `pass_host`, opens the capture on
    /// `engines`' e0 and starts the daemon in `router`.
    fn start(
        lab: &Lab,
        router: &Host,
        pass_host: &Host,
        pass_iface: &str,
        engines: &Host,
    ) -> Result<Rig> {
        let pass = xdp_pass(pass_host, pass_iface)?;
        let capture = {
            let ix = engines.ifindex("e0")?;
            engines.in_ns(|| Capture::open(ix))??
        };
        let root = PinRoot::instance(lab.id())?;
        let _pins = PinGuard(root.clone());
        let (sock, daemon) = start_daemon(lab, router, &root, METRICS_PORT)?;
        let stop = Arc::new(AtomicBool::new(false));
        Ok(Rig {
            _stop: StopOnDrop(stop.clone()),
            stop,
            sock,
            daemon,
            _pins,
            root,
            capture,
            pass,
        })
    }

    /// Runs `wccp::engine` at `address` in `host` until the rig stops it.
    fn engine(&self, host: &Host, address: Ipv4Addr, l2: bool) -> Result<EngineThread> {
        let stop = self.stop.clone();
        host.thread(move || run_engine(address, l2, stop))
    }

    /// Waits up to 30 s for `show engines` to be `ready`; returns the last answer (and
    /// the daemon's log with it on failure).
    fn wait_engines(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = Value::Null;
        wait_until(what, Duration::from_secs(30), || {
            let e = show(&self.sock, &["engines"])?;
            last = e.clone();
            Ok(ready(&e))
        })
        .with_context(|| {
            format!(
                "last show engines: {last:#}\n{}",
                self.daemon.stderr().unwrap_or_default()
            )
        })?;
        Ok(last)
    }

    /// Waits up to 5 s for the one engine's next hop to be in `state`; returns the last
    /// `show engines`.
    fn wait_next_hop(&self, what: &str, state: &str) -> Result<Value> {
        let mut last = Value::Null;
        wait_until(what, Duration::from_secs(5), || {
            let e = show(&self.sock, &["engines"])?;
            last = e.clone();
            Ok(e[0]["next_hop"]["state"] == state)
        })
        .with_context(|| format!("{last:#}"))?;
        Ok(last)
    }

    /// The first redirected SYN at `at` within 5 s (the router's stats if none).
    fn redirected(&self, at: &str) -> Result<Redirected> {
        self.capture
            .redirected(Duration::from_secs(5))
            .with_context(|| {
                format!(
                    "no redirected SYN at {at}; {:#}",
                    show(&self.sock, &["stats"]).unwrap_or_default()
                )
            })
    }

    /// Stops the engine threads, then the daemon with `stop --clear`.
    fn stop_clear(&mut self, engines: Vec<EngineThread>) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for t in engines {
            t.join()?;
        }
        ctl(&self.sock, &["stop", "--clear"])?;
        self.daemon.wait_timeout(Duration::from_secs(10))?;
        Ok(())
    }

    /// The check after `stop_clear` of the two GRE tests (the L2 test does not make it).
    #[track_caller]
    fn assert_pins_removed(&self) {
        assert!(
            !self.root.path().exists(),
            "pin root removed by stop --clear"
        );
    }

    /// Detaches `xdp_pass` and closes the capture before the lab goes (the rest drops
    /// after, as when each was a local of the test).
    fn teardown(self, lab: Lab) -> Result<()> {
        let Rig { pass, capture, .. } = self;
        drop(pass);
        drop(capture);
        lab.teardown().context("lab teardown")
    }
}

type EngineThread = netns_tests::netns::NsThread<Result<()>>;

/// A `run_client` thread, stopped however the test ends: every test sends its SYNs so.
struct Client {
    stop: Arc<AtomicBool>,
    thread: netns_tests::netns::NsThread<()>,
    _stop: StopOnDrop,
}

impl Client {
    fn start(host: &Host) -> Result<Client> {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(stop.clone());
        let thread = {
            let stop = stop.clone();
            host.thread(move || run_client(stop))?
        };
        Ok(Client {
            stop,
            thread,
            _stop,
        })
    }

    /// Stops the client and waits for it.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join();
    }
}

/// Whether the one engine in `show engines` is usable with all buckets and a resolved
/// next hop.
fn usable_and_resolved(e: &Value) -> bool {
    let e = &e[0];
    e["state"] == "usable" && e["slots"] == 256 && e["next_hop"]["state"] == "resolved"
}

#[test]
fn next_hop_resolved_redirects_and_follows_a_mac_move() -> Result<()> {
    let (lab, client, router, engine) = on_link_lab("ctlnh")?;
    engine.add_route("default", &ROUTER_E.to_string())?;
    // The engine announces a MAC change with a gratuitous ARP.
    engine.sysctl("net.ipv4.conf.e0.arp_notify", "1")?;
    let r1_mac = router.mac("r1")?;
    let e0_mac = engine.mac("e0")?;

    let mut rig = Rig::start(&lab, &router, &engine, "e0", &engine)?;
    let engine_thread = rig.engine(&engine, ENGINE, false)?;

    // Joined, assigned, and the next hop resolved to e0 on r1.
    let last = rig.wait_engines(
        "the engine to be usable with a resolved next hop and 256 buckets",
        usable_and_resolved,
    )?;
    let hop = &last[0]["next_hop"];
    assert_eq!(hop["interface"], "r1", "{hop:#}");
    assert_eq!(hop["mac"], mac_str(&e0_mac), "{hop:#}");
    assert_eq!(hop["src_mac"], mac_str(&r1_mac), "{hop:#}");
    assert_eq!(hop["gateway"], Value::Null, "on-link: {hop:#}");
    assert_eq!(hop["router_address"], ROUTER_E.to_string(), "{hop:#}");
    assert_eq!(hop["mtu"], 1500, "{hop:#}");
    assert_eq!(hop["reason"], Value::Null, "{hop:#}");
    let sock = rig.sock.clone();
    let all = show(&sock, &[])?;
    assert_eq!(all["dataplane"]["interfaces"][0]["name"], "r0", "{all:#}");
    // The engine-facing side is excluded by its index in the router's namespace.
    assert_eq!(all["dataplane"]["last_error"], Value::Null, "{all:#}");

    // A client SYN arrives at the engine in GRE, to e0's MAC from r1's.
    let client_thread = Client::start(&client)?;
    let first = rig.redirected("the engine")?;
    assert_eq!(
        first,
        Redirected {
            dst_mac: e0_mac,
            src_mac: r1_mac,
            outer_src: ROUTER_E,
            outer_dst: ENGINE,
            service: 0,
        }
    );

    // 1. The MAC moves and the engine says so (gratuitous ARP): traffic follows.
    let garp = move_mac_and_time(&engine, &rig.capture, "02:aa:00:00:00:01", || Ok(()))?;
    eprintln!("traffic followed a MAC move announced by gratuitous ARP in {garp:?}");
    assert!(garp < Duration::from_secs(1), "took {garp:?}");

    // 2. The MAC moves silently; the router's neighbour entry is flushed and the
    //    controller has the kernel resolve it again.
    engine.sysctl("net.ipv4.conf.e0.arp_notify", "0")?;
    let flush = move_mac_and_time(&engine, &rig.capture, "02:aa:00:00:00:02", || {
        router.run(
            router
                .command("ip")?
                .args(["-4", "neigh", "flush", "dev", "r1"]),
        )?;
        Ok(())
    })?;
    eprintln!("traffic followed a silent MAC move after a neighbour flush in {flush:?}");
    assert!(flush < Duration::from_secs(1), "took {flush:?}");

    let e = show(&sock, &["engines"])?;
    assert_eq!(e[0]["next_hop"]["mac"], "02:aa:00:00:00:02", "{e:#}");
    let stats = show(&sock, &["stats"])?;
    let hops = &stats["next_hops"];
    assert!(hops["changes"].as_u64().unwrap_or(0) >= 2, "{hops:#}");
    assert!(hops["notifications"].as_u64().unwrap_or(0) >= 1, "{hops:#}");
    assert!(hops["triggers"].as_u64().unwrap_or(0) >= 1, "{hops:#}");
    let m = metrics(&router, METRICS_PORT)?;
    assert_eq!(next_hop_resolved(&m, "10.2.0.2"), Some(1.0), "{m}");
    assert!(
        metric(&m, "wccp_next_hop_changes_total").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    let logs = rig.daemon.stderr()?;
    assert!(logs.contains("next hop resolved"), "{logs}");

    // 3. The engine's link goes down: its next hop is unresolved, with the reason, and
    //    its buckets fail open (nothing more reaches it in GRE).
    client_thread.stop();
    engine.link_down("e0")?;
    let last = rig.wait_next_hop(
        "the next hop to be unresolved once the engine's link is down",
        "unresolved",
    )?;
    let reason = last[0]["next_hop"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("r1"), "{reason}");
    let logs = rig.daemon.stderr()?;
    assert!(logs.contains("next hop unresolved"), "{logs}");

    // 4. The link comes back: the carrier notification brings a fresh resolution (the
    //    kernel flushed the neighbour entry with the carrier) and the engine is reachable
    //    again with its last MAC.
    engine.link_up("e0")?;
    let t0 = Instant::now();
    let last = rig.wait_next_hop(
        "the next hop to be resolved again once the link is back",
        "resolved",
    )?;
    eprintln!(
        "next hop resolved again {:?} after the link came back",
        t0.elapsed()
    );
    assert_eq!(last[0]["next_hop"]["mac"], "02:aa:00:00:00:02", "{last:#}");

    rig.stop_clear(vec![engine_thread])?;
    rig.assert_pins_removed();
    rig.teardown(lab)
}

/// Engines behind a gateway: a GRE engine's next hop is the gateway (its MAC, shown with
/// the gateway's address) and redirected SYNs reach the engine through it; an L2 engine
/// there is refused, with the reason in `show`, the log and the metrics.
///
/// ```text
///  client c0 ── r0 router r1 ── g0 gw g1 ── e0 engines 10.3.0.2 (GRE), 10.3.0.3 (L2)
///                        10.2.0.1  10.2.0.254  10.3.0.1
/// ```
#[test]
fn engines_behind_a_gateway_gre_through_it_l2_refused() -> Result<()> {
    const GW: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);
    const GRE_ENGINE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
    const L2_ENGINE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 3);
    let (lab, client, router) = client_and_router("ctlgw")?;
    let gw = lab.host("gw")?;
    let engines = lab.host("engines")?;
    lab.link(&router, "r1", &gw, "g0")?;
    lab.link(&gw, "g1", &engines, "e0")?;
    router.add_addr("r1", "10.2.0.1/24")?;
    gw.add_addr("g0", "10.2.0.254/24")?;
    gw.add_addr("g1", "10.3.0.1/24")?;
    engines.add_addr("e0", "10.3.0.2/24")?;
    engines.add_addr("e0", "10.3.0.3/24")?;
    router.add_route("10.3.0.0/24", &GW.to_string())?;
    gw.add_route("default", &ROUTER_E.to_string())?;
    engines.add_route("default", "10.3.0.1")?;
    gw.sysctl("net.ipv4.ip_forward", "1")?;
    let g0_mac = gw.mac("g0")?;
    let g1_mac = gw.mac("g1")?;
    let e0_mac = engines.mac("e0")?;
    let mut rig = Rig::start(&lab, &router, &gw, "g0", &engines)?;

    let mut threads = Vec::new();
    for (address, l2) in [(GRE_ENGINE, false), (L2_ENGINE, true)] {
        threads.push(rig.engine(&engines, address, l2)?);
    }
    let find = |list: &Value, a: Ipv4Addr| -> Value {
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["address"] == a.to_string()).cloned())
            .unwrap_or(Value::Null)
    };
    let last = rig.wait_engines(
        "both engines usable, the GRE one resolved through the gateway, buckets assigned",
        |list| {
            let (g, l) = (find(list, GRE_ENGINE), find(list, L2_ENGINE));
            g["state"] == "usable"
                && l["state"] == "usable"
                && g["slots"].as_u64().unwrap_or(0) > 0
                && g["next_hop"]["state"] == "resolved"
                && l["next_hop"]["interface"] == "r1"
        },
    )?;
    let g = find(&last, GRE_ENGINE);
    let hop = &g["next_hop"];
    assert_eq!(hop["gateway"], GW.to_string(), "{hop:#}");
    assert_eq!(hop["mac"], mac_str(&g0_mac), "the gateway's MAC: {hop:#}");
    assert_eq!(hop["interface"], "r1", "{hop:#}");
    assert_eq!(hop["router_address"], ROUTER_E.to_string(), "{hop:#}");
    let l = find(&last, L2_ENGINE);
    let hop = &l["next_hop"];
    assert_eq!(l["forwarding"], "l2", "{l:#}");
    assert_eq!(hop["state"], "unresolved", "{hop:#}");
    assert_eq!(hop["gateway"], GW.to_string(), "{hop:#}");
    let reason = hop["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("on-link") && reason.contains("10.2.0.254"),
        "{reason}"
    );

    // Client SYNs in the GRE engine's buckets reach it through the gateway.
    let client_thread = Client::start(&client)?;
    let got = rig.redirected("the engines")?;
    assert_eq!(
        got,
        Redirected {
            dst_mac: e0_mac,
            src_mac: g1_mac,
            outer_src: ROUTER_E,
            outer_dst: GRE_ENGINE,
            service: 0,
        },
        "forwarded by the gateway"
    );
    client_thread.stop();

    let logs = rig.daemon.stderr()?;
    assert!(
        logs.lines()
            .any(|l| l.contains("next hop unresolved") && l.contains("10.3.0.3")),
        "{logs}"
    );
    let m = metrics(&router, METRICS_PORT)?;
    assert_eq!(next_hop_resolved(&m, "10.3.0.3"), Some(0.0), "{m}");
    assert_eq!(next_hop_resolved(&m, "10.3.0.2"), Some(1.0), "{m}");

    rig.stop_clear(threads)?;
    rig.assert_pins_removed();
    rig.teardown(lab)
}

/// An on-link engine that forwards by L2: its next hop is resolved (no gateway) and the
/// client's SYN arrives unencapsulated, its Ethernet header rewritten to the engine's MAC
/// from the router's engine-side interface.
#[test]
fn on_link_l2_engine_gets_rewritten_frames() -> Result<()> {
    let (lab, client, router, engine) = on_link_lab("ctll2")?;
    let r1_mac = router.mac("r1")?;
    let e0_mac = engine.mac("e0")?;
    let mut rig = Rig::start(&lab, &router, &engine, "e0", &engine)?;
    let engine_thread = rig.engine(&engine, ENGINE, true)?;
    let last = rig.wait_engines(
        "the L2 engine to be usable with a resolved next hop and 256 buckets",
        usable_and_resolved,
    )?;
    assert_eq!(last[0]["forwarding"], "l2", "{last:#}");
    assert_eq!(last[0]["next_hop"]["mac"], mac_str(&e0_mac), "{last:#}");

    let client_thread = Client::start(&client)?;
    // The SYN itself, not encapsulated, between the rewritten MACs.
    let start = Instant::now();
    let mut found = None;
    while found.is_none() && start.elapsed() < Duration::from_secs(5) {
        let Some(f) = rig.capture.recv() else {
            continue;
        };
        let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        if f.len() >= 54
            && f[12..14] == [0x08, 0x00]
            && f[23] == 6
            && ip4(&f[26..30]) == CLIENT
            && ip4(&f[30..34]) == SERVER
            && f[36..38] == 80u16.to_be_bytes()
        {
            found = Some((
                <[u8; 6]>::try_from(&f[0..6])?,
                <[u8; 6]>::try_from(&f[6..12])?,
            ));
        }
    }
    client_thread.stop();
    let (dst, src) = found.with_context(|| {
        format!(
            "no L2-redirected SYN at the engine; {:#}",
            show(&rig.sock, &["stats"]).unwrap_or_default()
        )
    })?;
    assert_eq!(
        (dst, src),
        (e0_mac, r1_mac),
        "rewritten to the engine's MAC"
    );

    rig.stop_clear(vec![engine_thread])?;
    rig.teardown(lab)
}
