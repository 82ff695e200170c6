//! A virtual network for the protocol state machines, in the shape of quinn-proto's test
//! `Pair`: routers and engines exchange real bytes (every message is emitted, signed and
//! parsed again, so `wire` is exercised), a virtual clock jumps from event to event, and
//! every action is logged with its time so that a scenario reads as a script:
//! (time, event) -> expected actions and state.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use wccp::engine::{self, Engine, EngineConfig};
use wccp::proto::{Assignment, ServiceId, Table};
use wccp::router::{self, Router, RouterConfig, ServiceConfig};
use wccp::time::Instant;
use wccp::wire::{ServiceFlags, ServiceInfo};

/// Router addresses used by the scenarios.
pub const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Second router.
pub const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Engines, lowest first.
pub const E1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const E2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const E3: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
pub const E0: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 0);
/// A multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 99);

pub const SVC: ServiceId = ServiceId {
    dynamic: true,
    id: 90,
};

pub fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

pub fn ms(m: u64) -> Instant {
    Instant::from_millis(m)
}

/// Dynamic service 90: TCP 80/443, hashed on the destination address.
pub fn service() -> ServiceInfo {
    ServiceInfo::dynamic(
        90,
        0,
        6,
        ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED,
        &[80, 443],
    )
}

pub fn router_config(id: Ipv4Addr) -> RouterConfig {
    RouterConfig {
        router_id: id,
        services: vec![ServiceConfig::new(SVC, None)],
        jitter_seed: u64::from(u32::from(id)),
    }
}

pub fn engine_config(addr: Ipv4Addr, routers: &[Ipv4Addr]) -> EngineConfig {
    EngineConfig::new(addr, service(), routers.to_vec())
}

/// What happened: one node's action.
#[derive(Debug, Clone)]
pub enum Did {
    Router(router::Action),
    Engine(engine::Action),
}

/// One line of the log.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Instant,
    pub node: Ipv4Addr,
    pub did: Did,
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: Ipv4Addr,
    to: Ipv4Addr,
    bytes: Vec<u8>,
}

