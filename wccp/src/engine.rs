//! The engine side of WCCPv2 as a pure state machine: announce, learn the view, elect the
//! designated engine, assign (when designated), answer Removal-Queries, leave cleanly.
//!
//! # Driving it
//!
//! Like [`crate::router::Router`]: [`Engine::start`] once, then
//! [`Engine::handle_message`]`(from, bytes, now)` for each datagram,
//! [`Engine::handle_timeout`]`(now)` when [`Engine::next_timeout`] is due, and
//! [`Engine::shutdown`] to leave. Each returns [`Action`]s: datagrams (signed when the
//! service has a password) and events. One `Engine` is one service group on one host; it
//! talks to every router of the group (unicast to each configured router, or to the group's
//! multicast address).
//!
//! # Protocol rules kept (draft-wilson-wrec-wccp-v2-01)
//!
//! * A Here-I-Am every interval T to every router, and at once when the view changes
//!   [4.1, 4.6]; it reflects each router's last Receive ID [4.3] and carries the one method
//!   of each kind this engine uses [4.4-4.5], plus revision 1's Transmit_T and Timer Scale
//!   when fast timers are configured.
//! * A router whose advertisement lacks one of our methods is not joined (an event says
//!   so); a router silent for 3 T leaves the view.
//! * An I-See-You not addressed to this engine (its Received-From list) is ignored [4.1].
//! * The group's routers are those heard and those the routers report. The designated
//!   engine is the lowest address among the engines every router lists, and only an engine
//!   hearing every router of the group may be it [4.9]; so with partial views an engine
//!   that one router cannot see never takes over the group.
//! * The designated engine waits 1.5 T after the last change of the view before assigning
//!   [4.8]; it assigns to the engines every router sees, moving the fewest buckets (or mask
//!   values) from the table in force (rebuilt from the routers' views after a takeover),
//!   sends the Redirect-Assign to every router, and resends it after T to a router that does
//!   not yet reflect the key.
//! * A Removal-Query naming this engine is answered with three Here-I-Ams T/10 apart
//!   [4.14]. [`Engine::shutdown`] sends SHUTDOWN until every router answers with SHUTDOWN
//!   RESPONSE [4.15].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::assign::{assign_buckets, assign_mask_values, Bucket, BucketTable, Mask, MaskTable};
use crate::proto::{
    authenticate, earliest, encode, same_definition, security_component, type_name, v4, Counters,
    Drop, ServiceId, Transmit, DEFAULT_INTERVAL,
};
use crate::time::{tenths, Instant};
use crate::wire::{
    self, Address, AltAssignment, AltAssignmentData, AssignmentData, AssignmentInfo, AssignmentKey,
    AssignmentMethods, BucketSet, CapabilitiesInfo, Capability, Command, CommandExtension,
    Component, ExtendedAssignmentData, ForwardingMethods, HashAssignment, HashAssignmentData,
    IdentityFlags, MaskAssignmentData, MaskElement, MaskValueSet, Message, MessageType,
    ReturnMethods, RouterAssignmentElement, RouterIdElement, ServiceInfo, TimerScale, TransmitT,
    ValueElement, Version, WebCacheIdentity, WebCacheIdentityInfo, WebCacheViewInfo,
};

/// Revision 1 timer capabilities an engine asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FastTimers {
    /// Timeout scale to ask for (the router removes the engine after `scale × T`), or
    /// `None` for the router's default (3 T).
    pub timeout_scale: Option<u8>,
}

/// One engine's configuration for one service group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineConfig {
    /// The engine's address (its Web-Cache Identity).
    pub address: Ipv4Addr,
    /// The service group and, for a dynamic service, its description.
    pub service: ServiceInfo,
    /// MD5 password; `None` for no security.
    pub password: Option<Vec<u8>>,
    /// Routers to announce to by unicast.
    pub routers: Vec<Ipv4Addr>,
    /// Announce to this multicast group instead of `routers`.
    pub multicast: Option<Ipv4Addr>,
    /// Weight announced (and used when this engine is designated).
    pub weight: u16,
    /// Forwarding method wanted (one bit).
    pub forwarding: ForwardingMethods,
    /// Assignment method wanted (one bit).
    pub assignment: AssignmentMethods,
    /// Return method wanted (one bit).
    pub returns: ReturnMethods,
    /// The mask used when this engine is designated in mask mode.
    pub mask: Mask,
    /// Here-I-Am interval T.
    pub interval: Duration,
    /// Ask for T (as Transmit_T) and a timeout scale with revision 1's capabilities.
    pub fast_timers: Option<FastTimers>,
    /// Header version to send.
    pub version: Version,
}

