//! `engine-agent run`: the sockets, the clock and the signals around the
//! [`wccp::engine::Engine`] state machines.
//!
//! One task owns everything mutable (the engines, the statistics), so there are no locks
//! on the protocol path: it waits on the UDP socket(s), the earliest engine deadline, the
//! signals and the control socket's requests, and hands each to the engines. The
//! engines never see a clock: [`Clock`] turns the monotonic clock into
//! [`wccp::time::Instant`] (milliseconds since the daemon started).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use wccp::engine::{Action, Engine, EngineConfig, Event};
use wccp::proto::{type_name, ServiceId};
use wccp::time::Instant;
use wccp::wire::{
    AltAssignmentData, AssignmentData, AssignmentMethods, Component, Message, MessageType,
    SecurityInfo,
};

use crate::config::Config;
use crate::control::{Request, Response};
use crate::dataplane::Dataplane;
use crate::metrics::Metrics;
use crate::status::{Assignment, ProxyStatus, RouterStatus, ServiceStatus, Status};

/// How long a leaving agent waits for every router's SHUTDOWN RESPONSE.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Largest datagram read (WCCP messages are far smaller; a bigger one is cut and fails to
/// parse, which is counted).
const MAX_DATAGRAM: usize = 65_535;

/// Monotonic time as protocol time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_millis(t.as_millis()))
    }
}

/// Per-service counters for `show stats`: stable names, never reset while running.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Received messages by type.
    pub messages_in: BTreeMap<String, u64>,
    /// Sent messages by type.
    pub messages_out: BTreeMap<String, u64>,
    /// Errors by kind (drop reasons, wire error kinds, `send`, `emit_failed`).
    pub errors: BTreeMap<String, u64>,
    /// Engine events by kind.
    pub events: BTreeMap<String, u64>,
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    let v = m.entry(k.to_string()).or_insert(0);
    *v = v.saturating_add(1);
}

/// One service group: its engine and what the agent remembers beside it.
struct Service {
    label: String,
    cfg: EngineConfig,
    engine: Engine,
    stats: Stats,
    /// The last I-See-You of each router, parsed: replayed into a new engine on reload so
    /// the group never sees this engine drop its view, and read for the buckets we hold.
    last_isy: BTreeMap<Ipv4Addr, (Ipv4Addr, Message)>,
    /// Mask values given to this engine by the last Redirect-Assign it sent.
    mask_values_sent: Option<Vec<String>>,
}

impl Service {
    fn new(cfg: EngineConfig) -> Service {
        Service {
            label: ServiceId::of(&cfg.service).to_string(),
            engine: Engine::new(cfg.clone()),
            cfg,
            stats: Stats::default(),
            last_isy: BTreeMap::new(),
            mask_values_sent: None,
        }
    }

