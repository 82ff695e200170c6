//! `redirector-ctl run`: the driver around `wccp::router`.
//!
//! ```text
//!  UDP 2048 (unicast + multicast sockets) ──► recv tasks ──┐
//!  control socket (Unix, 0600) ──► connection tasks ───────┤ mpsc
//!  metrics HTTP ──► connection tasks ──────────────────────┤
//!  signals (HUP, TERM, INT) ───────────────────────────────┘
//!                                                          ▼
//!                  one loop owns the Routers and the DataPlane:
//!                  handle_message / handle_timeout → actions → socket, data plane, logs
//! ```
//!
//! Every service group runs in its own `wccp::router::Router`, so that a reload replaces
//! only the groups whose settings changed: the others keep their view and their table.
//! The protocol clock is milliseconds since the daemon started, on tokio's monotonic clock.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};
use wccp::proto::{Counters, ServiceId};
use wccp::router::{Action, Event, Router};
use wccp::time::Instant;
use wccp::wire::Message;

use crate::config::{Config, Service};
use crate::control::{Format, Request, Response};
use crate::dataplane::{DataPlane, PlaneCounters};
use crate::nexthop::{mac_string, NextHop, Resolver, Update};
use crate::status::{DataplaneStatus, Interface, Stats, Status};

/// What the other tasks ask of the main loop.
enum Input {
    Datagram(Ipv4Addr, Vec<u8>),
    Control(Request, oneshot::Sender<Response>),
    Metrics(oneshot::Sender<String>),
    RecvError(String),
}

/// One service group and the state machine that runs it.
struct Group {
    service: Service,
    router: Router,
}

/// Everything the main loop owns.
struct Daemon {
    config_path: PathBuf,
    config: Config,
    groups: Vec<Group>,
    plane: Box<dyn DataPlane>,
    origin: tokio::time::Instant,
    /// Counters of groups replaced by a reload, so totals never go backwards.
    retired: Counters,
    /// Errors and events counted by the driver itself.
    errors: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
    plane_error: Option<String>,
    socket: Arc<UdpSocket>,
    seed: u64,
    /// Follows the engines' next hops (netlink).
    resolver: Resolver,
    /// The engines' next hops, as last resolved.
    next_hops: BTreeMap<Ipv4Addr, NextHop>,
    /// Actions produced outside the loop's own calls (a reload's reconfiguration), applied
    /// by the loop next.
    pending: Vec<(ServiceId, Action)>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    let e = map.entry(key.to_string()).or_insert(0);
    *e = e.saturating_add(1);
}

/// Why the loop ended.
enum Exit {
    /// SIGTERM/SIGINT/`stop`: leave the data plane running under its grace.
    Leave,
    /// `stop --clear`: fail open now.
    Clear,
}

/// A UDP socket bound to `addr` with SO_REUSEADDR, so that a restarted controller (or a
/// second one in a test) can bind while the old socket lingers.
fn udp_socket(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    UdpSocket::from_std(s.into())
}