impl EngineConfig {
    /// A hash/GRE engine with draft defaults, announcing to `routers`.
    pub fn new(address: Ipv4Addr, service: ServiceInfo, routers: Vec<Ipv4Addr>) -> EngineConfig {
        EngineConfig {
            address,
            service,
            password: None,
            routers,
            multicast: None,
            weight: 0,
            forwarding: ForwardingMethods::GRE,
            assignment: AssignmentMethods::HASH,
            returns: ReturnMethods::GRE,
            // Squid's fixed mask: six bits of the destination address.
            mask: Mask::new(0, 0x1741, 0, 0).unwrap_or_else(|_| unreachable_mask()),
            interval: DEFAULT_INTERVAL,
            fast_timers: None,
            version: Version::V2,
        }
    }
}

fn unreachable_mask() -> Mask {
    // A one-bit mask always passes Mask::new; this keeps the constructor panic-free.
    match Mask::new(0, 1, 0, 0) {
        Ok(m) => m,
        Err(_) => Mask::new(0, 0, 0, 0).unwrap_or_else(|_| unreachable_mask()),
    }
}

/// What the driver should do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Send a datagram to UDP port 2048.
    Send(Transmit),
    /// Something worth a log line and a counter.
    Event(Event),
}

/// Notable happenings, each with a stable [`Event::kind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Event {
    /// A router answered: it is in the view.
    RouterUp {
        /// The router.
        router: Ipv4Addr,
    },
    /// A router fell silent for 3 T.
    RouterDown {
        /// The router.
        router: Ipv4Addr,
    },
    /// A router does not support a method we use: not joined.
    RouterIncompatible {
        /// The router.
        router: Ipv4Addr,
    },
    /// This engine became, or stopped being, the designated engine.
    Designated {
        /// Whether it now is.
        now: bool,
    },
    /// A Redirect-Assign was sent.
    AssignmentSent {
        /// The key's change number.
        change: u32,
        /// Engines given traffic.
        engines: Vec<Ipv4Addr>,
        /// Slots that changed engine since the previous table.
        moved: usize,
        /// True for a resend to routers that had not reflected the key.
        resend: bool,
    },
    /// A Removal-Query named this engine.
    Queried {
        /// The router that asked.
        router: Ipv4Addr,
    },
    /// Every router acknowledged the SHUTDOWN: the engine has left.
    Left,
    /// A received message was ignored.
    Dropped {
        /// The sender.
        from: Ipv4Addr,
        /// Why.
        reason: Drop,
    },
    /// A message could not be emitted (a bug).
    EmitFailed {
        /// The wire error's kind.
        kind: &'static str,
    },
}

impl Event {
    /// A stable name for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RouterUp { .. } => "router_up",
            Event::RouterDown { .. } => "router_down",
            Event::RouterIncompatible { .. } => "router_incompatible",
            Event::Designated { .. } => "designated",
            Event::AssignmentSent { .. } => "assignment_sent",
            Event::Queried { .. } => "queried",
            Event::Left => "left",
            Event::Dropped { .. } => "dropped",
            Event::EmitFailed { .. } => "emit_failed",
        }
    }
}

