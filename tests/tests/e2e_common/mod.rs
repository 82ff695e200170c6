//! Shared by the end-to-end tests (`e2e_*.rs`): the real `redirector-ctl run` (XDP on the
//! client-facing and the engine-facing veth) and real `engine-agent run` with `[dataplane]`
//! on each engine, a transparent proxy (`e2e-tproxy`, this crate's binary) on each engine,
//! a TCP/HTTP server, and clients that pick their source ports.
//!
//! ```text
//!  client c0 ──── r0  router  r2 ──── s0 server 10.9.0.1, 10.9.0.2 (:80 HTTP/echo)
//!  10.1.0.2   10.1.0.1   │    10.9.0.254
//!                    r1 10.2.0.1 (Router ID; GRE source)
//!                        │
//!                  sw: bridge br0 (p0 = router, p1.. = engines)
//!                   │          │
//!           e1 eth0 10.2.0.11  e2 eth0 10.2.0.12 ...   (engine-agent, e2e-tproxy :3129)
//! ```
//!
//! Service: dynamic 90, TCP port 80, hashed on source address and source port (so that
//! client source ports spread flows over the buckets), defined by the engines. T = 500 ms
//! (the agents' fast timers; the router's `here_i_am_ms` too).
//!
//! The engine-facing `r1` is in `exclude`, as the README configures a router: never
//! redirected on, but the XDP program runs there too, to decapsulate returned GRE (a
//! controller fix of this branch; before it, excluded interfaces had no program and
//! returned packets were lost).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use netns_tests::sockets::PacketSocket;
use serde_json::Value;

use netns_tests::daemons::{binary, control_request, tail, Agent, Ctl};
use netns_tests::netns::{wait_until, Host, Lab, NsThread, Process};
use netns_tests::sockets;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The router's engine-facing address: its Router ID and GRE source.
pub const ROUTER_E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
pub const ROUTER_S: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 254);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// A second address of the server host (the rewrite target).
pub const SERVER2: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
pub const HTTP_PORT: u16 = 80;
pub const PROXY_PORT: u16 = 3129;
pub const SERVICE: &str = "dynamic/90";
/// MTU of the router's engine-facing LAN.
pub const LAN_MTU: u32 = 1600;
/// T on both sides, in milliseconds.
pub const T_MS: u64 = 500;

/// Engine `i` (0-based): 10.2.0.11, .12, ...; engine 0 is designated while usable.
pub fn engine_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 11 + i as u8)
}

/// Turns off transmit checksum offload: a veth hands its peer TCP segments with partial
/// checksums, which an XDP program that sends the frame on cannot finish.
pub fn tx_checksum_off(host: &Host, ifname: &str) -> Result<()> {
    let name = ifname.to_string();
    host.in_ns(move || sockets::tx_checksum_off(&name))?
}

/// Turns on GRO: frames an XDP program redirects into a veth arrive at its peer only when
/// the peer runs XDP or has GRO (NAPI) on.
pub fn gro_on(host: &Host, ifname: &str) -> Result<()> {
    let name = ifname.to_string();
    host.in_ns(move || sockets::gro_on(&name))?
}

/// One TCP connection the server accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// The server: listeners on SERVER:80 and SERVER2:80. A connection whose first line is
/// `GET PATH HTTP/1.x` gets one HTTP answer: `/bytes/N/MS` sends N bytes of [`pattern`]
/// spread over MS milliseconds, anything else `hello PEER -> LOCAL`; `POST` with a
/// Content-Length gets `got N sum S`. Any other first line starts an echo session: each
/// line is answered `echo LINE PEER` until the peer closes.
pub struct Server {
    stop: Arc<AtomicBool>,
    pub accepted: Arc<Mutex<Vec<Accepted>>>,
    threads: Vec<NsThread<()>>,
}

/// Byte `i` of the server's `/bytes` bodies.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(i >> 11) % 251) as u8
}