/// Runs the controller until stopped. Errors here are start-up failures (bind, data
/// plane); once running, failures are logged and counted, never fatal.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    plane: Box<dyn DataPlane>,
) -> Result<(), String> {
    let bind = SocketAddrV4::new(config.address, config.port);
    let socket = udp_socket(bind).map_err(|e| format!("cannot bind UDP {bind}: {e}"))?;
    // Group I-See-Yous leave by the configured address's interface, not by the route.
    socket
        .set_multicast_loop_v4(false)
        .and_then(|()| socket2::SockRef::from(&socket).set_multicast_if_v4(&config.address))
        .map_err(|e| format!("UDP {bind}: {e}"))?;
    let socket = Arc::new(socket);
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    spawn_receiver(socket.clone(), tx.clone());
    // A socket per multicast group: a socket bound to the unicast address never sees
    // datagrams sent to a group.
    let groups: BTreeSet<Ipv4Addr> = config
        .services
        .iter()
        .filter_map(|s| s.router.multicast)
        .collect();
    for g in &groups {
        let s = udp_socket(SocketAddrV4::new(*g, config.port))
            .map_err(|e| format!("cannot bind UDP {g}:{}: {e}", config.port))?;
        s.join_multicast_v4(*g, config.address)
            .map_err(|e| format!("cannot join {g} on {}: {e}", config.address))?;
        info!(group = %g, "joined multicast group");
        spawn_receiver(Arc::new(s), tx.clone());
    }
    let listener = bind_control(&config.control_socket)?;
    spawn_control(listener, tx.clone());
    if let Some(addr) = config.metrics {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind metrics on {addr}: {e}"))?;
        info!(%addr, "metrics on http://{addr}/metrics");
        spawn_metrics(l, tx.clone());
    }
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let seed = u64::from(std::process::id()) ^ 0x5eed_cafe;
    let (resolver, mut hop_rx) = Resolver::start(config.address);
    let mut d = Daemon {
        groups: config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| Group {
                router: Router::new(config.router_config(s, seed ^ i as u64)),
                service: s.clone(),
            })
            .collect(),
        config_path,
        config,
        plane,
        origin: tokio::time::Instant::now(),
        retired: Counters::default(),
        errors: BTreeMap::new(),
        events: BTreeMap::new(),
        plane_error: None,
        socket,
        seed,
        resolver,
        next_hops: BTreeMap::new(),
        pending: Vec::new(),
    };
    d.push_lists();
    // Interfaces a previous run attached (pinned links adopted by the data plane) stay as
    // they are: attaching them again is no error, and no gap.
    let adopted: Vec<String> = d.plane.interfaces().into_iter().map(|(i, _)| i).collect();
    for iface in &adopted {
        info!(iface, "attachment adopted from a previous run");
    }
    for iface in d.config.exclude.clone() {
        if let Err(e) = d.plane.exclude(&iface) {
            d.plane_failed(&format!("excluding {iface}"), e);
        }
        if adopted.contains(&iface) {
            continue;
        }
        // Packet return: the engines' GRE comes back on the engine-facing side, which is
        // the side operators exclude. The program runs there too, decapsulates what the
        // engines return, and passes everything else (the interface is never redirected
        // on). Without it, returned packets reach a stack without GRE and are lost.
        match d.plane.attach(&iface) {
            Ok(mode) => info!(iface, mode, "attached for packet return only (excluded)"),
            Err(e) => d.plane_failed(&format!("attaching {iface} for packet return"), e),
        }
    }
    for iface in d.config.redirect_in.clone() {
        if adopted.contains(&iface) {
            continue;
        }
        // A failure is logged and shown in `show`; the other interfaces still attach.
        let _ = d.attach(&iface);
    }
    let adopted_out = d.plane.interfaces_out();
    for iface in d.config.redirect_out.clone() {
        if adopted_out.contains(&iface) {
            info!(iface, "egress attachment adopted from a previous run");
            continue;
        }
        d.attach_out(&iface);
    }
    d.heartbeat();
    info!(
        address = %d.config.address,
        port = d.config.port,
        services = d.groups.len(),
        dataplane = d.plane.kind(),
        control = %d.config.control_socket.display(),
        "redirector-ctl running"
    );
    let mut beat = tokio::time::interval(d.config.dataplane.grace / 4);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A data plane adopted from a previous run keeps its tables until this run programs
    // or clears them. If a group has no assignment by the time its flush timer would have
    // fired, whatever an earlier run left for it is removed (fail open), so a controller
    // whose engines are gone does not keep stale redirection alive with its heartbeat.
    let mut sweep_at = d
        .config
        .services
        .iter()
        .map(|s| {
            wccp::time::tenths(
                s.router.timers.here_i_am,
                s.router.timers.flush_after_tenths,
            )
        })
        .max()
        .map(|t| d.origin + t);
    let exit = loop {
        let deadline = d.next_deadline();
        tokio::select! {
            input = rx.recv() => match input {
                Some(Input::Datagram(from, bytes)) => {
                    let now = d.now();
                    let actions = d.dispatch(from, &bytes, now);
                    d.apply(actions).await;
                    d.want_next_hops();
                }
                Some(Input::RecvError(e)) => {
                    bump(&mut d.errors, "socket_recv");
                    warn!(error = %e, "UDP receive failed");
                }
                Some(Input::Control(req, reply)) => {
                    let (resp, exit) = d.control(req);
                    let pending = std::mem::take(&mut d.pending);
                    d.apply(pending).await;
                    d.want_next_hops();
                    let _ = reply.send(resp);
                    if let Some(exit) = exit {
                        break exit;
                    }
                }
                Some(Input::Metrics(reply)) => {
                    let _ = reply.send(crate::metrics::render(&d.status()));
                }
                None => break Exit::Leave,
            },
            _ = sleep_until(deadline) => {
                let now = d.now();
                let mut actions = Vec::new();
                for g in &mut d.groups {
                    if g.router.next_timeout().is_some_and(|t| t <= now) {
                        actions.extend(g.router.handle_timeout(now).into_iter().map(|a| (g.service.router.id, a)));
                    }
                }
                d.apply(actions).await;
                d.want_next_hops();
            }
            Some(update) = hop_rx.recv() => d.next_hops_changed(update),
            _ = sleep_until(sweep_at) => {
                sweep_at = None;
                d.sweep();
            }
            _ = beat.tick() => d.heartbeat(),
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = d.reload();
                let pending = std::mem::take(&mut d.pending);
                d.apply(pending).await;
                d.want_next_hops();
            }
            _ = term.recv() => {
                info!("SIGTERM: stopping; the data plane keeps redirecting until its grace runs out");
                break Exit::Leave;
            }
            _ = int.recv() => {
                info!("SIGINT: stopping; the data plane keeps redirecting until its grace runs out");
                break Exit::Leave;
            }
        }
    };
    if let Exit::Clear = exit {
        match d.plane.clear_all() {
            Ok(()) => info!("data plane cleared: redirection removed (fail open)"),
            Err(e) => error!(error = %e, "clearing the data plane failed"),
        }
    }
    let _ = std::fs::remove_file(&d.config.control_socket);
    // Let the connection that asked for the stop write its answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    info!("redirector-ctl stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn spawn_receiver(socket: Arc<UdpSocket>, tx: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let input = match socket.recv_from(&mut buf).await {
                Ok((n, SocketAddr::V4(from))) => {
                    Input::Datagram(*from.ip(), buf.get(..n).unwrap_or(&[]).to_vec())
                }
                Ok((_, SocketAddr::V6(_))) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; not fatal.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Input::RecvError(e.to_string())
                }
            };
            if tx.send(input).await.is_err() {
                return;
            }
        }
    });
}