    fn buckets_held(&self) -> Vec<u8> {
        let me = self.cfg.address;
        self.last_isy
            .values()
            .next()
            .and_then(|(_, m)| {
                m.components.iter().find_map(|c| match c {
                    Component::RouterView(v) => Some(v),
                    _ => None,
                })
            })
            .and_then(|v| v.caches.iter().find(|c| c.address.ipv4() == Some(me)))
            .and_then(|c| match &c.assignment {
                AssignmentData::Hash(h) => Some(h.buckets.iter().collect()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn slots_held(&self) -> usize {
        if self.cfg.assignment.contains(AssignmentMethods::MASK) {
            self.mask_values_sent.as_ref().map_or(0, Vec::len)
        } else {
            self.buckets_held().len()
        }
    }

    fn status(&self, now: Instant) -> ServiceStatus {
        let st = self.engine.state();
        let mask = self.cfg.assignment.contains(AssignmentMethods::MASK);
        let buckets = if mask {
            Vec::new()
        } else {
            self.buckets_held()
        };
        ServiceStatus {
            service: self.label.clone(),
            id: self.cfg.service.service_id,
            dynamic: st.service.dynamic,
            weight: self.cfg.weight,
            password: self.cfg.password.is_some(),
            forwarding: method_name(self.cfg.forwarding.bits()),
            returns: method_name(self.cfg.returns.bits()),
            assignment_method: if mask { "mask" } else { "hash" },
            interval_ms: u64::try_from(self.cfg.interval.as_millis()).unwrap_or(u64::MAX),
            routers: st
                .routers
                .iter()
                .map(|r| RouterStatus {
                    address: r.address,
                    receive_id: r.receive_id,
                    member_change: r.member_change,
                    key_engine: r.key.0,
                    key_change: r.key.1,
                    engines: r.engines.clone(),
                    last_heard_ms_ago: now.saturating_since(r.last_heard).as_millis() as u64,
                })
                .collect(),
            group_routers: st.group_routers,
            engines: st.seen_by_all,
            designated: st.designated,
            designated_is_us: st.designated == Some(self.cfg.address),
            change_number: st.change_number,
            assignment_change: st.assignment_change,
            left: st.left,
            assignment: Assignment {
                bucket_count: buckets.len(),
                buckets,
                mask_values: if mask {
                    self.mask_values_sent.clone().unwrap_or_default()
                } else {
                    Vec::new()
                },
            },
            messages_in: self.stats.messages_in.clone(),
            messages_out: self.stats.messages_out.clone(),
            errors: self.stats.errors.clone(),
            events: self.stats.events.clone(),
        }
    }
}

fn method_name(bits: u32) -> &'static str {
    match bits {
        1 => "gre",
        2 => "l2",
        _ => "other",
    }
}

/// The running daemon's state.
struct Daemon {
    path: PathBuf,
    cfg: Config,
    clock: Clock,
    socket: Option<Arc<UdpSocket>>,
    services: Vec<Service>,
    /// Errors no service claims (unparsable datagrams, unknown services).
    errors: BTreeMap<String, u64>,
    metrics: Arc<Metrics>,
    /// The packet side, when `[dataplane]` is configured.
    dataplane: Option<Dataplane>,
    /// The proxy liveness check's view; `None` without a check.
    proxy: Option<Proxy>,
    /// `run --dataplane-only`: no WCCP at all.
    dataplane_only: bool,
    /// Data-plane totals already exported as metrics.
    exported: BTreeMap<String, u64>,
}

/// What the liveness check last said about the local proxy.
#[derive(Debug, Clone)]
struct Proxy {
    check: SocketAddrV4,
    up: Option<bool>,
    since: Instant,
    withdrawals: u64,
}

/// Reports every change of the proxy's state (and its first state): connects to `check`
/// every `every`; a connect that fails or takes longer than the period counts as down.
async fn watch_proxy(check: SocketAddrV4, every: Duration, tx: mpsc::Sender<bool>) {
    let mut last = None;
    loop {
        let up = matches!(
            tokio::time::timeout(every, tokio::net::TcpStream::connect(check)).await,
            Ok(Ok(_))
        );
        if last != Some(up) {
            last = Some(up);
            if tx.send(up).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs the agent until SIGTERM, SIGINT or `engine-agent stop`. With `dataplane_only`
/// the agent speaks no WCCP (the proxy does) and only runs the packet side.
pub async fn run(path: &Path, cfg: Config, dataplane_only: bool) -> anyhow::Result<()> {
    let clock = Clock {
        origin: std::time::Instant::now(),
    };
    if dataplane_only && cfg.dataplane.is_none() {
        bail!("--dataplane-only needs a [dataplane] section in the configuration");
    }
    let socket = if dataplane_only {
        None
    } else {
        Some(Arc::new(bind_udp(&cfg)?))
    };
    let mcast = match cfg.multicast {
        Some(g) if !dataplane_only => Some(bind_multicast(g, cfg.address, cfg.port)?),
        _ => None,
    };
    let dataplane = match &cfg.dataplane {
        Some(dp) => Some(Dataplane::start(&cfg, dp)?),
        None => {
            warn!("no [dataplane] section: redirected packets are left to the host (a proxy that takes WCCP GRE itself)");
            None
        }
    };
    let (proxy_tx, mut proxy_rx) = mpsc::channel::<bool>(4);
    let proxy = match cfg
        .dataplane
        .as_ref()
        .and_then(|d| d.proxy_check.map(|e| (d, e)))
    {
        Some((dp, every)) if !dataplane_only => {
            let check = SocketAddrV4::new(dp.proxy_check_address, cfg.proxy_port);
            tokio::spawn(watch_proxy(check, every, proxy_tx));
            info!(%check, every_ms = every.as_millis() as u64, "checking the proxy; joining once it answers");
            Some(Proxy {
                check,
                up: None,
                since: clock.now(),
                withdrawals: 0,
            })
        }
        _ => None,
    };
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = cfg.metrics {
        let l = crate::metrics::bind(addr)
            .await
            .with_context(|| format!("metrics address {addr}"))?;
        info!(%addr, "metrics listening");
        tokio::spawn(crate::metrics::serve(l, metrics.clone()));
    }
    let (req_tx, mut req_rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(16);
    let control = bind_control(&cfg.control_socket)?;
    let control_path = cfg.control_socket.clone();
    tokio::spawn(serve_control(control, req_tx));

    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;

    let mut d = Daemon {
        path: path.to_path_buf(),
        services: if dataplane_only {
            Vec::new()
        } else {
            cfg.services.iter().cloned().map(Service::new).collect()
        },
        cfg,
        clock,
        socket: socket.clone(),
        errors: BTreeMap::new(),
        metrics,
        dataplane,
        proxy,
        dataplane_only,
        exported: BTreeMap::new(),
    };
    info!(
        address = %d.cfg.address,
        port = d.cfg.port,
        services = d.services.len(),
        mode = d.mode(),
        "engine-agent started"
    );
    if d.proxy.is_none() {
        d.join_all().await;
    }
    let mut counters_tick = tokio::time::interval(Duration::from_secs(1));

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut mbuf = vec![0u8; MAX_DATAGRAM];
    let mut stop_reply: Option<oneshot::Sender<Response>> = None;
    loop {
        let deadline = d.next_deadline();
        tokio::select! {
            r = recv_opt(socket.as_deref(), &mut buf) => match r {
                Ok((n, from)) => d.datagram(from, &buf[..n]).await,
                Err(e) => { warn!(error = %e, "receive failed"); bump(&mut d.errors, "receive"); }
            },
            r = recv_opt(mcast.as_ref(), &mut mbuf) => match r {
                Ok((n, from)) => d.datagram(from, &mbuf[..n]).await,
                Err(e) => { warn!(error = %e, "multicast receive failed"); bump(&mut d.errors, "receive"); }
            },
            _ = sleep_opt(deadline) => d.timeouts().await,
            Some(up) = proxy_rx.recv() => d.proxy_changed(up).await,
            _ = counters_tick.tick() => d.export_counters(),
            _ = sigterm.recv() => { info!(signal = "SIGTERM", "leaving the group"); break; }
            _ = sigint.recv() => { info!(signal = "SIGINT", "leaving the group"); break; }
            _ = sighup.recv() => {
                match d.reload().await {
                    Ok(()) => info!("configuration reloaded"),
                    Err(e) => error!(error = %format!("{e:#}"), "reload refused; the old configuration stays"),
                }
            }
            Some((req, reply)) = req_rx.recv() => match req {
                Request::Show => { let _ = reply.send(Response::Status(Box::new(d.status()))); }
                Request::Reload => {
                    let r = match d.reload().await {
                        Ok(()) => { info!("configuration reloaded"); Response::Ok }
                        Err(e) => {
                            error!(error = %format!("{e:#}"), "reload refused; the old configuration stays");
                            Response::Error(format!("{e:#}"))
                        }
                    };
                    let _ = reply.send(r);
                }
                Request::Stop => { info!("stop requested"); stop_reply = Some(reply); break; }
            },
        }
    }

    d.leave(&mut buf, mcast.as_ref(), &mut mbuf).await;
    if let Some(mut dp) = d.dataplane.take() {
        if let Err(e) = dp.stop() {
            error!(error = %format!("{e:#}"), "engine data plane teardown failed");
        }
    }
    if let Some(r) = stop_reply {
        let _ = r.send(Response::Ok);
        // Give the control task a moment to write the answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&control_path);
    info!("engine-agent stopped");
    Ok(())
}

impl Daemon {
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.services
            .iter()
            .filter_map(|s| s.engine.next_timeout())
            .min()
            .map(|t| self.clock.deadline(t))
    }

    async fn timeouts(&mut self) {
        let now = self.clock.now();
        for i in 0..self.services.len() {
            if matches!(self.services[i].engine.next_timeout(), Some(t) if t <= now) {
                let acts = self.services[i].engine.handle_timeout(now);
                self.perform(i, acts).await;
            }
        }
    }

    async fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let SocketAddr::V4(from) = from else {
            return;
        };
        let ip = *from.ip();
        if ip == self.cfg.address && from.port() == self.cfg.port {
            // Our own multicast Here-I-Am looped back.
            return;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                let kind = format!("malformed.{}", e.kind());
                warn!(from = %ip, error = %e, "unparsable datagram");
                self.metrics.error("none", &kind);
                bump(&mut self.errors, &kind);
                return;
            }
        };
        let Some(sid) = msg.service().map(ServiceId::of) else {
            self.metrics.error("none", "components");
            bump(&mut self.errors, "components");
            return;
        };
        let Some(i) = self
            .services
            .iter()
            .position(|s| ServiceId::of(&s.cfg.service) == sid)
        else {
            debug!(from = %ip, service = %sid, "message for a service not configured here");
            self.metrics.error("none", "unknown_service");
            bump(&mut self.errors, "unknown_service");
            return;
        };
        let kind = type_name(msg.message_type);
        let s = &mut self.services[i];
        bump(&mut s.stats.messages_in, kind);
        self.metrics.message(&s.label, kind, "in");
        let now = self.clock.now();
        let acts = s.engine.handle_message(ip, bytes, now);
        let dropped = acts
            .iter()
            .any(|a| matches!(a, Action::Event(Event::Dropped { .. })));
        if msg.message_type == MessageType::ISeeYou && !dropped {
            let router = msg
                .components
                .iter()
                .find_map(|c| match c {
                    Component::RouterIdentity(r) => r.router.address.ipv4(),
                    _ => None,
                })
                .unwrap_or(ip);
            s.last_isy.insert(router, (ip, msg));
        }
        self.perform(i, acts).await;
    }

    async fn perform(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(t) => {
                    let kind = type_name(t.message.message_type);
                    let label = self.services[i].label.clone();
                    if t.message.message_type == MessageType::RedirectAssign {
                        self.note_assignment(i, &t.message);
                    }
                    let to = SocketAddrV4::new(t.to, self.cfg.port);
                    let Some(socket) = self.socket.clone() else {
                        continue;
                    };
                    match socket.send_to(&t.bytes, to).await {
                        Ok(_) => {
                            debug!(service = %label, to = %t.to, kind, "sent");
                            bump(&mut self.services[i].stats.messages_out, kind);
                            self.metrics.message(&label, kind, "out");
                        }
                        Err(e) => {
                            warn!(service = %label, to = %t.to, kind, error = %e, "send failed");
                            bump(&mut self.services[i].stats.errors, "send");
                            self.metrics.error(&label, "send");
                        }
                    }
                }
                Action::Event(ev) => self.event(i, ev),
            }
        }
        let s = &self.services[i];
        let st = s.engine.state();
        self.metrics.service(
            &s.label,
            s.slots_held(),
            st.designated == Some(s.cfg.address),
            st.routers.len(),
        );
        self.sync_routers();
    }

    fn mode(&self) -> &'static str {
        match (self.dataplane_only, self.dataplane.is_some()) {
            (true, _) => "dataplane-only",
            (false, true) => "wccp+dataplane",
            (false, false) => "wccp",
        }
    }

    /// GRE is taken from the routers the protocol knows now (Router IDs and the addresses
    /// their I-See-You came from) besides the configured ones.
    fn sync_routers(&mut self) {
        let Some(dp) = self.dataplane.as_mut() else {
            return;
        };
        let mut view = std::collections::BTreeSet::new();
        for s in &self.services {
            let st = s.engine.state();
            if st.left {
                continue;
            }
            view.extend(st.routers.iter().map(|r| r.address));
            for (id, (from, _)) in &s.last_isy {
                view.insert(*id);
                view.insert(*from);
            }
        }
        if let Err(e) = dp.set_routers(&view) {
            error!(error = %format!("{e:#}"), "writing the accepted routers");
            bump(&mut self.errors, "dataplane");
            self.metrics.error("none", "dataplane");
        }
    }

    /// Starts (or restarts) every service's engine: a fresh join.
    async fn join_all(&mut self) {
        let now = self.clock.now();
        for i in 0..self.services.len() {
            let s = &mut self.services[i];
            if s.engine.state().left || s.engine.state().routers.is_empty() {
                s.engine = Engine::new(s.cfg.clone());
                s.last_isy.clear();
                s.mask_values_sent = None;
            }
            let acts = self.services[i].engine.start(now);
            self.perform(i, acts).await;
        }
    }

    /// The proxy went down (leave every group with SHUTDOWN, so its buckets move at once
    /// instead of black-holing new connections) or came back (join again).
    async fn proxy_changed(&mut self, up: bool) {
        let now = self.clock.now();
        let Some(p) = self.proxy.as_mut() else {
            return;
        };
        let first = p.up.is_none();
        p.up = Some(up);
        p.since = now;
        self.metrics.proxy_up.set(i64::from(up));
        let check = p.check;
        if up {
            info!(%check, "proxy answers: joining the service groups");
            self.join_all().await;
        } else if first {
            warn!(%check, "proxy does not answer: not joining until it does");
        } else {
            p.withdrawals += 1;
            warn!(%check, "proxy stopped answering: leaving the service groups");
            for i in 0..self.services.len() {
                let acts = self.services[i].engine.shutdown(now);
                self.perform(i, acts).await;
            }
        }
    }

    fn export_counters(&mut self) {
        let Some(dp) = self.dataplane.as_mut() else {
            return;
        };
        match dp.counters() {
            Ok(c) => {
                let now: BTreeMap<String, u64> = c
                    .nonzero()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                self.metrics.dataplane(&now, &mut self.exported);
            }
            Err(e) => debug!(error = %format!("{e:#}"), "reading data-plane counters"),
        }
    }

    fn note_assignment(&mut self, i: usize, m: &Message) {
        let me = self.services[i].cfg.address;
        for c in &m.components {
            if let Component::AltAssignment(a) = c {
                if let AltAssignmentData::Mask(sets) = &a.data {
                    let values = sets
                        .iter()
                        .flat_map(|s| &s.values)
                        .filter(|v| v.cache.ipv4() == Some(me))
                        .map(|v| {
                            format!(
                                "src_addr={} dst_addr={} src_port={} dst_port={}",
                                v.src_addr, v.dst_addr, v.src_port, v.dst_port
                            )
                        })
                        .collect();
                    self.services[i].mask_values_sent = Some(values);
                }
            }
        }
    }

    fn event(&mut self, i: usize, ev: Event) {
        let s = &mut self.services[i];
        let kind = ev.kind();
        bump(&mut s.stats.events, kind);
        match &ev {
            Event::Dropped { from, reason } => {
                bump(&mut s.stats.errors, reason.kind());
                self.metrics.error(&s.label, reason.kind());
                warn!(service = %s.label, kind, from = %from, reason = reason.kind(), "message dropped");
            }
            Event::EmitFailed { kind: k } => {
                bump(&mut s.stats.errors, "emit_failed");
                self.metrics.error(&s.label, "emit_failed");
                error!(service = %s.label, kind, wire = k, "message could not be emitted");
            }
            Event::RouterUp { router } => {
                info!(service = %s.label, kind, router = %router, "router up")
            }
            Event::RouterDown { router } => {
                warn!(service = %s.label, kind, router = %router, "router down")
            }
            Event::RouterIncompatible { router } => warn!(
                service = %s.label, kind, router = %router,
                "router does not support our forwarding, return or assignment method"
            ),
            Event::Designated { now } => {
                info!(service = %s.label, kind, designated = now, "designated engine changed")
            }
            Event::AssignmentSent {
                change,
                engines,
                moved,
                resend,
            } => info!(
                service = %s.label, kind, change, engines = ?engines, moved, resend,
                "Redirect-Assign sent"
            ),
            Event::Queried { router } => {
                info!(service = %s.label, kind, router = %router, "Removal-Query answered")
            }
            Event::Left => info!(service = %s.label, kind, "left the group"),
        }
    }

    fn status(&mut self) -> Status {
        let now = self.clock.now();
        let cfg = self.cfg.clone();
        Status {
            mode: self.mode(),
            dataplane: self.dataplane.as_mut().map(|d| d.status(&cfg)),
            proxy: self.proxy.as_ref().map(|p| ProxyStatus {
                state: match p.up {
                    None => "unknown",
                    Some(true) => "up",
                    Some(false) => "down",
                },
                since_ms: now.saturating_since(p.since).as_millis() as u64,
                withdrawals: p.withdrawals,
                check: p.check.to_string(),
            }),
            address: self.cfg.address,
            port: self.cfg.port,
            multicast: self.cfg.multicast,
            proxy_port: self.cfg.proxy_port,
            uptime_ms: now.as_millis(),
            services: self.services.iter().map(|s| s.status(now)).collect(),
            errors: self.errors.clone(),
        }
    }

    /// SIGHUP: re-read the file; apply weight, password, routers and service changes to
    /// the running group. Sockets cannot move, so a changed address, port, multicast
    /// group, control socket or metrics address is refused as a whole.
    async fn reload(&mut self) -> anyhow::Result<()> {
        let new = Config::load(&self.path).map_err(anyhow::Error::new)?;
        let old = &self.cfg;
        if new.address != old.address
            || new.port != old.port
            || new.multicast != old.multicast
            || new.control_socket != old.control_socket
            || new.metrics != old.metrics
        {
            bail!(
                "address, port, multicast group, control socket and metrics address need a restart"
            );
        }
        if new.dataplane != old.dataplane {
            bail!("a changed [dataplane] section needs a restart (return rules do not)");
        }
        if let Some(dp) = self.dataplane.as_mut() {
            dp.set_fixed_routers(&new);
            dp.apply(&new)
                .context("applying the data plane's ports and return rules")?;
        }
        if self.dataplane_only {
            self.cfg = new;
            self.sync_routers();
            return Ok(());
        }
        let now = self.clock.now();
        let mut next: Vec<Service> = Vec::new();
        let mut old_services: Vec<Service> = std::mem::take(&mut self.services);
        let mut starts = Vec::new();
        for cfg in &new.services {
            let id = ServiceId::of(&cfg.service);
            match old_services
                .iter()
                .position(|s| ServiceId::of(&s.cfg.service) == id)
            {
                Some(p) => {
                    let old = old_services.remove(p);
                    if old.cfg == *cfg {
                        next.push(old);
                    } else {
                        info!(service = %old.label, "service reconfigured");
                        next.push(carry_over(old, cfg.clone(), now));
                        starts.push(next.len() - 1);
                    }
                }
                None => {
                    info!(service = %id, "service added");
                    next.push(Service::new(cfg.clone()));
                    starts.push(next.len() - 1);
                }
            }
        }
        // Services no longer configured leave the group.
        let mut leaving = Vec::new();
        for mut s in old_services {
            info!(service = %s.label, "service removed: leaving its group");
            self.metrics.forget(&s.label);
            let acts = s.engine.shutdown(now);
            leaving.push((s, acts));
        }
        self.services = next;
        self.cfg = new;
        for (s, acts) in leaving {
            for a in acts {
                if let (Action::Send(t), Some(socket)) = (a, self.socket.as_ref()) {
                    let _ = socket
                        .send_to(&t.bytes, SocketAddrV4::new(t.to, self.cfg.port))
                        .await;
                    self.metrics
                        .message(&s.label, type_name(t.message.message_type), "out");
                }
            }
        }
        let joined = self.proxy.as_ref().is_none_or(|p| p.up == Some(true));
        if joined {
            for i in starts {
                let acts = self.services[i].engine.start(now);
                self.perform(i, acts).await;
            }
        }
        self.sync_routers();
        Ok(())
    }

    /// SIGTERM/SIGINT/stop: SHUTDOWN to every router, then wait (briefly) for each
    /// service's SHUTDOWN RESPONSE so the routers move our buckets at once instead of
    /// after 3 T.
    async fn leave(&mut self, buf: &mut [u8], mcast: Option<&UdpSocket>, mbuf: &mut [u8]) {
        let now = self.clock.now();
        for i in 0..self.services.len() {
            let acts = self.services[i].engine.shutdown(now);
            self.perform(i, acts).await;
        }
        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self
            .services
            .iter()
            .all(|s| s.engine.state().left || s.engine.state().routers.is_empty())
        {
            let deadline = self.next_deadline().map(|d| d.min(until)).unwrap_or(until);
            let socket = self.socket.clone();
            tokio::select! {
                r = recv_opt(socket.as_deref(), buf) => {
                    if let Ok((n, from)) = r { self.datagram(from, &buf[..n]).await; }
                }
                r = recv_opt(mcast, mbuf) => {
                    if let Ok((n, from)) = r { self.datagram(from, &mbuf[..n]).await; }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if tokio::time::Instant::now() >= until {
                        warn!("not every router acknowledged SHUTDOWN; leaving anyway");
                        break;
                    }
                    self.timeouts().await;
                }
            }
        }
    }
}

/// A new engine for a changed service that keeps the group's view: the last I-See-You of
/// each router still configured is replayed into it (re-signed for the new password), so
/// its first Here-I-Am already reflects every router and the routers never see it drop out.
fn carry_over(old: Service, cfg: EngineConfig, now: Instant) -> Service {
    let mut s = Service::new(cfg.clone());
    s.stats = old.stats;
    for (router, (from, msg)) in old.last_isy {
        if cfg.multicast.is_none() && !cfg.routers.contains(&router) && !cfg.routers.contains(&from)
        {
            continue;
        }
        let mut m = msg.clone();
        for c in &mut m.components {
            if let Component::Security(sec) = c {
                *sec = match &cfg.password {
                    Some(_) => SecurityInfo::md5_unsigned(),
                    None => SecurityInfo::None,
                };
            }
        }
        let bytes = match &cfg.password {
            Some(p) => m.to_bytes_signed(p),
            None => m.to_bytes(),
        };
        if let Ok(b) = bytes {
            // Replies to a replay are never sent: the engine has not started, so it only
            // learns the view; its start() announces with it.
            let _ = s.engine.handle_message(from, &b, now);
            s.last_isy.insert(router, (from, msg));
        }
    }
    s
}

async fn recv_opt(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(d: Option<tokio::time::Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn bind_udp(cfg: &Config) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddrV4::new(cfg.address, cfg.port);
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    s.set_reuse_address(true).context("SO_REUSEADDR")?;
    if cfg.multicast.is_some() {
        s.set_multicast_if_v4(&cfg.address)
            .context("IP_MULTICAST_IF")?;
        s.set_multicast_ttl_v4(u32::from(cfg.multicast_ttl))
            .context("IP_MULTICAST_TTL")?;
    }
    s.bind(&addr.into())
        .with_context(|| format!("bind UDP {addr}"))?;
    s.set_nonblocking(true).context("non-blocking")?;
    UdpSocket::from_std(s.into()).context("tokio UDP socket")
}

/// A socket bound to the group address, so it receives only the group's datagrams (the
/// unicast socket bound to the engine's address never sees them).
fn bind_multicast(group: Ipv4Addr, iface: Ipv4Addr, port: u16) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    s.set_reuse_address(true).context("SO_REUSEADDR")?;
    let addr = SocketAddrV4::new(group, port);
    s.bind(&addr.into())
        .with_context(|| format!("bind UDP {addr}"))?;
    s.join_multicast_v4(&group, &iface)
        .with_context(|| format!("join {group} on {iface}"))?;
    s.set_nonblocking(true).context("non-blocking")?;
    UdpSocket::from_std(s.into()).context("tokio UDP socket")
}

/// Binds the control socket, mode 0600 (root only: it can stop the agent). A stale file
/// from a dead agent is replaced; a live agent's is not.
fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another engine-agent is running",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

async fn serve_control(
    listener: UnixListener,
    tx: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            // Requests are one short line; a longer one is refused, not buffered.
            let mut lines = BufReader::new(r.take(64 * 1024)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let resp = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let (otx, orx) = oneshot::channel();
                        if tx.send((req, otx)).await.is_err() {
                            Response::Error("engine-agent is stopping".into())
                        } else {
                            orx.await
                                .unwrap_or(Response::Error("engine-agent is stopping".into()))
                        }
                    }
                    Err(e) => Response::Error(format!("bad request: {e}")),
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| {
                    "{\"result\":\"error\",\"error\":\"encoding\"}".to_string()
                });
                out.push('\n');
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;
    use wccp::router::{Router, RouterConfig, ServiceConfig};
    use wccp::wire::ServiceInfo;

    fn cfg(password: &[u8], weight: u16) -> EngineConfig {
        let mut c = EngineConfig::new(
            Ipv4Addr::new(10, 0, 0, 2),
            ServiceInfo::web_cache(),
            vec![Ipv4Addr::new(10, 0, 0, 1)],
        );
        c.password = Some(password.to_vec());
        c.weight = weight;
        c
    }

    fn sends(acts: Vec<Action>) -> Vec<wccp::proto::Transmit> {
        acts.into_iter()
            .filter_map(|a| match a {
                Action::Send(t) => Some(t),
                Action::Event(_) => None,
            })
            .collect()
    }

    /// A reload with a new password and weight keeps the view: the new engine's first
    /// Here-I-Am reflects the router's Receive ID, signed with the new password.
    #[test]
    fn carry_over_keeps_the_view_across_password_and_weight() {
        let rid = Ipv4Addr::new(10, 0, 0, 1);
        let mut sc = ServiceConfig::new(ServiceId::of(&ServiceInfo::web_cache()), None);
        sc.password = Some(b"old".to_vec());
        let mut r = Router::new(RouterConfig {
            router_id: rid,
            services: vec![sc],
            jitter_seed: 1,
        });
        let mut s = Service::new(cfg(b"old", 1));
        let now = Instant::from_secs(1);
        let hia = sends(s.engine.start(now)).remove(0);
        let isy = r
            .handle_message(hia.to, &hia.bytes, now)
            .into_iter()
            .find_map(|a| match a {
                wccp::router::Action::Send(t) => Some(t),
                _ => None,
            })
            .expect("I-See-You");
        assert!(s
            .engine
            .handle_message(rid, &isy.bytes, now)
            .iter()
            .all(|a| !matches!(a, Action::Event(Event::Dropped { .. }))));
        s.last_isy.insert(rid, (rid, isy.message.clone()));

        let mut n = carry_over(s, cfg(b"new", 9), now);
        assert_eq!(n.engine.state().routers.len(), 1);
        let first = sends(n.engine.start(now)).remove(0);
        assert!(wccp::wire::md5_is_valid(&first.bytes, b"new"));
        let view = first
            .message
            .components
            .iter()
            .find_map(|c| match c {
                Component::WebCacheView(v) => Some(v.clone()),
                _ => None,
            })
            .expect("view");
        assert_eq!(view.routers.len(), 1);
        assert_eq!(view.routers[0].address.ipv4(), Some(rid));
        assert_ne!(view.routers[0].receive_id, 0);
    }
}