impl Server {
    pub fn start(host: &Host, addrs: &[Ipv4Addr]) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for a in addrs {
            let l = host.in_ns(|| TcpListener::bind((*a, HTTP_PORT)))??;
            l.set_nonblocking(true)?;
            let (stop, accepted) = (stop.clone(), accepted.clone());
            threads.push(host.thread(move || accept_loop(l, stop, accepted))?);
        }
        Ok(Server {
            stop,
            accepted,
            threads,
        })
    }

    /// Connections accepted from `peer`.
    pub fn accepted_from(&self, peer: SocketAddr) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.peer == peer)
            .count()
    }

    /// The peers of every connection accepted so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.peer)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.join()));
        }
    }
}

fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>, accepted: Arc<Mutex<Vec<Accepted>>>) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((c, peer)) => {
                let local = c.local_addr().unwrap_or(peer);
                accepted.lock().unwrap().push(Accepted { local, peer });
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _ = session(c, peer, local, stop);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn session(c: TcpStream, peer: SocketAddr, local: SocketAddr, stop: Arc<AtomicBool>) -> Result<()> {
    c.set_nonblocking(false)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    let mut line = String::new();
    // Lines, with the read timeout only there to notice `stop`.
    let read_line = |r: &mut BufReader<TcpStream>, line: &mut String| -> Result<usize> {
        line.clear();
        loop {
            match r.read_line(line) {
                Ok(n) => return Ok(n),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::SeqCst) {
                        bail!("stopped");
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if read_line(&mut r, &mut line)? == 0 {
        return Ok(());
    }
    let first = line.trim_end().to_string();
    if let Some(rest) = first.strip_prefix("GET ").or(first.strip_prefix("POST ")) {
        let path = rest.split(' ').next().unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            if read_line(&mut r, &mut line)? == 0 || line.trim_end().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        if first.starts_with("POST ") {
            let mut body = vec![0u8; length];
            r.get_mut()
                .set_read_timeout(Some(Duration::from_secs(10)))?;
            r.read_exact(&mut body)?;
            let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
            let text = format!("got {length} sum {sum}\n");
            w.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            )?;
        } else if let Some(spec) = path.strip_prefix("/bytes/") {
            let mut it = spec.split('/');
            let n: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let ms: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            let chunks = (ms / 20).max(1);
            let per = n.div_ceil(chunks);
            let t0 = Instant::now();
            let mut sent = 0u64;
            for k in 0..chunks {
                let end = (sent + per).min(n);
                let buf: Vec<u8> = (sent..end).map(pattern).collect();
                w.write_all(&buf)?;
                sent = end;
                let due = t0 + Duration::from_millis(ms * (k + 1) / chunks);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        } else {
            let text = format!("hello {peer} -> {local}\n");
            w.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            )?;
        }
        let _ = w.shutdown(Shutdown::Write);
        // Drain until the client closes, so no RST cuts the answer short.
        let mut sink = [0u8; 4096];
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match r.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        return Ok(());
    }
    loop {
        w.write_all(format!("echo {} {peer}\n", line.trim_end()).as_bytes())?;
        if read_line(&mut r, &mut line)? == 0 {
            return Ok(());
        }
    }
}

/// A TCP connection from the client, from `src_port` (0: any), made inside `client`.
pub fn connect_from(
    client: &Host,
    src_port: u16,
    to: SocketAddrV4,
    timeout: Duration,
) -> Result<TcpStream> {
    client.in_ns(move || -> Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((CLIENT, src_port)).into())?;
        s.connect_timeout(&SocketAddr::from(to).into(), timeout)
            .with_context(|| format!("connecting from port {src_port} to {to}"))?;
        let t: TcpStream = s.into();
        t.set_nodelay(true)?;
        t.set_read_timeout(Some(timeout))?;
        t.set_write_timeout(Some(timeout))?;
        Ok(t)
    })?
}

/// One HTTP POST of `body` on a fresh connection from `src_port`; whether the server's
/// answer says it got every byte (`got N sum S`), with the answer.
pub fn http_post(
    client: &Host,
    src_port: u16,
    to: SocketAddrV4,
    body: &[u8],
    timeout: Duration,
) -> Result<(bool, String)> {
    let mut s = connect_from(client, src_port, to, timeout)?;
    let mut request = format!(
        "POST /up HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        to.ip(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request)
        .with_context(|| format!("sending {} bytes from port {src_port}", request.len()))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .with_context(|| format!("reading the answer on port {src_port}"))?;
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    Ok((
        answer.ends_with(&format!("got {} sum {sum}\n", body.len())),
        answer,
    ))
}

/// One HTTP GET on a fresh connection from `src_port`; returns the body as text.
pub fn http_get(
    client: &Host,
    src_port: u16,
    to: SocketAddrV4,
    path: &str,
    timeout: Duration,
) -> Result<(String, SocketAddr)> {
    let (body, me) = http_get_raw(client, src_port, to, path, timeout)?;
    Ok((String::from_utf8_lossy(&body).into_owned(), me))
}

/// One HTTP GET on a fresh connection from `src_port`; returns the body's bytes.
pub fn http_get_raw(
    client: &Host,
    src_port: u16,
    to: SocketAddrV4,
    path: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, SocketAddr)> {
    let mut s = connect_from(client, src_port, to, timeout)?;
    let me = s.local_addr()?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            to.ip()
        )
        .as_bytes(),
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .with_context(|| format!("reading the answer to {me}"))?;
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{me}: no HTTP answer: {:?}", String::from_utf8_lossy(&out)))?;
    Ok((out.split_off(at + 4), me))
}

/// One echo round trip on a session.
pub fn echo(s: &mut TcpStream, line: &str) -> Result<String> {
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = s.read(&mut b)?;
        if n == 0 {
            bail!("closed after {:?}", String::from_utf8_lossy(&out));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b[0]);
    }
}