/// `show` for an engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineState {
    /// The engine.
    pub address: Ipv4Addr,
    /// The group.
    pub service: ServiceId,
    /// Routers heard, with what each last said.
    pub routers: Vec<RouterState>,
    /// Routers of the group (heard or reported).
    pub group_routers: Vec<Ipv4Addr>,
    /// Engines every heard router lists.
    pub seen_by_all: Vec<Ipv4Addr>,
    /// The designated engine, as this engine sees it.
    pub designated: Option<Ipv4Addr>,
    /// View change number.
    pub change_number: u32,
    /// The last assignment key this engine sent, if designated.
    pub assignment_change: u32,
    /// Left the group.
    pub left: bool,
    /// Drops by reason.
    pub counters: Counters,
}

/// `show`: one router as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterState {
    /// The router.
    pub address: Ipv4Addr,
    /// Its last Receive ID.
    pub receive_id: u32,
    /// Its member change number.
    pub member_change: u32,
    /// The key it reflects: (designated engine, change number).
    pub key: (Ipv4Addr, u32),
    /// Engines it lists as usable.
    pub engines: Vec<Ipv4Addr>,
    /// When it was last heard.
    pub last_heard: Instant,
}

#[derive(Debug, Clone)]
struct Peer {
    address: Ipv4Addr,
    send_to: Ipv4Addr,
    receive_id: u32,
    member_change: u32,
    key: AssignmentKey,
    caches: Vec<WebCacheIdentity>,
    routers: Vec<Ipv4Addr>,
    last_heard: Instant,
    shutdown_acked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Prev {
    Hash(Box<BucketTable<Ipv4Addr>>),
    Mask(MaskTable<Ipv4Addr>),
}

/// What an assignment was computed from: when this changes, the designated engine assigns
/// again (after the 1.5 T settling time).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Basis {
    group: Vec<Ipv4Addr>,
    changes: Vec<(Ipv4Addr, u32)>,
    engines: Vec<(Ipv4Addr, u16)>,
}

/// The engine state machine.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    peers: BTreeMap<Ipv4Addr, Peer>,
    change_number: u32,
    view_sig: (Vec<Ipv4Addr>, Vec<Ipv4Addr>),
    next_hia: Option<Instant>,
    burst: Vec<(Instant, Ipv4Addr)>,
    designated: bool,
    assign_at: Option<Instant>,
    resend_at: Option<Instant>,
    basis: Option<Basis>,
    pending_basis: Option<Basis>,
    prev: Option<Prev>,
    assignment_change: u32,
    shutting_down: bool,
    left: bool,
    counters: Counters,
}

type Out = Vec<Action>;