/// The network.
pub struct Net {
    pub now: Instant,
    pub routers: BTreeMap<Ipv4Addr, Router>,
    pub engines: BTreeMap<Ipv4Addr, Engine>,
    pub groups: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>,
    pub latency: Duration,
    queue: Vec<InFlight>,
    seq: u64,
    cut: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    blocked: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    silent: BTreeSet<Ipv4Addr>,
    pub log: Vec<Record>,
    /// Every datagram delivered: (time, from, to, bytes).
    pub wire_log: Vec<(Instant, Ipv4Addr, Ipv4Addr, Vec<u8>)>,
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Net {
    pub fn new() -> Net {
        Net {
            now: Instant::ZERO,
            routers: BTreeMap::new(),
            engines: BTreeMap::new(),
            groups: BTreeMap::new(),
            latency: Duration::from_millis(1),
            queue: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            blocked: BTreeSet::new(),
            silent: BTreeSet::new(),
            log: Vec::new(),
            wire_log: Vec::new(),
        }
    }

    pub fn add_router(&mut self, cfg: RouterConfig) {
        let id = cfg.router_id;
        for s in &cfg.services {
            if let Some(g) = s.multicast {
                self.groups.entry(g).or_default().insert(id);
            }
        }
        self.routers.insert(id, Router::new(cfg));
    }

    /// Adds an engine and starts it now.
    pub fn add_engine(&mut self, cfg: EngineConfig) {
        let a = cfg.address;
        if let Some(g) = cfg.multicast {
            self.groups.entry(g).or_default().insert(a);
        }
        let mut e = Engine::new(cfg);
        let acts = e.start(self.now);
        self.engines.insert(a, e);
        self.silent.remove(&a);
        self.engine_actions(a, acts);
    }

    /// The node stops: no more messages from it, none delivered to it, no timers.
    pub fn silence(&mut self, node: Ipv4Addr) {
        self.silent.insert(node);
    }

    /// Messages between `a` and `b` are lost, both ways.
    pub fn cut(&mut self, a: Ipv4Addr, b: Ipv4Addr) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    /// Messages from `from` to `to` are lost (one way) until [`Net::unblock`].
    pub fn block(&mut self, from: Ipv4Addr, to: Ipv4Addr) {
        self.blocked.insert((from, to));
    }

    /// Ends a [`Net::block`].
    pub fn unblock(&mut self, from: Ipv4Addr, to: Ipv4Addr) {
        self.blocked.remove(&(from, to));
    }

    /// A router restart: all state lost, same configuration.
    pub fn restart_router(&mut self, cfg: RouterConfig) {
        self.routers.insert(cfg.router_id, Router::new(cfg));
    }

    /// A running router takes a changed configuration of one group (a SIGHUP).
    pub fn reconfigure_router(
        &mut self,
        router: Ipv4Addr,
        cfg: ServiceConfig,
    ) -> Result<(), router::ReconfigureError> {
        let now = self.now;
        let acts = self
            .routers
            .get_mut(&router)
            .expect("no such router")
            .reconfigure(cfg, now)?;
        self.router_actions(router, acts);
        Ok(())
    }

    /// Engine leaves with SHUTDOWN.
    pub fn shutdown(&mut self, e: Ipv4Addr) {
        let now = self.now;
        let acts = match self.engines.get_mut(&e) {
            Some(en) => en.shutdown(now),
            None => return,
        };
        self.engine_actions(e, acts);
    }

    /// Delivers raw bytes as if `from` had sent them to `to` now.
    pub fn inject(&mut self, from: Ipv4Addr, to: Ipv4Addr, bytes: Vec<u8>) {
        self.enqueue(from, to, bytes);
    }

    fn enqueue(&mut self, from: Ipv4Addr, to: Ipv4Addr, bytes: Vec<u8>) {
        if self.silent.contains(&from) {
            return;
        }
        let targets: Vec<Ipv4Addr> = match self.groups.get(&to) {
            Some(members) => members.iter().copied().filter(|m| *m != from).collect(),
            None => vec![to],
        };
        for t in targets {
            if self.cut.contains(&(from.min(t), from.max(t))) || self.blocked.contains(&(from, t)) {
                continue;
            }
            self.seq += 1;
            self.queue.push(InFlight {
                at: self.now + self.latency,
                seq: self.seq,
                from,
                to: t,
                bytes: bytes.clone(),
            });
        }
    }

    fn router_actions(&mut self, node: Ipv4Addr, acts: Vec<router::Action>) {
        for a in acts {
            if let router::Action::Send(t) = &a {
                self.enqueue(node, t.to, t.bytes.clone());
            }
            self.log.push(Record {
                at: self.now,
                node,
                did: Did::Router(a),
            });
        }
    }

    fn engine_actions(&mut self, node: Ipv4Addr, acts: Vec<engine::Action>) {
        for a in acts {
            if let engine::Action::Send(t) = &a {
                self.enqueue(node, t.to, t.bytes.clone());
            }
            self.log.push(Record {
                at: self.now,
                node,
                did: Did::Engine(a),
            });
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let mut t = self.queue.iter().map(|m| m.at).min();
        for (a, r) in &self.routers {
            if !self.silent.contains(a) {
                t = min_opt(t, r.next_timeout());
            }
        }
        for (a, e) in &self.engines {
            if !self.silent.contains(a) {
                t = min_opt(t, e.next_timeout());
            }
        }
        t
    }

    /// Runs the network until `until`, jumping from event to event.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0u64;
        while let Some(t) = self.next_event() {
            if t > until {
                break;
            }
            steps += 1;
            assert!(steps < 10_000_000, "runaway scenario");
            self.now = t.max(self.now);
            // Deliver what is due, in send order.
            let mut due: Vec<InFlight> = Vec::new();
            let mut rest = Vec::new();
            for m in self.queue.drain(..) {
                if m.at <= self.now {
                    due.push(m);
                } else {
                    rest.push(m);
                }
            }
            self.queue = rest;
            due.sort_by_key(|m| m.seq);
            for m in due {
                if self.silent.contains(&m.to) {
                    continue;
                }
                self.wire_log
                    .push((self.now, m.from, m.to, m.bytes.clone()));
                let now = self.now;
                if let Some(r) = self.routers.get_mut(&m.to) {
                    let acts = r.handle_message(m.from, &m.bytes, now);
                    self.router_actions(m.to, acts);
                } else if let Some(e) = self.engines.get_mut(&m.to) {
                    let acts = e.handle_message(m.from, &m.bytes, now);
                    self.engine_actions(m.to, acts);
                }
            }
            let now = self.now;
            let rs: Vec<Ipv4Addr> = self.routers.keys().copied().collect();
            for a in rs {
                if self.silent.contains(&a) {
                    continue;
                }
                let due = matches!(self.routers[&a].next_timeout(), Some(t) if t <= now);
                if due {
                    let acts = self
                        .routers
                        .get_mut(&a)
                        .map(|r| r.handle_timeout(now))
                        .unwrap_or_default();
                    self.router_actions(a, acts);
                }
            }
            let es: Vec<Ipv4Addr> = self.engines.keys().copied().collect();
            for a in es {
                if self.silent.contains(&a) {
                    continue;
                }
                let due = matches!(self.engines[&a].next_timeout(), Some(t) if t <= now);
                if due {
                    let acts = self
                        .engines
                        .get_mut(&a)
                        .map(|e| e.handle_timeout(now))
                        .unwrap_or_default();
                    self.engine_actions(a, acts);
                }
            }
        }
        self.now = until.max(self.now);
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    // ---- reading the outcome ----

    /// The table `router` has programmed for the service, per its `show` state.
    pub fn table(&self, router: Ipv4Addr) -> Option<Table> {
        self.routers[&router]
            .state()
            .services
            .into_iter()
            .find(|s| s.service == SVC)
            .and_then(|s| s.table)
    }

    /// Slots per engine in `router`'s programmed table.
    pub fn counts(&self, router: Ipv4Addr) -> BTreeMap<Ipv4Addr, usize> {
        self.table(router)
            .map(|t| t.assignment.counts())
            .unwrap_or_default()
    }

    pub fn service_state(&self, router: Ipv4Addr) -> router::ServiceState {
        self.routers[&router]
            .state()
            .services
            .into_iter()
            .find(|s| s.service == SVC)
            .expect("service configured")
    }

    /// Usable engines at `router`.
    pub fn usable(&self, router: Ipv4Addr) -> Vec<Ipv4Addr> {
        self.service_state(router)
            .engines
            .into_iter()
            .filter(|e| e.status != router::EngineStatus::Waiting)
            .map(|e| e.address)
            .collect()
    }

    /// Router actions (not sends) in [from, to), as script lines.
    pub fn router_script(&self, node: Ipv4Addr, from: Instant, to: Instant) -> Vec<String> {
        self.log
            .iter()
            .filter(|r| r.node == node && r.at >= from && r.at < to)
            .filter_map(|r| match &r.did {
                Did::Router(router::Action::Send(_)) => None,
                Did::Router(a) => Some(format!("{} {}", r.at, describe_router(a))),
                _ => None,
            })
            .collect()
    }

    /// Programs and clears `router` did, with their times.
    pub fn programs(&self, node: Ipv4Addr) -> Vec<(Instant, Option<BTreeMap<Ipv4Addr, usize>>)> {
        self.log
            .iter()
            .filter(|r| r.node == node)
            .filter_map(|r| match &r.did {
                Did::Router(router::Action::Program { table, .. }) => {
                    Some((r.at, Some(table.assignment.counts())))
                }
                Did::Router(router::Action::Clear { .. }) => Some((r.at, None)),
                _ => None,
            })
            .collect()
    }

    /// Router events of `kind` at `node`.
    pub fn router_events(&self, node: Ipv4Addr, kind: &str) -> Vec<(Instant, router::Event)> {
        self.log
            .iter()
            .filter(|r| r.node == node)
            .filter_map(|r| match &r.did {
                Did::Router(router::Action::Event(e)) if e.kind() == kind => {
                    Some((r.at, e.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Engine events of `kind` at `node`.
    pub fn engine_events(&self, node: Ipv4Addr, kind: &str) -> Vec<(Instant, engine::Event)> {
        self.log
            .iter()
            .filter(|r| r.node == node)
            .filter_map(|r| match &r.did {
                Did::Engine(engine::Action::Event(e)) if e.kind() == kind => {
                    Some((r.at, e.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Messages of `name` (e.g. "removal_query") sent by `node`, with their times and
    /// destinations.
    pub fn sent(&self, node: Ipv4Addr, name: &str) -> Vec<(Instant, Ipv4Addr)> {
        self.log
            .iter()
            .filter(|r| r.node == node)
            .filter_map(|r| {
                let t = match &r.did {
                    Did::Router(router::Action::Send(t)) => t,
                    Did::Engine(engine::Action::Send(t)) => t,
                    _ => return None,
                };
                (wccp::proto::type_name(t.message.message_type) == name).then_some((r.at, t.to))
            })
            .collect()
    }

    /// The log from `from` on, as readable lines (for failure messages).
    pub fn dump(&self, from: Instant) -> String {
        self.log
            .iter()
            .filter(|r| r.at >= from)
            .map(|r| format!("{} {} {}", r.at, r.node, describe(&r.did)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub fn describe(d: &Did) -> String {
    match d {
        Did::Router(a) => describe_router(a),
        Did::Engine(engine::Action::Send(t)) => {
            format!(
                "send {} -> {}",
                wccp::proto::type_name(t.message.message_type),
                t.to
            )
        }
        Did::Engine(engine::Action::Event(e)) => format!("event {e:?}"),
    }
}

pub fn describe_router(a: &router::Action) -> String {
    match a {
        router::Action::Send(t) => format!(
            "send {} -> {}",
            wccp::proto::type_name(t.message.message_type),
            t.to
        ),
        router::Action::Program { service, table } => {
            format!("program {service} {:?}", table.assignment.counts())
        }
        router::Action::Clear { service } => format!("clear {service}"),
        router::Action::Event(e) => format!("event {e:?}"),
    }
}

/// True when every bucket (or mask value) of the table has an engine.
pub fn complete(t: &Table) -> bool {
    match &t.assignment {
        Assignment::Hash(h) => h.unassigned_count() == 0,
        Assignment::Mask(rules) => rules.iter().all(|r| !r.values.is_empty()),
    }
}