/// Starts an echo session: connects from `src_port` and checks the first round trip.
pub fn echo_session(client: &Host, src_port: u16, timeout: Duration) -> Result<TcpStream> {
    let to = SocketAddrV4::new(SERVER, HTTP_PORT);
    let mut s = connect_from(client, src_port, to, timeout)?;
    let me = s.local_addr()?;
    let got = echo(&mut s, "hello")?;
    ensure!(got.starts_with("echo hello "), "{me}: {got:?}");
    Ok(s)
}

/// The whole lab: hosts, links, addresses, routes, the server.
pub struct World {
    /// Declared first, dropped last: everything else goes before the namespaces.
    pub server: Option<Server>,
    pub client: Host,
    pub router: Host,
    pub server_host: Host,
    pub sw: Host,
    pub engines: Vec<Host>,
    pub lab: Lab,
}

impl World {
    pub fn new(prefix: &str, engines: usize) -> Result<World> {
        let lab = Lab::new(prefix)?;
        let client = lab.host("client")?;
        let router = lab.host("router")?;
        let server_host = lab.host("server")?;
        let mut es = Vec::new();
        for i in 0..engines {
            es.push(lab.host(&format!("e{}", i + 1))?);
        }
        lab.link(&client, "c0", &router, "r0")?;
        lab.link(&router, "r2", &server_host, "s0")?;
        let mut members: Vec<(&Host, &str)> = vec![(&router, "r1")];
        members.extend(es.iter().map(|e| (e, "eth0")));
        let sw = lab.switch("sw", &members)?;
        // Room for GRE's 28 bytes around the client's full-size (1500-byte) packets on the
        // engines' LAN; the client side keeps 1500.
        router.set_mtu("r1", LAN_MTU)?;
        for i in 0..members.len() {
            sw.set_mtu(&format!("p{i}"), LAN_MTU)?;
        }
        for e in &es {
            e.set_mtu("eth0", LAN_MTU)?;
        }
        // p0 faces the router: XDP redirects frames into r1, which reach p0 only with GRO.
        gro_on(&sw, "p0")?;
        // A switch, not a filter: without this the kernel's bridge netfilter (built in
        // here) drops bridged IPv4 frames whose headers do not validate.
        if sw.sysctl_get("net.bridge.bridge-nf-call-iptables").is_ok() {
            sw.sysctl("net.bridge.bridge-nf-call-iptables", "0")?;
        }

        client.add_addr("c0", &format!("{CLIENT}/24"))?;
        client.add_route("default", &ROUTER_C.to_string())?;
        tx_checksum_off(&client, "c0")?;
        router.add_addr("r0", &format!("{ROUTER_C}/24"))?;
        router.add_addr("r1", &format!("{ROUTER_E}/24"))?;
        router.add_addr("r2", &format!("{ROUTER_S}/24"))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // The proxies answer clients from the server's address, out of the engine side.
        for k in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.r1.rp_filter",
        ] {
            router.sysctl(k, "0")?;
        }
        server_host.add_addr("s0", &format!("{SERVER}/24"))?;
        server_host.add_addr("s0", &format!("{SERVER2}/24"))?;
        server_host.add_route("default", &ROUTER_S.to_string())?;
        for (i, e) in es.iter().enumerate() {
            e.add_addr("eth0", &format!("{}/24", engine_ip(i)))?;
            e.add_route("default", &ROUTER_E.to_string())?;
            e.sysctl("net.ipv4.conf.eth0.arp_notify", "1")?;
        }
        let server = Server::start(&server_host, &[SERVER, SERVER2])?;
        Ok(World {
            server: Some(server),
            client,
            router,
            server_host,
            sw,
            engines: es,
            lab,
        })
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Runs `f`; on failure keeps the lab's scratch directory (daemon logs) and says where.
    pub fn run<T>(self, f: impl FnOnce(&World) -> Result<T>) -> Result<T> {
        let r = f(&self);
        if r.is_err() {
            self.lab.keep_scratch();
        }
        r
    }
}