impl Engine {
    /// An engine that has not announced itself yet.
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            peers: BTreeMap::new(),
            change_number: 0,
            view_sig: Default::default(),
            next_hia: None,
            burst: Vec::new(),
            designated: false,
            assign_at: None,
            resend_at: None,
            basis: None,
            pending_basis: None,
            prev: None,
            assignment_change: 0,
            shutting_down: false,
            left: false,
            counters: Counters::default(),
        }
    }

    /// The engine's address.
    pub fn address(&self) -> Ipv4Addr {
        self.cfg.address
    }

    /// Sends the first Here-I-Am and starts the interval timer.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.announce(now, &mut out);
        out
    }

    /// Leaves the group: SHUTDOWN to every router, repeated each T until acknowledged.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.shutting_down = true;
        self.assign_at = None;
        self.resend_at = None;
        self.announce(now, &mut out);
        out
    }

    /// The earliest instant at which [`Engine::handle_timeout`] has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut t = self.next_hia;
        t = earliest(t, self.assign_at);
        t = earliest(t, self.resend_at);
        for (at, _) in &self.burst {
            t = earliest(t, Some(*at));
        }
        for p in self.peers.values() {
            t = earliest(t, Some(p.last_heard + self.router_timeout()));
        }
        t
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        let timeout = self.router_timeout();
        let dead: Vec<Ipv4Addr> = self
            .peers
            .values()
            .filter(|p| now >= p.last_heard + timeout)
            .map(|p| p.address)
            .collect();
        for r in dead {
            self.peers.remove(&r);
            out.push(Action::Event(Event::RouterDown { router: r }));
        }
        let due: Vec<Ipv4Addr> = self
            .burst
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, to)| *to)
            .collect();
        self.burst.retain(|(at, _)| *at > now);
        for to in due {
            let m = self.here_i_am();
            self.send(to, m, &mut out);
        }
        if matches!(self.next_hia, Some(t) if now >= t) {
            self.announce(now, &mut out);
        }
        self.review(now, &mut out);
        if matches!(self.assign_at, Some(t) if now >= t) {
            self.assign_at = None;
            self.assign(now, &mut out);
        }
        if matches!(self.resend_at, Some(t) if now >= t) {
            self.resend_at = None;
            self.resend(now, &mut out);
        }
        out
    }

    /// A datagram received on UDP 2048 from `from`.
    pub fn handle_message(&mut self, from: Ipv4Addr, bytes: &[u8], now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.left {
            return out;
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.drop_msg(from, Drop::Malformed(e.kind()), &mut out);
                return out;
            }
        };
        if !matches!(
            msg.message_type,
            MessageType::ISeeYou | MessageType::RemovalQuery
        ) {
            // Other engines' Here-I-Ams and assignments reach us in multicast groups.
            self.counters.bump("ignored.other_type");
            return out;
        }
        if msg.check_components().is_err() {
            self.drop_msg(from, Drop::Components, &mut out);
            return out;
        }
        match msg.service() {
            Some(s) if ServiceId::of(s) == ServiceId::of(&self.cfg.service) => {
                if !same_definition(s, &self.cfg.service) {
                    self.drop_msg(from, Drop::ServiceMismatch, &mut out);
                    return out;
                }
            }
            _ => {
                self.drop_msg(from, Drop::UnknownService, &mut out);
                return out;
            }
        }
        if !authenticate(bytes, &msg, self.cfg.password.as_deref()) {
            self.drop_msg(from, Drop::Security, &mut out);
            return out;
        }
        if msg.message_type == MessageType::RemovalQuery {
            self.removal_query(from, &msg, now, &mut out);
        } else {
            self.i_see_you(from, &msg, now, &mut out);
        }
        out
    }

    /// The `show` view.
    pub fn state(&self) -> EngineState {
        EngineState {
            address: self.cfg.address,
            service: ServiceId::of(&self.cfg.service),
            routers: self
                .peers
                .values()
                .map(|p| RouterState {
                    address: p.address,
                    receive_id: p.receive_id,
                    member_change: p.member_change,
                    key: (
                        v4(&p.key.address).unwrap_or(Ipv4Addr::UNSPECIFIED),
                        p.key.change_number,
                    ),
                    engines: p.caches.iter().filter_map(|c| v4(&c.address)).collect(),
                    last_heard: p.last_heard,
                })
                .collect(),
            group_routers: self.group_routers().into_iter().collect(),
            seen_by_all: self.seen_by_all().into_iter().map(|(a, _)| a).collect(),
            designated: self.designated_engine(),
            change_number: self.change_number,
            assignment_change: self.assignment_change,
            left: self.left,
            counters: self.counters.clone(),
        }
    }

    fn router_timeout(&self) -> Duration {
        tenths(self.cfg.interval, 30)
    }

    fn drop_msg(&mut self, from: Ipv4Addr, reason: Drop, out: &mut Out) {
        self.counters.bump(&format!("drop.{}", reason.kind()));
        out.push(Action::Event(Event::Dropped { from, reason }));
    }

    fn removal_query(&mut self, from: Ipv4Addr, msg: &Message, now: Instant, out: &mut Out) {
        let q = msg.components.iter().find_map(|c| match c {
            Component::RouterQuery(q) => Some(q),
            _ => None,
        });
        let Some(q) = q.filter(|q| v4(&q.target) == Some(self.cfg.address)) else {
            return self.drop_msg(from, Drop::NotForUs, out);
        };
        let router = v4(&q.router.address).unwrap_or(from);
        out.push(Action::Event(Event::Queried { router }));
        let to = self.cfg.multicast.unwrap_or(from);
        let step = self.cfg.interval / 10;
        let m = self.here_i_am();
        self.send(to, m, out);
        self.burst.push((now + step, to));
        self.burst.push((now + step * 2, to));
    }

    fn i_see_you(&mut self, from: Ipv4Addr, msg: &Message, now: Instant, out: &mut Out) {
        let me = self.cfg.address;
        let mut ident = None;
        let mut view = None;
        let mut caps = None;
        let mut acked = false;
        for c in &msg.components {
            match c {
                Component::RouterIdentity(r) => ident = Some(r),
                Component::RouterView(v) => view = Some(v),
                Component::Capabilities(c) => caps = Some(c),
                Component::CommandExtension(x) => {
                    acked |= x
                        .commands
                        .iter()
                        .any(|c| matches!(c, Command::ShutdownResponse(a) if v4(a) == Some(me)))
                }
                _ => {}
            }
        }
        let (Some(ident), Some(view)) = (ident, view) else {
            return self.drop_msg(from, Drop::Components, out);
        };
        if !ident.received_from.iter().any(|a| v4(a) == Some(me)) {
            return self.drop_msg(from, Drop::NotForUs, out);
        }
        let Some(router) = v4(&ident.router.address) else {
            return self.drop_msg(from, Drop::Address, out);
        };
        if self.shutting_down {
            if acked {
                if let Some(p) = self.peers.get_mut(&router) {
                    p.shutdown_acked = true;
                }
                if self.peers.values().all(|p| p.shutdown_acked) {
                    self.left = true;
                    self.next_hia = None;
                    self.burst.clear();
                    out.push(Action::Event(Event::Left));
                }
            }
            return;
        }
        if !supports(caps, &self.cfg) {
            self.peers.remove(&router);
            out.push(Action::Event(Event::RouterIncompatible { router }));
            return;
        }
        let send_to = self.cfg.multicast.unwrap_or(from);
        let is_new = !self.peers.contains_key(&router);
        let p = self.peers.entry(router).or_insert_with(|| Peer {
            address: router,
            send_to,
            receive_id: 0,
            member_change: 0,
            key: view.key,
            caches: Vec::new(),
            routers: Vec::new(),
            last_heard: now,
            shutdown_acked: false,
        });
        p.send_to = send_to;
        p.receive_id = ident.router.receive_id;
        p.member_change = view.member_change;
        p.key = view.key;
        p.caches = view.caches.clone();
        p.routers = view.routers.iter().filter_map(v4).collect();
        p.last_heard = now;
        if is_new {
            out.push(Action::Event(Event::RouterUp { router }));
        }
        self.review(now, out);
    }

    /// Re-derives the view after any input: a changed view is announced at once; a changed
    /// assignment basis restarts the designated engine's settling timer.
    fn review(&mut self, now: Instant, out: &mut Out) {
        if self.shutting_down || self.left {
            return;
        }
        let sig = (
            self.peers.keys().copied().collect::<Vec<_>>(),
            self.known_engines(),
        );
        if sig != self.view_sig {
            self.view_sig = sig;
            self.change_number = self.change_number.wrapping_add(1);
            if self.next_hia.is_some() {
                self.announce(now, out);
            }
        }
        let designated = self.designated_engine() == Some(self.cfg.address);
        if designated != self.designated {
            self.designated = designated;
            out.push(Action::Event(Event::Designated { now: designated }));
            if !designated {
                self.assign_at = None;
                self.resend_at = None;
                self.basis = None;
                self.pending_basis = None;
            }
        }
        if !designated {
            return;
        }
        let basis = self.basis_now();
        if self.basis.as_ref() != Some(&basis) && self.pending_basis.as_ref() != Some(&basis) {
            self.pending_basis = Some(basis);
            self.assign_at = Some(now + tenths(self.cfg.interval, 15));
            self.resend_at = None;
        }
    }

    fn known_engines(&self) -> Vec<Ipv4Addr> {
        let s: BTreeSet<Ipv4Addr> = self
            .peers
            .values()
            .flat_map(|p| p.caches.iter().filter_map(|c| v4(&c.address)))
            .collect();
        s.into_iter().collect()
    }

    fn group_routers(&self) -> BTreeSet<Ipv4Addr> {
        let mut g: BTreeSet<Ipv4Addr> = self.peers.keys().copied().collect();
        for p in self.peers.values() {
            g.extend(p.routers.iter().copied());
        }
        g
    }

    /// Engines every heard router lists, with the weight they announce.
    fn seen_by_all(&self) -> Vec<(Ipv4Addr, u16)> {
        let mut it = self.peers.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut set: BTreeMap<Ipv4Addr, u16> = first
            .caches
            .iter()
            .filter_map(|c| v4(&c.address).map(|a| (a, weight_of(c))))
            .collect();
        for p in it {
            let here: BTreeSet<Ipv4Addr> = p.caches.iter().filter_map(|c| v4(&c.address)).collect();
            set.retain(|a, _| here.contains(a));
        }
        set.into_iter().collect()
    }

    /// The lowest engine every router sees, provided this engine hears every router of the
    /// group; `None` when this engine cannot judge (it misses a router).
    fn designated_engine(&self) -> Option<Ipv4Addr> {
        let heard: BTreeSet<Ipv4Addr> = self.peers.keys().copied().collect();
        if heard.is_empty() || self.group_routers() != heard {
            return None;
        }
        self.seen_by_all().first().map(|(a, _)| *a)
    }

    fn basis_now(&self) -> Basis {
        Basis {
            group: self.group_routers().into_iter().collect(),
            changes: self
                .peers
                .values()
                .map(|p| (p.address, p.member_change))
                .collect(),
            engines: self.seen_by_all(),
        }
    }

    /// The table in force, as the routers report it (each engine's bucket bitmap), when
    /// this engine has not assigned before.
    fn table_in_force(&self) -> BucketTable<Ipv4Addr> {
        let mut t = BucketTable::unassigned();
        if let Some(p) = self.peers.values().next() {
            for c in &p.caches {
                if let (Some(a), AssignmentData::Hash(h)) = (v4(&c.address), &c.assignment) {
                    for b in h.buckets.iter() {
                        t.set_owner(b, Some(a));
                    }
                }
            }
        }
        t
    }

    fn assign(&mut self, now: Instant, out: &mut Out) {
        if !self.designated || self.peers.is_empty() {
            return;
        }
        let basis = self.basis_now();
        let engines = basis.engines.clone();
        self.assignment_change = self.assignment_change.wrapping_add(1);
        let (moved, prev) = if self.cfg.assignment.contains(AssignmentMethods::MASK) {
            let before = match &self.prev {
                Some(Prev::Mask(m)) => m.clone(),
                _ => MaskTable::unassigned(self.cfg.mask),
            };
            let next = assign_mask_values(&engines, self.cfg.mask, &before);
            (before.diff(&next).changed(), Prev::Mask(next))
        } else {
            let before = match &self.prev {
                Some(Prev::Hash(t)) => (**t).clone(),
                _ => self.table_in_force(),
            };
            let next = assign_buckets(&engines, &before);
            (before.diff(&next).changed(), Prev::Hash(Box::new(next)))
        };
        self.prev = Some(prev);
        self.basis = Some(basis);
        self.pending_basis = None;
        out.push(Action::Event(Event::AssignmentSent {
            change: self.assignment_change,
            engines: engines.iter().map(|(a, _)| *a).collect(),
            moved,
            resend: false,
        }));
        let targets: Vec<Ipv4Addr> = self.targets();
        for to in targets {
            let m = self.redirect_assign();
            self.send(to, m, out);
        }
        self.resend_at = Some(now + self.cfg.interval);
    }

    fn resend(&mut self, now: Instant, out: &mut Out) {
        if !self.designated || self.pending_basis.is_some() || self.basis.is_none() {
            return;
        }
        let me = self.cfg.address;
        let change = self.assignment_change;
        let lagging: Vec<Ipv4Addr> = self
            .peers
            .values()
            .filter(|p| !(v4(&p.key.address) == Some(me) && p.key.change_number == change))
            .map(|p| p.send_to)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if lagging.is_empty() {
            return;
        }
        out.push(Action::Event(Event::AssignmentSent {
            change,
            engines: self
                .basis
                .as_ref()
                .map(|b| b.engines.iter().map(|e| e.0).collect())
                .unwrap_or_default(),
            moved: 0,
            resend: true,
        }));
        for to in lagging {
            let m = self.redirect_assign();
            self.send(to, m, out);
        }
        self.resend_at = Some(now + self.cfg.interval);
    }

    /// Where messages to all routers go: each router, or the group once.
    fn targets(&self) -> Vec<Ipv4Addr> {
        match self.cfg.multicast {
            Some(g) => vec![g],
            None => {
                let mut t: BTreeSet<Ipv4Addr> = self.cfg.routers.iter().copied().collect();
                t.extend(self.peers.values().map(|p| p.send_to));
                t.into_iter().collect()
            }
        }
    }

    fn announce(&mut self, now: Instant, out: &mut Out) {
        for to in self.targets() {
            let m = self.here_i_am();
            self.send(to, m, out);
        }
        self.next_hia = Some(now + self.cfg.interval);
    }

    fn redirect_assign(&self) -> Message {
        let key = AssignmentKey {
            address: Address::V4(self.cfg.address),
            change_number: self.assignment_change,
        };
        let routers: Vec<RouterAssignmentElement> = self
            .peers
            .values()
            .map(|p| RouterAssignmentElement {
                address: Address::V4(p.address),
                receive_id: p.receive_id,
                change_number: p.member_change,
            })
            .collect();
        let assignment = match &self.prev {
            Some(Prev::Mask(t)) => Component::AltAssignment(AltAssignment {
                key,
                routers,
                data: AltAssignmentData::Mask(vec![MaskValueSet {
                    mask: mask_element(t.mask()),
                    values: t
                        .iter()
                        .filter_map(|(v, owner)| {
                            owner.map(|o| ValueElement {
                                src_addr: Address::V4(Ipv4Addr::from(v.src_addr)),
                                dst_addr: Address::V4(Ipv4Addr::from(v.dst_addr)),
                                src_port: v.src_port,
                                dst_port: v.dst_port,
                                cache: Address::V4(o),
                            })
                        })
                        .collect(),
                }]),
            }),
            Some(Prev::Hash(t)) => Component::AssignmentInfo(AssignmentInfo {
                key,
                routers,
                hash: to_wire(t),
            }),
            None => Component::AssignmentInfo(AssignmentInfo {
                key,
                routers,
                hash: HashAssignment::default(),
            }),
        };
        Message {
            version: self.cfg.version,
            message_type: MessageType::RedirectAssign,
            components: vec![
                Component::Security(security_component(self.cfg.password.as_deref())),
                Component::Service(self.cfg.service.clone()),
                assignment,
            ],
        }
    }

    fn here_i_am(&self) -> Message {
        let me = self.cfg.address;
        let held: BucketSet = self
            .peers
            .values()
            .next()
            .and_then(|p| p.caches.iter().find(|c| v4(&c.address) == Some(me)))
            .and_then(|c| match &c.assignment {
                AssignmentData::Hash(h) => Some(h.buckets),
                _ => None,
            })
            .unwrap_or_default();
        let assignment = if self.cfg.assignment.contains(AssignmentMethods::MASK) {
            AssignmentData::Mask(MaskAssignmentData {
                sets: vec![MaskValueSet {
                    mask: mask_element(self.cfg.mask),
                    values: Vec::new(),
                }],
                weight: self.cfg.weight,
                status: 0,
            })
        } else {
            AssignmentData::Hash(HashAssignmentData {
                buckets: held,
                weight: self.cfg.weight,
                status: 0,
            })
        };
        let mut caps = vec![
            Capability::ForwardingMethods(self.cfg.forwarding),
            Capability::AssignmentMethods(self.cfg.assignment),
            Capability::ReturnMethods(self.cfg.returns),
        ];
        if let Some(f) = self.cfg.fast_timers {
            let ms = u16::try_from(self.cfg.interval.as_millis()).unwrap_or(u16::MAX);
            caps.push(Capability::TransmitT(TransmitT {
                upper_ms: 0,
                lower_ms: ms,
            }));
            if let Some(s) = f.timeout_scale {
                caps.push(Capability::TimerScale(TimerScale {
                    timeout_upper: 0,
                    timeout_lower: s,
                    ra_upper: 0,
                    ra_lower: 0,
                }));
            }
        }
        let mut components = vec![
            Component::Security(security_component(self.cfg.password.as_deref())),
            Component::Service(self.cfg.service.clone()),
            Component::WebCacheIdentity(WebCacheIdentityInfo {
                identity: WebCacheIdentity {
                    address: Address::V4(me),
                    hash_revision: 0,
                    flags: IdentityFlags::empty(),
                    assignment,
                },
            }),
            Component::WebCacheView(WebCacheViewInfo {
                change_number: self.change_number,
                routers: self
                    .peers
                    .values()
                    .map(|p| RouterIdElement {
                        address: Address::V4(p.address),
                        receive_id: p.receive_id,
                    })
                    .collect(),
                caches: self.known_engines().into_iter().map(Address::V4).collect(),
            }),
            Component::Capabilities(CapabilitiesInfo { capabilities: caps }),
        ];
        if self.shutting_down {
            components.push(Component::CommandExtension(CommandExtension {
                commands: vec![Command::Shutdown(Address::V4(me))],
            }));
        }
        Message {
            version: self.cfg.version,
            message_type: MessageType::HereIAm,
            components,
        }
    }

    fn send(&mut self, to: Ipv4Addr, message: Message, out: &mut Out) {
        match encode(&message, self.cfg.password.as_deref()) {
            Ok(bytes) => {
                self.counters
                    .bump(&format!("tx.{}", type_name(message.message_type)));
                out.push(Action::Send(Transmit { to, message, bytes }));
            }
            Err(e) => out.push(Action::Event(Event::EmitFailed { kind: e.kind() })),
        }
    }
}