/// Binds the control socket: its directory is created root-only, a stale socket from a
/// crashed run is replaced, a live one (another controller) is an error.
fn bind_control(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use: another redirector-ctl is running with this control socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

fn spawn_control(listener: UnixListener, tx: mpsc::Sender<Input>) {
    // SAFETY-free: geteuid has no preconditions; read through /proc to avoid libc.
    let me = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let allowed = stream
                .peer_cred()
                .map(|c| c.uid() == 0 || Some(c.uid()) == me)
                .unwrap_or(false);
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let resp = if !allowed {
                        Response::error("permission denied: the control socket is for root")
                    } else {
                        match serde_json::from_str::<Request>(&line) {
                            Err(e) => Response::error(format!("bad request: {e}")),
                            Ok(req) => {
                                let (otx, orx) = oneshot::channel();
                                if tx.send(Input::Control(req, otx)).await.is_err() {
                                    return;
                                }
                                orx.await.unwrap_or_else(|_| Response::error("stopping"))
                            }
                        }
                    };
                    let mut out = serde_json::to_string(&resp)
                        .unwrap_or_else(|_| r#"{"ok":false,"error":"encoding"}"#.into());
                    out.push('\n');
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A minimal HTTP/1.x responder: `GET /metrics` gets the Prometheus text, anything else
/// 404. One request per connection.
fn spawn_metrics(listener: TcpListener, tx: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) =
                    if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
                        let (otx, orx) = oneshot::channel();
                        if tx.send(Input::Metrics(otx)).await.is_err() {
                            return;
                        }
                        ("200 OK", orx.await.unwrap_or_default())
                    } else {
                        ("404 Not Found", "not found\n".to_string())
                    };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
}

impl Daemon {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.groups
            .iter()
            .filter_map(|g| g.router.next_timeout())
            .min()
            .map(|t| self.origin + Duration::from_millis(t.as_millis()))
    }

    /// Hands a datagram to the group its Service Info names; one nobody runs goes to the
    /// first group, whose router counts and logs the drop.
    fn dispatch(&mut self, from: Ipv4Addr, bytes: &[u8], now: Instant) -> Vec<(ServiceId, Action)> {
        let target = Message::parse(bytes)
            .ok()
            .and_then(|m| m.service().map(ServiceId::of))
            .and_then(|id| self.groups.iter().position(|g| g.service.router.id == id))
            .unwrap_or(0);
        let Some(g) = self.groups.get_mut(target) else {
            return Vec::new();
        };
        let id = g.service.router.id;
        g.router
            .handle_message(from, bytes, now)
            .into_iter()
            .map(|a| (id, a))
            .collect()
    }

    async fn apply(&mut self, actions: Vec<(ServiceId, Action)>) {
        for (id, action) in actions {
            match action {
                Action::Send(t) => {
                    let to = SocketAddrV4::new(t.to, self.config.port);
                    if let Err(e) = self.socket.send_to(&t.bytes, to).await {
                        bump(&mut self.errors, "socket_send");
                        warn!(%to, error = %e, "sending failed");
                    }
                }
                Action::Program { service, table } => {
                    let definition = self
                        .groups
                        .iter()
                        .find(|g| g.service.router.id == service)
                        .and_then(|g| {
                            g.router
                                .state()
                                .services
                                .into_iter()
                                .find(|s| s.service == service)
                                .and_then(|s| s.definition)
                        });
                    let slots: BTreeMap<Ipv4Addr, usize> = table.assignment.counts();
                    match self.plane.program(service, definition.as_ref(), &table) {
                        Ok(()) => info!(%service, ?slots, "data plane programmed"),
                        Err(e) => self.plane_failed(&format!("programming {service}"), e),
                    }
                }
                Action::Clear { service } => match self.plane.clear(service) {
                    Ok(()) => info!(%service, "data plane cleared for service (fail open)"),
                    Err(e) => self.plane_failed(&format!("clearing {service}"), e),
                },
                Action::Event(ev) => self.log_event(id, &ev),
            }
        }
    }

    /// Every engine any group knows, with whether it forwards with L2.
    fn engine_methods(&self) -> BTreeMap<Ipv4Addr, bool> {
        let mut out = BTreeMap::new();
        for g in &self.groups {
            for s in g.router.state().services {
                for e in s.engines {
                    let l2 = e.forwarding.contains(wccp::wire::ForwardingMethods::L2);
                    out.entry(e.address).or_insert(l2);
                }
            }
        }
        out
    }

    /// Hands every group's redirect and skip lists to the data plane (it reprograms only
    /// what changed): at start, and after a reload.
    fn push_lists(&mut self) {
        let lists: Vec<_> = self
            .groups
            .iter()
            .map(|g| {
                (
                    g.service.router.id,
                    g.service.redirect.clone(),
                    g.service.skip.clone(),
                )
            })
            .collect();
        for (id, redirect, skip) in lists {
            if let Err(e) = self.plane.set_lists(id, &redirect, &skip) {
                self.plane_failed(&format!("writing the redirect lists of {id}"), e);
            }
        }
    }

    /// Tells the resolver which engines to follow: every engine of every group, usable or
    /// not yet, so that a next hop is ready by the time an assignment names the engine.
    fn want_next_hops(&mut self) {
        self.resolver
            .want(self.engine_methods().into_keys().collect());
    }

    /// New next hops from the resolver: logged where an engine's changed, handed to the
    /// data plane (which reprograms at once if its tables change).
    fn next_hops_changed(&mut self, update: Update) {
        let methods = self.engine_methods();
        for (engine, hop) in &update.hops {
            let l2 = methods.get(engine).copied().unwrap_or(false);
            let old = self.next_hops.get(engine);
            if old == Some(hop) {
                continue;
            }
            let was = old.map(|o| o.path(l2));
            match hop.path(l2) {
                Ok(p) => {
                    if was.as_ref().and_then(|w| w.as_ref().ok()) != Some(&p) {
                        info!(
                            %engine,
                            iface = hop.iface.as_deref().unwrap_or("-"),
                            mac = %mac_string(&p.dst_mac),
                            gateway = ?hop.gateway,
                            router_addr = %p.router_addr,
                            mtu = p.mtu,
                            "next hop resolved"
                        );
                    }
                }
                Err(reason) => {
                    if was.as_ref().and_then(|w| w.as_ref().err()) != Some(&reason) {
                        warn!(%engine, %reason, forwarding = if l2 { "l2" } else { "gre" },
                            "next hop unresolved: the engine is not usable in the data plane (its buckets fail open)");
                    }
                }
            }
        }
        self.next_hops = update.hops;
        let hops = self.next_hops.clone();
        if let Err(e) = self.plane.set_next_hops(&hops) {
            self.plane_failed("reprogramming for new next hops", e);
        }
    }

    fn plane_failed(&mut self, what: &str, e: String) {
        bump(&mut self.errors, "dataplane");
        error!(error = %e, "data plane: {what} failed");
        self.plane_error = Some(format!("{what}: {e}"));
    }

    fn log_event(&mut self, service: ServiceId, ev: &Event) {
        let kind = ev.kind();
        bump(&mut self.events, kind);
        let detail = serde_json::to_string(ev).unwrap_or_default();
        match ev {
            Event::Dropped { from, reason } => {
                warn!(kind, %service, %from, reason = reason.kind(), event = %detail, "message dropped")
            }
            Event::EmitFailed { .. } => error!(kind, %service, event = %detail, "wccp event"),
            Event::EngineRemoved { .. } | Event::Flushed { .. } | Event::RemovalQuery { .. } => {
                warn!(kind, %service, event = %detail, "wccp event")
            }
            _ => info!(kind, %service, event = %detail, "wccp event"),
        }
    }

    /// Clears every group that has programmed nothing since start (see `run`).
    fn sweep(&mut self) {
        let idle: Vec<ServiceId> = self
            .groups
            .iter()
            .filter(|g| g.router.state().services.iter().all(|s| s.table.is_none()))
            .map(|g| g.service.router.id)
            .collect();
        for id in idle {
            match self.plane.clear(id) {
                Ok(()) => {
                    info!(service = %id, "no assignment since start: any table left by an earlier run is cleared (fail open)")
                }
                Err(e) => self.plane_failed(&format!("clearing {id}"), e),
            }
        }
    }

    fn heartbeat(&mut self) {
        if let Err(e) = self.plane.heartbeat(self.config.dataplane.grace) {
            self.plane_failed("heartbeat", e);
        }
    }

    fn attach(&mut self, iface: &str) -> Result<String, String> {
        if self.config.exclude.iter().any(|i| i == iface) {
            return Err(format!("{iface} is excluded in the configuration"));
        }
        match self.plane.attach(iface) {
            Ok(mode) => {
                info!(iface, mode, "redirecting inbound traffic");
                Ok(mode)
            }
            Err(e) => {
                self.plane_failed(&format!("attaching {iface}"), e.clone());
                Err(e)
            }
        }
    }

    /// Redirect out of `iface`; a failure is logged and shown, never fatal.
    fn attach_out(&mut self, iface: &str) -> bool {
        match self.plane.attach_out(iface) {
            Ok(()) => {
                info!(iface, "redirecting outbound traffic (tc egress)");
                true
            }
            Err(e) => {
                self.plane_failed(&format!("attaching {iface} at egress"), e);
                false
            }
        }
    }

    fn detach(&mut self, iface: &str) -> Result<(), String> {
        match self.plane.detach(iface) {
            Ok(()) => {
                info!(iface, "no longer redirecting");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn plane_counters(&mut self) -> PlaneCounters {
        match self.plane.counters() {
            Ok(c) => c,
            Err(e) => {
                self.plane_failed("reading counters", e);
                PlaneCounters::default()
            }
        }
    }

    fn status(&mut self) -> Status {
        let now = self.now();
        let plane = self.plane_counters();
        let mut stats = Stats::default();
        stats.add_router_counters(&self.retired);
        let mut services = Vec::new();
        for g in &self.groups {
            let st = g.router.state();
            stats.add_router_counters(&st.counters);
            for s in &st.services {
                services.push(crate::status::service_status(
                    &g.service,
                    s,
                    now.as_millis(),
                    &plane,
                    &self.next_hops,
                ));
            }
        }
        for (k, v) in &self.errors {
            stats.errors.insert(k.clone(), *v);
        }
        stats.events = self.events.clone();
        stats.dataplane = plane;
        stats.next_hops = self.resolver.counters();
        Status {
            router_id: self.config.address,
            port: self.config.port,
            uptime_ms: now.as_millis(),
            dataplane: DataplaneStatus {
                kind: self.plane.kind().to_string(),
                interfaces: self
                    .plane
                    .interfaces()
                    .into_iter()
                    .map(|(name, mode)| Interface { name, mode })
                    .collect(),
                excluded: self.config.exclude.clone(),
                redirect_out: self.plane.interfaces_out(),
                last_error: self.plane_error.clone(),
            },
            services,
            stats,
        }
    }

    fn control(&mut self, req: Request) -> (Response, Option<Exit>) {
        match req {
            Request::Show {
                section,
                service,
                format,
            } => {
                let status = self.status();
                let r = match format {
                    Format::Json => status
                        .section_json(section, service.as_deref())
                        .map(Response::json),
                    Format::Text => status
                        .section_text(section, service.as_deref())
                        .map(Response::text),
                };
                (r.unwrap_or_else(Response::error), None)
            }
            Request::Stop { clear } => {
                info!(clear, "stop requested over the control socket");
                (
                    Response::text(if clear {
                        "stopping; redirection removed".into()
                    } else {
                        "stopping; the data plane keeps redirecting until its grace runs out".into()
                    }),
                    Some(if clear { Exit::Clear } else { Exit::Leave }),
                )
            }
            Request::Attach { iface } => match self.attach(&iface) {
                Ok(mode) => (Response::text(format!("{iface}: attached ({mode})")), None),
                Err(e) => (Response::error(e), None),
            },
            Request::Detach { iface } => match self.detach(&iface) {
                Ok(()) => (Response::text(format!("{iface}: detached")), None),
                Err(e) => (Response::error(e), None),
            },
            Request::Reload => match self.reload() {
                Ok(changes) => (Response::text(changes.join("\n")), None),
                Err(e) => (Response::error(e), None),
            },
        }
    }

    /// Re-reads the configuration. A bad file is refused whole and the running one kept.
    /// Groups whose settings are unchanged keep running untouched; a changed password,
    /// timers or group list is applied to the running group, which keeps its view (an
    /// engine the new group list leaves out is removed at once); a changed definition or
    /// method list restarts the group with the new settings, which is what the engines
    /// see of a router restart for that group: they re-join within a Here-I-Am or two.
    fn reload(&mut self) -> Result<Vec<String>, String> {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload refused; keeping the running configuration");
                return Err(format!("reload refused: {e}"));
            }
        };
        let old = &self.config;
        let mut fixed = Vec::new();
        if new.address != old.address || new.port != old.port {
            fixed.push("router.address/router.port");
        }
        if new.control_socket != old.control_socket {
            fixed.push("router.control_socket");
        }
        if new.metrics != old.metrics {
            fixed.push("router.metrics");
        }
        if new.dataplane.pin_root != old.dataplane.pin_root {
            fixed.push("dataplane.pin_root");
        }
        let groups = |c: &Config| -> BTreeSet<Ipv4Addr> {
            c.services
                .iter()
                .filter_map(|s| s.router.multicast)
                .collect()
        };
        if groups(&new) != groups(old) {
            fixed.push("service multicast groups");
        }
        if !fixed.is_empty() {
            let e = format!(
                "reload refused: {} cannot change on a running controller (restart it)",
                fixed.join(", ")
            );
            error!("{e}");
            return Err(e);
        }
        let mut changes = Vec::new();
        let now = self.now();
        let mut old_groups: Vec<Group> = std::mem::take(&mut self.groups);
        let mut clears = Vec::new();
        for (i, s) in new.services.iter().enumerate() {
            let id = s.router.id;
            match old_groups.iter().position(|g| g.service.router.id == id) {
                Some(p) => {
                    let mut g = old_groups.remove(p);
                    let diff = differences(&g.service, s);
                    if diff.is_empty() {
                        self.groups.push(g);
                        continue;
                    }
                    let router_changed = g.service.router != s.router;
                    let what = diff.join(", ");
                    if router_changed {
                        match g.router.reconfigure(s.router.clone(), now) {
                            Ok(actions) => {
                                self.pending.extend(actions.into_iter().map(|a| (id, a)));
                                changes.push(format!("{id}: {what} changed; view kept"));
                            }
                            Err(why) => {
                                add_counters(&mut self.retired, &g.router.state().counters);
                                g.router =
                                    Router::new(new.router_config(s, self.seed ^ 0x100 ^ i as u64));
                                clears.push(id);
                                changes
                                    .push(format!("{id}: {what} changed; group restarted ({why})"));
                            }
                        }
                    } else {
                        changes.push(format!("{id}: {what} changed"));
                    }
                    g.service = s.clone();
                    self.groups.push(g);
                }
                None => {
                    changes.push(format!("{id}: added"));
                    self.groups.push(Group {
                        router: Router::new(new.router_config(s, self.seed ^ 0x200 ^ i as u64)),
                        service: s.clone(),
                    });
                }
            }
        }
        for g in old_groups {
            changes.push(format!("{}: removed", g.service.router.id));
            add_counters(&mut self.retired, &g.router.state().counters);
            clears.push(g.service.router.id);
        }
        for id in clears {
            if let Err(e) = self.plane.clear(id) {
                self.plane_failed(&format!("clearing {id}"), e);
            }
        }
        self.push_lists();
        let old_in: Vec<String> = self.config.redirect_in.clone();
        let old_out: Vec<String> = self.config.redirect_out.clone();
        let old_grace = self.config.dataplane.grace;
        self.config = new;
        let gone: Vec<String> = old_in
            .iter()
            .filter(|i| !self.config.redirect_in.contains(i))
            .cloned()
            .collect();
        for iface in &gone {
            if self.detach(iface).is_ok() {
                changes.push(format!("{iface}: detached"));
            }
        }
        for iface in self.config.redirect_in.clone() {
            if !old_in.contains(&iface) && self.attach(&iface).is_ok() {
                changes.push(format!("{iface}: attached"));
            }
        }
        let gone_out: Vec<String> = old_out
            .iter()
            .filter(|i| !self.config.redirect_out.contains(i))
            .cloned()
            .collect();
        for iface in &gone_out {
            match self.plane.detach_out(iface) {
                Ok(()) => changes.push(format!("{iface}: detached (egress)")),
                Err(e) => self.plane_failed(&format!("detaching {iface} at egress"), e),
            }
        }
        for iface in self.config.redirect_out.clone() {
            if !old_out.contains(&iface) && self.attach_out(&iface) {
                changes.push(format!("{iface}: attached (egress)"));
            }
        }
        if old_grace != self.config.dataplane.grace {
            changes.push(format!(
                "dataplane.grace_ms: {} ms",
                self.config.dataplane.grace.as_millis()
            ));
            self.heartbeat();
        }
        if changes.is_empty() {
            changes.push("no changes".into());
        }
        for c in &changes {
            info!(change = %c, "configuration reloaded");
        }
        Ok(changes)
    }
}

fn add_counters(into: &mut Counters, from: &Counters) {
    for (k, v) in &from.0 {
        let e = into.0.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(*v);
    }
}

/// Names of the settings that differ, for the reload log (passwords by name only).
fn differences(a: &Service, b: &Service) -> Vec<&'static str> {
    let mut d = Vec::new();
    let (x, y) = (&a.router, &b.router);
    if x.password != y.password {
        d.push("password");
    }
    if x.timers != y.timers {
        d.push("timers");
    }
    if x.methods != y.methods {
        d.push("methods");
    }
    if x.definition != y.definition {
        d.push("definition");
    }
    if x.group_list != y.group_list {
        d.push("group_list");
    }
    if x.multicast != y.multicast {
        d.push("multicast");
    }
    if a.redirect != b.redirect || a.skip != b.skip {
        d.push("redirect list");
    }
    d
}