/// A controller's files, so that it can be restarted on the same pin root.
#[derive(Clone, Debug)]
pub struct CtlFiles {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin_root: PathBuf,
}

/// Writes the controller's configuration: service 90 defined by the engines, redirecting
/// in on r0 (clients), r1 (engines) excluded as the README has it (the program still runs
/// there, for packet return), dead-man grace `grace_ms`.
pub fn ctl_files(world: &World, name: &str, grace_ms: u64) -> Result<CtlFiles> {
    ctl_files_with(
        world,
        name,
        grace_ms,
        "redirect_in = [\"r0\"]\nexclude = [\"r1\"]",
    )
}

/// [`ctl_files`] with other `[router]` interface lines (`redirect_in`, `exclude`).
pub fn ctl_files_with(world: &World, name: &str, grace_ms: u64, ifaces: &str) -> Result<CtlFiles> {
    let dir = world.lab.scratch_dir();
    let socket = dir.join(format!("{name}-ctl.sock"));
    let config = dir.join(format!("{name}-redirector.toml"));
    let pin_root =
        Path::new("/sys/fs/bpf/wccp-redirector").join(format!("{}-{name}", world.lab.id()));
    let text = format!(
        "[router]\naddress = \"{ROUTER_E}\"\n{ifaces}\n\
         control_socket = \"{}\"\n\n[timers]\nhere_i_am_ms = {T_MS}\n\n\
         [dataplane]\npin_root = \"{}\"\ngrace_ms = {grace_ms}\n\n\
         [[service]]\nid = 90\ntype = \"dynamic\"\n",
        socket.display(),
        pin_root.display()
    );
    std::fs::write(&config, text)?;
    Ok(CtlFiles {
        name: name.to_string(),
        config,
        socket,
        pin_root,
    })
}