fn supports(caps: Option<&CapabilitiesInfo>, cfg: &EngineConfig) -> bool {
    let fwd = caps
        .and_then(|c| c.forwarding())
        .unwrap_or(ForwardingMethods::GRE);
    let asg = caps
        .and_then(|c| c.assignment())
        .unwrap_or(AssignmentMethods::HASH);
    let ret = caps
        .and_then(|c| c.return_methods())
        .unwrap_or(ReturnMethods::GRE);
    fwd.contains(cfg.forwarding) && asg.contains(cfg.assignment) && ret.contains(cfg.returns)
}

fn weight_of(c: &WebCacheIdentity) -> u16 {
    match &c.assignment {
        AssignmentData::Hash(h) => h.weight,
        AssignmentData::Mask(m) => m.weight,
        AssignmentData::Extended(ExtendedAssignmentData::Hash(h)) => h.weight,
        AssignmentData::Extended(ExtendedAssignmentData::Mask(m)) => m.weight,
        AssignmentData::Extended(ExtendedAssignmentData::AltMask(m)) => m.weight,
        AssignmentData::Extended(ExtendedAssignmentData::WeightStatus { weight, .. }) => *weight,
        _ => 0,
    }
}

fn mask_element(m: Mask) -> MaskElement {
    MaskElement {
        src_addr: m.src_addr(),
        dst_addr: m.dst_addr(),
        src_port: m.src_port(),
        dst_port: m.dst_port(),
    }
}

/// The id-based table as the wire's engine list and index table.
fn to_wire(t: &BucketTable<Ipv4Addr>) -> HashAssignment {
    let caches: Vec<Ipv4Addr> = t.counts().keys().copied().collect();
    let mut buckets = wire::BucketTable::unassigned();
    for b in 0..=255u8 {
        let Bucket { owner, alternate } = t.get(b);
        let entry = owner
            .and_then(|o| caches.iter().position(|c| *c == o))
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i < 0x7F)
            .map(|i| (i, alternate));
        buckets.set(b, entry);
    }
    HashAssignment {
        caches: caches.into_iter().map(Address::V4).collect(),
        buckets,
    }
}