/// Starts `redirector-ctl run` from `files`; returns once its control socket answers.
pub fn spawn_ctl(world: &World, files: &CtlFiles) -> Result<Ctl> {
    let bin = binary("redirector-ctl")?;
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--log-format", "json", "-c"])
        .arg(&files.config)
        .env("RUST_LOG", "info");
    let _ = std::fs::remove_file(&files.socket);
    let mut process = world.router.spawn(&mut cmd)?;
    process.set_grace(Duration::from_secs(5));
    let mut ctl = Ctl {
        process,
        name: files.name.clone(),
        config: files.config.clone(),
        socket: files.socket.clone(),
        pin_root: files.pin_root.clone(),
    };
    let t0 = Instant::now();
    while ctl.status().is_err() {
        if !ctl.process.is_running() || t0.elapsed() > Duration::from_secs(15) {
            bail!(
                "redirector-ctl {} did not come up:\n{}",
                files.name,
                ctl.process.stderr().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(ctl)
}

pub fn start_ctl(world: &World, name: &str, grace_ms: u64) -> Result<Ctl> {
    let files = ctl_files(world, name, grace_ms)?;
    spawn_ctl(world, &files)
}

/// What an agent's configuration adds to the common one.
#[derive(Clone, Debug, Default)]
pub struct AgentExtra {
    /// Keys of `[dataplane]` (`copy_interface = "cp0"`).
    pub dataplane: String,
    /// Tables after everything else (`[[return_rule]]`).
    pub tables: String,
    /// Weight (100 when 0).
    pub weight: u16,
    /// More keys of the `[[service]]` table (`forwarding = "l2"`).
    pub service: String,
}

pub fn agent_config(i: usize, extra: &AgentExtra) -> String {
    let weight = if extra.weight == 0 { 100 } else { extra.weight };
    format!(
        "address = \"{}\"\nrouters = [\"{ROUTER_E}\"]\nproxy_port = {PROXY_PORT}\n\n\
         [timers]\nfast_transmit_ms = {T_MS}\n\n\
         [[service]]\nid = 90\ntype = \"dynamic\"\nprotocol = \"tcp\"\nports = [{HTTP_PORT}]\n\
         flags = [\"src_ip_hash\", \"src_port_hash\"]\npriority = 10\nweight = {weight}\n{}\n\n\
         [dataplane]\ninterface = \"eth0\"\nproxy_check_ms = 100\n{}\n\n{}",
        engine_ip(i),
        extra.service,
        extra.dataplane,
        extra.tables
    )
}

/// Starts engine `i`'s agent (`e1`, `e2`, ...).
pub fn start_agent(world: &World, i: usize, extra: &AgentExtra) -> Result<Agent> {
    Agent::start(
        &world.engines[i],
        &format!("e{}", i + 1),
        &agent_config(i, extra),
    )
}

/// A transparent proxy on one engine.
pub struct Proxy {
    pub process: Process,
}

impl Proxy {
    pub fn start(world: &World, i: usize) -> Result<Proxy> {
        let mut process = world.engines[i]
            .spawn(Command::new(env!("CARGO_BIN_EXE_e2e-tproxy")).arg(PROXY_PORT.to_string()))?;
        process.wait_for_output("listening", Duration::from_secs(10))?;
        Ok(Proxy { process })
    }

    /// Its log.
    pub fn log(&self) -> String {
        self.process.stdout().unwrap_or_default()
    }

    /// Client addresses of every connection it accepted.
    pub fn accepted(&self) -> Vec<SocketAddr> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("accept "))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .filter(|a: &SocketAddr| a.ip() == CLIENT)
            .collect()
    }

    /// Whether it accepted a connection from `peer`.
    pub fn saw(&self, peer: SocketAddr) -> bool {
        self.accepted().contains(&peer)
    }
}

/// An engine: agent, proxy.
pub struct Engine {
    /// Dropped first (SHUTDOWN while the proxy still runs).
    pub agent: Option<Agent>,
    pub proxy: Option<Proxy>,
}

impl Engine {
    /// Proxy first, then the agent (which joins once the proxy answers).
    pub fn start(world: &World, i: usize, extra: &AgentExtra) -> Result<Engine> {
        let proxy = Proxy::start(world, i)?;
        let agent = start_agent(world, i, extra)?;
        Ok(Engine {
            agent: Some(agent),
            proxy: Some(proxy),
        })
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("proxy running")
    }

    /// `engine-agent show --json -s SOCKET`, run as an operator would.
    pub fn show_cli(&self) -> Result<Value> {
        let out = Command::new(binary("engine-agent")?)
            .args(["show", "--json", "-s"])
            .arg(&self.agent().socket)
            .output()?;
        ensure!(
            out.status.success(),
            "engine-agent show --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("engine-agent show --json is not JSON")
    }

    /// The agent's data-plane counters (`show --json` `dataplane.counters`).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let st = self.agent().status()?;
        let c = st["dataplane"]["counters"]
            .as_object()
            .ok_or_else(|| anyhow!("no dataplane counters in {st}"))?;
        Ok(c.iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect())
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters()
            .ok()
            .and_then(|c| c.get(name).copied())
            .unwrap_or(0)
    }
}

/// Service 90 as `redirector-ctl show --json -s SOCKET` prints it.
pub fn shown_service(ctl: &Ctl) -> Result<Value> {
    let doc = ctl.show_cli(&[])?;
    doc["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["service"] == SERVICE).cloned())
        .ok_or_else(|| anyhow!("no {SERVICE} in show --json: {doc:#}"))
}

/// Slots per engine in a service of the router's `show`.
pub fn slots(service: &Value) -> BTreeMap<String, u64> {
    service["assignment"]["slots"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every engine with slots is usable and has a resolved next hop.
fn engines_ready(service: &Value) -> bool {
    let held = slots(service);
    service["engines"].as_array().is_some_and(|es| {
        held.keys().all(|a| {
            es.iter().any(|e| {
                e["address"] == a.as_str()
                    && e["state"] == "usable"
                    && e["next_hop"]["state"] == "resolved"
            })
        })
    })
}

/// Waits until the router's service 90 holds exactly `want` (engine → slots), every
/// holder usable with a resolved next hop; returns the service and the time it took.
pub fn wait_slots(
    ctl: &Ctl,
    want: &[(Ipv4Addr, u64)],
    timeout: Duration,
) -> Result<(Value, Duration)> {
    let want: BTreeMap<String, u64> = want.iter().map(|(a, n)| (a.to_string(), *n)).collect();
    let t0 = Instant::now();
    let s = ctl.wait_service(SERVICE, &format!("slots {want:?}"), timeout, |s| {
        s["state"] == "active" && slots(s) == want && engines_ready(s)
    })?;
    Ok((s, t0.elapsed()))
}

/// Waits until the engines hold all 256 buckets between them in any split (two engines of
/// equal weight: 128 each).
pub fn wait_split(ctl: &Ctl, engines: &[Ipv4Addr], timeout: Duration) -> Result<(Value, Duration)> {
    let n = engines.len() as u64;
    let want: Vec<(Ipv4Addr, u64)> = engines.iter().map(|e| (*e, 256 / n)).collect();
    wait_slots(ctl, &want, timeout)
}

/// The service flags of `show`'s definition, as wccp::assign's bits.
pub fn flag_bits(service: &Value) -> u32 {
    use wccp::assign::flags::*;
    let mut bits = 0;
    for f in service["definition"]["flags"]
        .as_array()
        .into_iter()
        .flatten()
    {
        bits |= match f.as_str().unwrap_or("") {
            "src_ip_hash" => SRC_IP_HASH,
            "dst_ip_hash" => DST_IP_HASH,
            "src_port_hash" => SRC_PORT_HASH,
            "dst_port_hash" => DST_PORT_HASH,
            "ports_defined" => PORTS_DEFINED,
            "ports_source" => PORTS_SOURCE,
            "src_ip_alt_hash" => SRC_IP_ALT_HASH,
            "dst_ip_alt_hash" => DST_IP_ALT_HASH,
            "src_port_alt_hash" => SRC_PORT_ALT_HASH,
            "dst_port_alt_hash" => DST_PORT_ALT_HASH,
            _ => 0,
        };
    }
    bits
}

/// Bucket owners of `show`'s hash assignment.
pub fn owners(service: &Value) -> Result<Vec<Option<Ipv4Addr>>> {
    let b = service["assignment"]["buckets"]
        .as_array()
        .ok_or_else(|| anyhow!("no buckets in {service}"))?;
    ensure!(b.len() == 256, "{} buckets", b.len());
    Ok(b.iter()
        .map(|o| o.as_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// The engine the router's assignment names for a client flow from `src_port` to the
/// server's port 80 (no alternate hashing is configured).
pub fn owner_of(service: &Value, src_port: u16) -> Result<Option<Ipv4Addr>> {
    let bucket = wccp::assign::bucket_of(
        flag_bits(service),
        CLIENT,
        SERVER,
        src_port,
        HTTP_PORT,
        false,
    );
    Ok(owners(service)?[usize::from(bucket)])
}

/// Source ports from `from` whose flows the assignment gives to `engine`.
pub fn ports_for(service: &Value, engine: Ipv4Addr, from: u16, n: usize) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for p in from..u16::MAX {
        if owner_of(service, p)? == Some(engine) {
            out.push(p);
            if out.len() == n {
                return Ok(out);
            }
        }
    }
    bail!("only {} ports for {engine}", out.len())
}

/// A small deterministic generator (xorshift), for "random" source ports.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Counters of the router's data plane by reason, read from the pinned `stats` map (the
/// per-reason verdicts are not in `show`).
pub fn router_reasons(pin_root: &Path) -> Result<BTreeMap<String, u64>> {
    use redirector_ebpf::model::Reason;
    let mut out = BTreeMap::new();
    for r in Reason::ALL {
        let n = router_counter(pin_root, r as usize)?;
        if n != 0 {
            out.insert(format!("{r:?}"), n);
        }
    }
    Ok(out)
}

/// Packets counted at `index` of the router's pinned stats map, summed over CPUs.
pub fn router_counter(pin_root: &Path, index: usize) -> Result<u64> {
    use redirector_ebpf::layout::StatsBlock;
    let path = pin_root.join("maps").join("stats");
    let data = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    let map = aya::maps::Map::from_map_data(data)?;
    let stats: aya::maps::PerCpuArray<aya::maps::MapData, StatsBlock> =
        aya::maps::PerCpuArray::try_from(map)?;
    Ok(stats.get(&0, 0)?.iter().map(|b| b.c[index].packets).sum())
}

pub fn reason(map: &BTreeMap<String, u64>, name: &str) -> u64 {
    map.get(name).copied().unwrap_or(0)
}

/// `Duration` in milliseconds, for printing.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Logs of every daemon, for failure messages.
pub fn logs(ctl: Option<&Ctl>, engines: &[&Engine]) -> String {
    let mut s = String::new();
    if let Some(c) = ctl {
        s.push_str(&format!("--- router\n{}\n", tail(&c.log(), 40)));
    }
    for (i, e) in engines.iter().enumerate() {
        if let Some(a) = &e.agent {
            s.push_str(&format!(
                "--- agent {}\n{}\n{:#}\n",
                i + 1,
                tail(&a.log(), 25),
                a.status()
                    .map(|v| v["dataplane"].clone())
                    .unwrap_or_default()
            ));
        }
        if let Some(p) = &e.proxy {
            s.push_str(&format!("--- proxy {}\n{}\n", i + 1, tail(&p.log(), 10)));
        }
    }
    s
}

/// `redirector-ctl show` as JSON over the control socket, tolerating a dead controller.
pub fn try_show(socket: &Path) -> Option<Value> {
    control_request(socket, &serde_json::json!({"command": "show"}))
        .ok()
        .filter(|v| v["ok"] == true)
        .map(|v| v["result"].clone())
}

/// Waits for `f` to hold; returns the time it took.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let t0 = Instant::now();
    wait_until(what, timeout, f)?;
    Ok(t0.elapsed())
}

/// A raw packet socket on one interface of a lab host (see `netns_tests::sockets`).
pub struct RawSocket(PacketSocket);

impl RawSocket {
    pub fn open(host: &Host, ifname: &str) -> Result<RawSocket> {
        let ifindex = host.ifindex(ifname)?;
        let sock = host.in_ns(move || PacketSocket::open(ifindex, Duration::from_millis(50)))??;
        // A big receive buffer: copies of a whole upload arrive in a burst.
        sock.set_receive_buffer(8 << 20)?;
        Ok(RawSocket(sock))
    }

    /// Sends one frame as is.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        self.0.send(frame)
    }

    /// The next frame received (an empty one for a frame we sent), or None after 50 ms.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.0
            .recv()
            .map(|r| if r.outgoing { Vec::new() } else { r.bytes })
    }
}

pub use netns_tests::checksum::internet as checksum;

/// An IPv4 header (20 bytes, checksum filled) for `payload_len` bytes of `proto`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let total = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// A TCP segment (20 bytes, checksum filled) with `flags` and `payload`.
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    let c = checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An inner client SYN to the server's port 80, as an IPv4 packet.
pub fn client_syn(sport: u16) -> Vec<u8> {
    let t = tcp(CLIENT, SERVER, sport, HTTP_PORT, 0x02, &[]);
    let mut p = ipv4(CLIENT, SERVER, 6, t.len());
    p.extend_from_slice(&t);
    p
}

/// A WCCP GRE frame from `src` to `dst` carrying `inner` (GRE 0x883E + redirect header
/// `redirect`).
pub fn gre_frame(
    mac_dst: [u8; 6],
    mac_src: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    redirect: [u8; 4],
    inner: &[u8],
) -> Vec<u8> {
    let mut f = eth(mac_dst, mac_src, 0x0800);
    f.extend_from_slice(&ipv4(src, dst, 47, 8 + inner.len()));
    f.extend_from_slice(&[0, 0, 0x88, 0x3e]);
    f.extend_from_slice(&redirect);
    f.extend_from_slice(inner);
    f
}

/// Reassembles the client-to-server TCP payload of flow (`sport` → server:80) from WCCP GRE
/// frames (as the engine received them and copied them): by sequence number from the SYN.
pub fn reassemble(frames: &[Vec<u8>], sport: u16) -> Option<Vec<u8>> {
    let mut isn = None;
    let mut segs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for f in frames {
        if f.len() < 14 + 20 + 8 + 20 + 20 || f[12..14] != [0x08, 0x00] || f[23] != 47 {
            continue;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let Some(inner) = f.get(14 + ihl + 8..) else {
            continue;
        };
        if inner.len() < 40 || inner[9] != 6 {
            continue;
        }
        let iihl = usize::from(inner[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([inner[2], inner[3]])).min(inner.len());
        let Some(t) = inner.get(iihl..total) else {
            continue;
        };
        if t.len() < 20 || u16::from_be_bytes([t[0], t[1]]) != sport {
            continue;
        }
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let off = usize::from(t[12] >> 4) * 4;
        if t[13] & 0x02 != 0 {
            isn = Some(seq);
        }
        let data = t.get(off..).unwrap_or(&[]);
        if !data.is_empty() {
            segs.insert(seq, data.to_vec());
        }
    }
    let isn = isn?;
    let mut out: Vec<u8> = Vec::new();
    for (seq, data) in segs {
        let at = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
        if at > out.len() {
            return None;
        }
        let end = at + data.len();
        if end > out.len() {
            out.extend_from_slice(&data[out.len() - at..]);
        }
    }
    Some(out)
}
