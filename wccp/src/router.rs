//! The router side of WCCPv2 as a pure state machine: Here-I-Am and Redirect-Assign in,
//! I-See-You, Removal-Query, redirect-table programming and events out.
//!
//! # Driving it
//!
//! A [`Router`] is driven by three calls, and never reads a clock or touches a socket:
//!
//! * [`Router::handle_message`]`(from, bytes, now)`: a datagram received on UDP 2048. The
//!   router parses and authenticates it itself (MD5 needs the bytes), so every failure is
//!   counted by kind in [`RouterState::counters`].
//! * [`Router::handle_timeout`]`(now)`: call when `now` reaches [`Router::next_timeout`].
//! * [`Router::next_timeout`]: the earliest deadline (Removal-Query, removal, flush,
//!   scheduled multicast I-See-You), or `None`.
//!
//! Each call returns [`Action`]s in the order they should be carried out: datagrams to send
//! (already signed), complete tables to program into the data plane, clears (fail open),
//! and events for logs and metrics. [`Router::state`] is the `show` view.
//!
//! # Protocol rules kept (draft-wilson-wrec-wccp-v2-01, section numbers in brackets)
//!
//! * A Here-I-Am is dropped and counted when its security fails [4.7], its service is not
//!   configured or conflicts with the group's definition (the first engine of a dynamic
//!   service without a configured definition defines it) [4.2], its sender is not on the
//!   group list, or it chose a method the router does not support [4.4-4.5].
//! * An engine becomes usable once it reflects a Receive ID the router sent it [4.3]. A
//!   reflection of either of the last two Receive IDs counts, so one lost I-See-You does not
//!   cost an engine its place. Unicast Here-I-Ams are answered at once; in a multicast group
//!   the router answers with the scheduled group I-See-You, every 9 s with 10% jitter [4.1].
//! * Each usable engine has its own interval T: the default, or what it negotiated with
//!   revision 1's Transmit_T capability (never below [`Timers::min_interval`]). Silent for
//!   2.5 T it gets a Removal-Query; silent for 3 T it is removed [4.14]. An engine that sent
//!   Timer Scale `s` is queried at `s·T − T/2` and removed at `s·T` instead. A Here-I-Am
//!   carrying the Command Extension's SHUTDOWN removes the engine at once and is answered
//!   with SHUTDOWN RESPONSE [4.15].
//! * Every change of usable engines or of reported routers increments the member change
//!   number [5.6.5].
//! * A Redirect-Assign is accepted from a usable engine when its key names that engine and
//!   its element for this router carries a Receive ID this router sent that engine and the
//!   current member change number [5.7.4]. The router does not insist that the sender is
//!   the lowest address it sees: with partial views the designated engine may not be.
//!   An assignment that does not list this router flushes the table; so does the absence of
//!   a valid assignment within 5 T of a membership change [4.8].
//! * When an engine is removed its slots are unassigned at once (its traffic is forwarded
//!   normally until the designated engine reassigns); with no usable engine the table is
//!   cleared (fail open).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::assign::{Bucket, BucketTable};
use crate::proto::{
    authenticate, earliest, encode, lowest_bit, same_definition, security_component, type_name, v4,
    Assignment, Counters, Drop, EngineRoute, MaskEntry, MaskRule, Methods, ServiceId, Table,
    Transmit, DEFAULT_INTERVAL,
};
use crate::time::{tenths, Instant, Jitter};
use crate::wire::{
    Address, AltAssignmentData, AssignmentData, AssignmentKey, AssignmentMethods, BucketSet,
    CapabilitiesInfo, Capability, Command, CommandExtension, Component, ExtendedAssignmentData,
    ForwardingMethods, HashAssignment, Message, MessageType, ReturnMethods, RouterIdElement,
    RouterIdentityInfo, RouterQueryInfo, RouterViewInfo, ServiceInfo, TimerScale, TransmitT,
    Version, WebCacheIdentity,
};

/// Router timers. The defaults are draft-01's; the multipliers are in tenths of the
/// engine's interval T so that 2.5 T is exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timers {
    /// T for engines that negotiate none (draft-01: 10 s, Squid's interval).
    pub here_i_am: Duration,
    /// Silence, in tenths of T, after which a Removal-Query is sent (25).
    pub query_after_tenths: u32,
    /// Silence, in tenths of T, after which the engine is removed (30).
    pub remove_after_tenths: u32,
    /// Time, in tenths of the default T, within which a valid assignment must follow a
    /// membership change before the table is flushed (50).
    pub flush_after_tenths: u32,
    /// Period of the multicast I-See-You (9 s), jittered by `multicast_jitter_percent`.
    pub multicast_interval: Duration,
    /// Jitter of the multicast I-See-You, in percent (10).
    pub multicast_jitter_percent: u64,
    /// The shortest T an engine may negotiate: the floor under fast timers.
    pub min_interval: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            here_i_am: DEFAULT_INTERVAL,
            query_after_tenths: 25,
            remove_after_tenths: 30,
            flush_after_tenths: 50,
            multicast_interval: Duration::from_secs(9),
            multicast_jitter_percent: 10,
            min_interval: Duration::from_millis(100),
        }
    }
}

/// One service group as the operator configures it on the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceConfig {
    /// The group (type and id).
    pub id: ServiceId,
    /// The traffic description, when the operator gives one; `None` for a dynamic service
    /// lets the first engine define it (draft-01 4.2), until the group empties again.
    pub definition: Option<ServiceInfo>,
    /// MD5 password (at most 8 bytes are used); `None` for no security.
    pub password: Option<Vec<u8>>,
    /// When set, only these engine addresses may join.
    pub group_list: Option<Vec<Ipv4Addr>>,
    /// The group's multicast address, when engines announce by multicast.
    pub multicast: Option<Ipv4Addr>,
    /// Methods this router supports for the group; all of them are advertised.
    pub methods: Methods,
    /// Timers.
    pub timers: Timers,
}

impl ServiceConfig {
    /// A unicast service with defaults: no password, no group list, every method.
    pub fn new(id: ServiceId, definition: Option<ServiceInfo>) -> ServiceConfig {
        ServiceConfig {
            id,
            definition,
            password: None,
            group_list: None,
            multicast: None,
            methods: Methods::default(),
            timers: Timers::default(),
        }
    }
}

/// The router's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterConfig {
    /// The router's identifying address (Router ID), reachable by the engines.
    pub router_id: Ipv4Addr,
    /// Its service groups.
    pub services: Vec<ServiceConfig>,
    /// Seed for the multicast I-See-You jitter (any value; fixed seeds replay exactly).
    pub jitter_seed: u64,
}

/// What the driver should do, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Send a datagram to UDP port 2048.
    Send(Transmit),
    /// Program the data plane for `service` with this complete table (replacing the old).
    Program {
        /// The service group.
        service: ServiceId,
        /// The table.
        table: Table,
    },
    /// Remove `service`'s redirection: its traffic is forwarded normally (fail open).
    Clear {
        /// The service group.
        service: ServiceId,
    },
    /// Something worth a log line and a counter.
    Event(Event),
}

/// Why an engine left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RemovalReason {
    /// Silent past its timeout.
    Timeout,
    /// It sent SHUTDOWN.
    Shutdown,
    /// A reconfiguration took it off the group list.
    GroupList,
}

/// Why [`Router::reconfigure`] could not apply a configuration in place: the driver then
/// starts the group afresh with it (its engines re-join within a Here-I-Am or two).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// No group with this id is configured.
    #[error("no service group {0:?}")]
    UnknownService(ServiceId),
    /// The traffic definition changed: the engines' own definitions no longer agree.
    #[error("the service definition changed")]
    DefinitionChanged,
    /// The multicast address changed: engines announce elsewhere now.
    #[error("the multicast address changed")]
    MulticastChanged,
    /// The allowed methods changed: what each engine negotiated may no longer hold.
    #[error("the allowed methods changed")]
    MethodsChanged,
}

/// Why the table was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FlushReason {
    /// No valid assignment within 5 T of a membership change.
    NoAssignment,
    /// An assignment that does not list this router.
    NotListed,
    /// No usable engine left.
    NoEngine,
}

/// Notable happenings, each with a stable [`Event::kind`] for counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Event {
    /// A dynamic service took its definition from the first engine.
    ServiceDefined {
        /// The group.
        service: ServiceId,
        /// The engine that defined it.
        engine: Ipv4Addr,
    },
    /// An engine became usable.
    EngineUsable {
        /// The group.
        service: ServiceId,
        /// The engine.
        engine: Ipv4Addr,
        /// Its interval T.
        interval_ms: u64,
    },
    /// A Removal-Query went to a silent engine.
    RemovalQuery {
        /// The group.
        service: ServiceId,
        /// The engine.
        engine: Ipv4Addr,
    },
    /// An engine was removed from the view.
    EngineRemoved {
        /// The group.
        service: ServiceId,
        /// The engine.
        engine: Ipv4Addr,
        /// Why.
        reason: RemovalReason,
    },
    /// A Redirect-Assign was accepted and programmed.
    AssignmentAccepted {
        /// The group.
        service: ServiceId,
        /// The designated engine (the key's address).
        designated: Ipv4Addr,
        /// The key's change number.
        change: u32,
    },
    /// The table was flushed (a Clear action accompanies it when something was programmed).
    Flushed {
        /// The group.
        service: ServiceId,
        /// Why.
        reason: FlushReason,
    },
    /// A received message was ignored.
    Dropped {
        /// The sender.
        from: Ipv4Addr,
        /// Why.
        reason: Drop,
    },
    /// A message could not be emitted (a bug: every message built here should emit).
    EmitFailed {
        /// The wire error's kind.
        kind: &'static str,
    },
}

impl Event {
    /// A stable name for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ServiceDefined { .. } => "service_defined",
            Event::EngineUsable { .. } => "engine_usable",
            Event::RemovalQuery { .. } => "removal_query",
            Event::EngineRemoved { .. } => "engine_removed",
            Event::AssignmentAccepted { .. } => "assignment_accepted",
            Event::Flushed { .. } => "flushed",
            Event::Dropped { .. } => "dropped",
            Event::EmitFailed { .. } => "emit_failed",
        }
    }
}

/// `show`: the whole router.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterState {
    /// Router ID.
    pub router_id: Ipv4Addr,
    /// Per service group.
    pub services: Vec<ServiceState>,
    /// Messages received by type, and drops by reason (`drop.<reason>`, wire errors as
    /// `drop.<wire kind>`).
    pub counters: Counters,
}

/// `show`: one service group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceState {
    /// The group.
    pub service: ServiceId,
    /// The traffic description in force, if any.
    pub definition: Option<ServiceInfo>,
    /// Member change number.
    pub member_change: u32,
    /// Last Receive ID sent.
    pub receive_id: u32,
    /// The key of the last accepted assignment: (designated engine, change number).
    pub key: Option<(Ipv4Addr, u32)>,
    /// The engine whose assignment is in force.
    pub designated: Option<Ipv4Addr>,
    /// Routers reported by the engines.
    pub routers: Vec<Ipv4Addr>,
    /// Engines, usable or waiting.
    pub engines: Vec<EngineState>,
    /// The programmed table, if any.
    pub table: Option<Table>,
    /// When the table will be flushed unless a valid assignment arrives.
    pub flush_at: Option<Instant>,
    /// Drops and events of this group.
    pub counters: Counters,
}

/// Where an engine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EngineStatus {
    /// Answered, but has not reflected a Receive ID yet.
    Waiting,
    /// In the view.
    Usable,
    /// Usable, silent, and sent a Removal-Query.
    Queried,
}

/// `show`: one engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineState {
    /// Its address.
    pub address: Ipv4Addr,
    /// Where it stands.
    pub status: EngineStatus,
    /// Weight it announces.
    pub weight: u16,
    /// Buckets or mask values it holds in the programmed table.
    pub slots: usize,
    /// Its interval T, in milliseconds.
    pub interval_ms: u64,
    /// When it was last heard.
    pub last_heard: Instant,
    /// Negotiated methods.
    pub forwarding: ForwardingMethods,
    /// Negotiated assignment method.
    pub assignment: AssignmentMethods,
    /// Negotiated return method.
    pub returns: ReturnMethods,
}

#[derive(Debug, Clone)]
struct Engine {
    address: Ipv4Addr,
    reply_to: Ipv4Addr,
    identity: WebCacheIdentity,
    usable: bool,
    queried: bool,
    last_heard: Instant,
    rids: [u32; 2],
    interval: Duration,
    timer_scale: Option<u8>,
    offered_timers: bool,
    forwarding: ForwardingMethods,
    assignment: AssignmentMethods,
    returns: ReturnMethods,
    routers: BTreeSet<Ipv4Addr>,
    version: Version,
}

impl Engine {
    fn weight(&self) -> u16 {
        match &self.identity.assignment {
            AssignmentData::Hash(h) => h.weight,
            AssignmentData::Mask(m) => m.weight,
            AssignmentData::Extended(ExtendedAssignmentData::Hash(h)) => h.weight,
            AssignmentData::Extended(ExtendedAssignmentData::Mask(m)) => m.weight,
            AssignmentData::Extended(ExtendedAssignmentData::AltMask(m)) => m.weight,
            AssignmentData::Extended(ExtendedAssignmentData::WeightStatus { weight, .. }) => {
                *weight
            }
            _ => 0,
        }
    }

    fn remove_after(&self, timers: &Timers) -> Duration {
        match self.timer_scale {
            Some(s) => self.interval.saturating_mul(u32::from(s.max(1))),
            None => tenths(self.interval, timers.remove_after_tenths),
        }
    }

    fn query_after(&self, timers: &Timers) -> Duration {
        match self.timer_scale {
            Some(_) => self.remove_after(timers).saturating_sub(self.interval / 2),
            None => tenths(self.interval, timers.query_after_tenths),
        }
    }

    fn route(&self) -> EngineRoute {
        EngineRoute {
            address: self.address,
            forwarding: self.forwarding,
            returns: self.returns,
        }
    }
}

#[derive(Debug)]
struct Service {
    cfg: ServiceConfig,
    definition: Option<ServiceInfo>,
    receive_id: u32,
    member_change: u32,
    key: AssignmentKey,
    engines: BTreeMap<Ipv4Addr, Engine>,
    routers: BTreeSet<Ipv4Addr>,
    table: Option<Table>,
    designated: Option<Ipv4Addr>,
    flush_at: Option<Instant>,
    next_multicast: Option<Instant>,
    counters: Counters,
}

/// The router state machine: every configured service group, its view and its table.
#[derive(Debug)]
pub struct Router {
    router_id: Ipv4Addr,
    services: Vec<Service>,
    jitter: Jitter,
    counters: Counters,
}

/// Outgoing actions collected during one call.
type Out = Vec<Action>;

impl Router {
    /// A router that has seen nothing yet (also what a restart looks like to the group).
    pub fn new(config: RouterConfig) -> Router {
        let services = config
            .services
            .into_iter()
            .map(|cfg| Service {
                definition: cfg.definition.clone(),
                cfg,
                receive_id: 0,
                member_change: 0,
                key: AssignmentKey {
                    address: Address::UNSPECIFIED,
                    change_number: 0,
                },
                engines: BTreeMap::new(),
                routers: BTreeSet::new(),
                table: None,
                designated: None,
                flush_at: None,
                next_multicast: None,
                counters: Counters::default(),
            })
            .collect();
        Router {
            router_id: config.router_id,
            services,
            jitter: Jitter::new(config.jitter_seed),
            counters: Counters::default(),
        }
    }

    /// Applies a changed configuration of one group without dropping its view, so a
    /// SIGHUP that changes a password, the timers or the group list costs no rebalance.
    /// Engines the new group list leaves out are removed at once (their buckets move);
    /// engines still on the old password fail authentication from their next message and
    /// time out as silent engines do. Changes that the view cannot survive (definition,
    /// multicast address, methods) are refused, and the group is left as it was.
    pub fn reconfigure(
        &mut self,
        cfg: ServiceConfig,
        now: Instant,
    ) -> Result<Vec<Action>, ReconfigureError> {
        let s = self
            .services
            .iter_mut()
            .find(|s| s.cfg.id == cfg.id)
            .ok_or(ReconfigureError::UnknownService(cfg.id))?;
        if cfg.definition != s.cfg.definition {
            return Err(ReconfigureError::DefinitionChanged);
        }
        if cfg.multicast != s.cfg.multicast {
            return Err(ReconfigureError::MulticastChanged);
        }
        if cfg.methods != s.cfg.methods {
            return Err(ReconfigureError::MethodsChanged);
        }
        let mut out = Vec::new();
        if let Some(list) = &cfg.group_list {
            let excluded: Vec<Ipv4Addr> = s
                .engines
                .keys()
                .copied()
                .filter(|a| !list.contains(a))
                .collect();
            for address in excluded {
                remove_engine(s, address, RemovalReason::GroupList, now, &mut out);
            }
            forget_definition_if_empty(s);
        }
        if cfg.timers.flush_after_tenths != s.cfg.timers.flush_after_tenths
            || cfg.timers.here_i_am != s.cfg.timers.here_i_am
        {
            if let Some(at) = s.flush_at {
                let old = tenths(s.cfg.timers.here_i_am, s.cfg.timers.flush_after_tenths);
                let new = tenths(cfg.timers.here_i_am, cfg.timers.flush_after_tenths);
                s.flush_at = Some(at - old + new);
            }
        }
        if cfg.multicast.is_some()
            && cfg.timers.multicast_interval != s.cfg.timers.multicast_interval
        {
            s.next_multicast = s.next_multicast.map(|_| now);
        }
        s.cfg = cfg;
        Ok(out)
    }

    /// The router's identifying address.
    pub fn router_id(&self) -> Ipv4Addr {
        self.router_id
    }

    /// A datagram received on UDP 2048 from `from`.
    pub fn handle_message(&mut self, from: Ipv4Addr, bytes: &[u8], now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.drop_msg(None, from, Drop::Malformed(e.kind()), &mut out);
                return out;
            }
        };
        self.counters
            .bump(&format!("rx.{}", type_name(msg.message_type)));
        if !matches!(
            msg.message_type,
            MessageType::HereIAm | MessageType::RedirectAssign
        ) {
            // Another router's group I-See-You, or a looped-back query: not for us.
            self.drop_msg(None, from, Drop::UnexpectedType, &mut out);
            return out;
        }
        if msg.check_components().is_err() {
            self.drop_msg(None, from, Drop::Components, &mut out);
            return out;
        }
        let Some(info) = msg.service() else {
            self.drop_msg(None, from, Drop::Components, &mut out);
            return out;
        };
        let id = ServiceId::of(info);
        let Some(si) = self.services.iter().position(|s| s.cfg.id == id) else {
            self.drop_msg(None, from, Drop::UnknownService, &mut out);
            return out;
        };
        if !authenticate(bytes, &msg, self.services[si].cfg.password.as_deref()) {
            self.drop_msg(Some(si), from, Drop::Security, &mut out);
            return out;
        }
        match msg.message_type {
            MessageType::HereIAm => self.here_i_am(si, from, &msg, now, &mut out),
            _ => self.redirect_assign(si, from, &msg, &mut out),
        }
        out
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for si in 0..self.services.len() {
            self.service_timers(si, now, &mut out);
        }
        out
    }

    /// The earliest instant at which [`Router::handle_timeout`] has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        let mut next = None;
        for s in &self.services {
            next = earliest(next, s.flush_at);
            next = earliest(next, s.next_multicast);
            for e in s.engines.values() {
                let t = if e.usable && !e.queried {
                    e.last_heard + e.query_after(&s.cfg.timers)
                } else {
                    e.last_heard + e.remove_after(&s.cfg.timers)
                };
                next = earliest(next, Some(t));
            }
        }
        next
    }

    /// The `show` view.
    pub fn state(&self) -> RouterState {
        RouterState {
            router_id: self.router_id,
            services: self.services.iter().map(service_state).collect(),
            counters: self.counters.clone(),
        }
    }

    fn drop_msg(&mut self, si: Option<usize>, from: Ipv4Addr, reason: Drop, out: &mut Out) {
        let name = format!("drop.{}", reason.kind());
        self.counters.bump(&name);
        if let Some(s) = si.and_then(|i| self.services.get_mut(i)) {
            s.counters.bump(&name);
        }
        out.push(Action::Event(Event::Dropped { from, reason }));
    }

    fn here_i_am(&mut self, si: usize, from: Ipv4Addr, msg: &Message, now: Instant, out: &mut Out) {
        let router_id = self.router_id;
        let (identity, view) = match (
            msg.components.iter().find_map(|c| match c {
                Component::WebCacheIdentity(w) => Some(&w.identity),
                _ => None,
            }),
            msg.components.iter().find_map(|c| match c {
                Component::WebCacheView(v) => Some(v),
                _ => None,
            }),
        ) {
            (Some(i), Some(v)) => (i, v),
            _ => return self.drop_msg(Some(si), from, Drop::Components, out),
        };
        let Some(address) = v4(&identity.address) else {
            return self.drop_msg(Some(si), from, Drop::Address, out);
        };
        let Some(info) = msg.service() else {
            return self.drop_msg(Some(si), from, Drop::Components, out);
        };
        let s = &mut self.services[si];
        if let Some(list) = &s.cfg.group_list {
            if !list.contains(&address) {
                return self.drop_msg(Some(si), from, Drop::NotInGroupList, out);
            }
        }
        match &s.definition {
            Some(def) if !same_definition(def, info) => {
                return self.drop_msg(Some(si), from, Drop::ServiceMismatch, out);
            }
            Some(_) => {}
            None => {
                s.definition = Some(info.clone());
                out.push(Action::Event(Event::ServiceDefined {
                    service: s.cfg.id,
                    engine: address,
                }));
            }
        }
        // Methods: absent means the defaults (GRE, hash, GRE); each chosen bit must be
        // supported, and the lowest one is taken if an engine names several.
        let caps = msg.capabilities();
        let fwd = caps
            .and_then(|c| c.forwarding())
            .unwrap_or(ForwardingMethods::GRE);
        let asg = caps
            .and_then(|c| c.assignment())
            .unwrap_or(AssignmentMethods::HASH);
        let ret = caps
            .and_then(|c| c.return_methods())
            .unwrap_or(ReturnMethods::GRE);
        let m = s.cfg.methods;
        if fwd.bits() == 0
            || !m.forwarding.contains(fwd)
            || asg.bits() == 0
            || !m.assignment.contains(asg)
            || ret.bits() == 0
            || !m.returns.contains(ret)
        {
            return self.drop_msg(Some(si), from, Drop::UnsupportedMethod, out);
        }
        let mut interval = s.cfg.timers.here_i_am;
        let mut timer_scale = None;
        let mut offered_timers = false;
        for c in caps.map(|c| c.capabilities.as_slice()).unwrap_or(&[]) {
            match c {
                Capability::TransmitT(t) => {
                    offered_timers = true;
                    // The lowest value the engine accepts, raised to the router's floor.
                    let want = Duration::from_millis(u64::from(t.lower_ms.max(1)));
                    interval = want.max(s.cfg.timers.min_interval);
                }
                Capability::TimerScale(t) => {
                    offered_timers = true;
                    timer_scale = Some(t.timeout_lower.max(1));
                }
                _ => {}
            }
        }
        let reflected = view
            .routers
            .iter()
            .find(|r| v4(&r.address) == Some(router_id))
            .map(|r| r.receive_id);
        let reported: BTreeSet<Ipv4Addr> =
            view.routers.iter().filter_map(|r| v4(&r.address)).collect();
        let shutdown = msg.components.iter().any(|c| match c {
            Component::CommandExtension(x) => x
                .commands
                .iter()
                .any(|c| matches!(c, Command::Shutdown(a) if v4(a) == Some(address))),
            _ => false,
        });

        let id = s.cfg.id;
        if shutdown {
            let was = s.engines.get(&address).cloned();
            if let Some(e) = was {
                remove_engine(s, address, RemovalReason::Shutdown, now, out);
                let isy = isy_for(s, router_id, &e, Some(address));
                self.send(si, isy, out);
            } else {
                // Unknown engine: still acknowledge, so it can stop retrying.
                let e = new_engine(address, from, identity, now, interval, msg.version);
                let isy = isy_for(&mut self.services[si], router_id, &e, Some(address));
                self.send(si, isy, out);
            }
            return;
        }

        let entry = s
            .engines
            .entry(address)
            .or_insert_with(|| new_engine(address, from, identity, now, interval, msg.version));
        entry.reply_to = from;
        entry.identity = identity.clone();
        entry.last_heard = now;
        entry.queried = false;
        entry.interval = interval;
        entry.timer_scale = timer_scale;
        entry.offered_timers = offered_timers;
        entry.forwarding = ForwardingMethods(lowest_bit(fwd.bits()));
        entry.assignment = AssignmentMethods(lowest_bit(asg.bits()));
        entry.returns = ReturnMethods(lowest_bit(ret.bits()));
        entry.routers = reported;
        entry.version = msg.version;
        let valid = matches!(reflected, Some(r) if r != 0 && entry.rids.contains(&r));
        let mut changed = false;
        if valid && !entry.usable {
            entry.usable = true;
            changed = true;
            out.push(Action::Event(Event::EngineUsable {
                service: id,
                engine: address,
                interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            }));
        }
        let routers: BTreeSet<Ipv4Addr> = s
            .engines
            .values()
            .filter(|e| e.usable)
            .flat_map(|e| e.routers.iter().copied())
            .collect();
        if routers != s.routers {
            s.routers = routers;
            changed = true;
        }
        if changed {
            membership_changed(s, now);
        }
        if s.cfg.multicast.is_none() {
            let e = s.engines.get(&address).cloned();
            if let Some(e) = e {
                let isy = isy_for(s, router_id, &e, None);
                self.send(si, isy, out);
            }
        } else if s.next_multicast.is_none() {
            let d = self.jitter.spread(
                s.cfg.timers.multicast_interval,
                s.cfg.timers.multicast_jitter_percent,
            );
            s.next_multicast = Some(now + d);
        }
    }

    fn redirect_assign(&mut self, si: usize, from: Ipv4Addr, msg: &Message, out: &mut Out) {
        let router_id = self.router_id;
        let parts = msg.components.iter().find_map(|c| match c {
            Component::AssignmentInfo(a) => Some((a.key, &a.routers, Parsed::Hash(&a.hash))),
            Component::AltAssignment(a) => match &a.data {
                AltAssignmentData::Hash(h) => Some((a.key, &a.routers, Parsed::Hash(h))),
                AltAssignmentData::Mask(sets) => Some((a.key, &a.routers, Parsed::Mask(sets))),
                _ => None,
            },
            _ => None,
        });
        let Some((key, routers, parsed)) = parts else {
            return self.drop_msg(Some(si), from, Drop::Components, out);
        };
        let Some(designated) = v4(&key.address) else {
            return self.drop_msg(Some(si), from, Drop::Address, out);
        };
        let s = &mut self.services[si];
        let Some(engine) = s.engines.get(&designated).filter(|e| e.usable) else {
            return self.drop_msg(Some(si), from, Drop::AssignerNotUsable, out);
        };
        let rids = engine.rids;
        let Some(mine) = routers.iter().find(|r| v4(&r.address) == Some(router_id)) else {
            // Not listed: flush (draft-01 4.8).
            s.key = key;
            s.designated = Some(designated);
            s.flush_at = None;
            flush(s, FlushReason::NotListed, out);
            return;
        };
        if mine.receive_id == 0
            || !rids.contains(&mine.receive_id)
            || mine.change_number != s.member_change
        {
            return self.drop_msg(Some(si), from, Drop::StaleAssignment, out);
        }
        let table = build_table(s, parsed);
        s.key = key;
        s.designated = Some(designated);
        s.flush_at = None;
        out.push(Action::Event(Event::AssignmentAccepted {
            service: s.cfg.id,
            designated,
            change: key.change_number,
        }));
        program(s, table, out);
    }

    fn service_timers(&mut self, si: usize, now: Instant, out: &mut Out) {
        let router_id = self.router_id;
        let s = &mut self.services[si];
        let timers = s.cfg.timers.clone();
        let mut queries = Vec::new();
        let mut removals = Vec::new();
        for e in s.engines.values_mut() {
            if now >= e.last_heard + e.remove_after(&timers) {
                removals.push((e.address, e.usable));
            } else if e.usable && !e.queried && now >= e.last_heard + e.query_after(&timers) {
                e.queried = true;
                queries.push(e.clone());
            }
        }
        let mut sends = Vec::new();
        for e in queries {
            out.push(Action::Event(Event::RemovalQuery {
                service: s.cfg.id,
                engine: e.address,
            }));
            let sent_to = s.cfg.multicast.unwrap_or(router_id);
            let q = Message {
                version: e.version,
                message_type: MessageType::RemovalQuery,
                components: vec![
                    Component::Security(security_component(s.cfg.password.as_deref())),
                    Component::Service(
                        s.definition
                            .clone()
                            .unwrap_or_else(|| service_info(s.cfg.id)),
                    ),
                    Component::RouterQuery(RouterQueryInfo {
                        router: RouterIdElement {
                            address: Address::V4(router_id),
                            receive_id: e.rids[1],
                        },
                        sent_to: Address::V4(sent_to),
                        target: Address::V4(e.address),
                    }),
                ],
            };
            sends.push((e.reply_to, q));
        }
        for (to, q) in sends {
            self.send_to(si, to, q, out);
        }
        let s = &mut self.services[si];
        for (a, usable) in removals {
            if usable {
                remove_engine(s, a, RemovalReason::Timeout, now, out);
            } else {
                s.engines.remove(&a);
            }
        }
        forget_definition_if_empty(s);
        if matches!(s.flush_at, Some(t) if now >= t) {
            s.flush_at = None;
            flush(s, FlushReason::NoAssignment, out);
        }
        if matches!(s.next_multicast, Some(t) if now >= t) {
            let s = &mut self.services[si];
            if s.engines.is_empty() {
                s.next_multicast = None;
            } else {
                let d = self.jitter.spread(
                    s.cfg.timers.multicast_interval,
                    s.cfg.timers.multicast_jitter_percent,
                );
                s.next_multicast = Some(now + d);
                let isy = multicast_isy(s, router_id);
                self.send(si, isy, out);
            }
        }
    }

    fn send(&mut self, si: usize, t: Option<(Ipv4Addr, Message)>, out: &mut Out) {
        if let Some((to, m)) = t {
            self.send_to(si, to, m, out);
        }
    }

    fn send_to(&mut self, si: usize, to: Ipv4Addr, message: Message, out: &mut Out) {
        let pw = self.services[si].cfg.password.clone();
        match encode(&message, pw.as_deref()) {
            Ok(bytes) => {
                self.counters
                    .bump(&format!("tx.{}", type_name(message.message_type)));
                out.push(Action::Send(Transmit { to, message, bytes }));
            }
            Err(e) => out.push(Action::Event(Event::EmitFailed { kind: e.kind() })),
        }
    }
}

enum Parsed<'a> {
    Hash(&'a HashAssignment),
    Mask(&'a Vec<crate::wire::MaskValueSet>),
}

fn new_engine(
    address: Ipv4Addr,
    from: Ipv4Addr,
    identity: &WebCacheIdentity,
    now: Instant,
    interval: Duration,
    version: Version,
) -> Engine {
    Engine {
        address,
        reply_to: from,
        identity: identity.clone(),
        usable: false,
        queried: false,
        last_heard: now,
        rids: [0, 0],
        interval,
        timer_scale: None,
        offered_timers: false,
        forwarding: ForwardingMethods::GRE,
        assignment: AssignmentMethods::HASH,
        returns: ReturnMethods::GRE,
        routers: BTreeSet::new(),
        version,
    }
}

fn service_info(id: ServiceId) -> ServiceInfo {
    if id.dynamic {
        ServiceInfo::dynamic(id.id, 0, 0, crate::wire::ServiceFlags::empty(), &[])
    } else {
        let mut s = ServiceInfo::web_cache();
        s.service_id = id.id;
        s
    }
}

fn membership_changed(s: &mut Service, now: Instant) {
    s.member_change = s.member_change.wrapping_add(1);
    let d = tenths(s.cfg.timers.here_i_am, s.cfg.timers.flush_after_tenths);
    s.flush_at = Some(now + d);
}

fn forget_definition_if_empty(s: &mut Service) {
    if s.engines.is_empty() && s.cfg.definition.is_none() {
        s.definition = None;
    }
}

fn remove_engine(
    s: &mut Service,
    address: Ipv4Addr,
    reason: RemovalReason,
    now: Instant,
    out: &mut Out,
) {
    let Some(e) = s.engines.remove(&address) else {
        return;
    };
    if !e.usable {
        return;
    }
    out.push(Action::Event(Event::EngineRemoved {
        service: s.cfg.id,
        engine: address,
        reason,
    }));
    s.routers = s
        .engines
        .values()
        .filter(|e| e.usable)
        .flat_map(|e| e.routers.iter().copied())
        .collect();
    membership_changed(s, now);
    if !s.engines.values().any(|e| e.usable) {
        s.flush_at = None;
        flush(s, FlushReason::NoEngine, out);
        return;
    }
    if let Some(t) = &s.table {
        let stripped = Table {
            assignment: t.assignment.without(address),
            engines: t
                .engines
                .iter()
                .copied()
                .filter(|r| r.address != address)
                .collect(),
        };
        program(s, stripped, out);
    }
}

fn flush(s: &mut Service, reason: FlushReason, out: &mut Out) {
    out.push(Action::Event(Event::Flushed {
        service: s.cfg.id,
        reason,
    }));
    s.counters.bump(&format!("flush.{}", flush_name(reason)));
    if s.table.take().is_some() {
        out.push(Action::Clear { service: s.cfg.id });
    }
}

fn flush_name(r: FlushReason) -> &'static str {
    match r {
        FlushReason::NoAssignment => "no_assignment",
        FlushReason::NotListed => "not_listed",
        FlushReason::NoEngine => "no_engine",
    }
}

/// Programs `table` unless it is what is already programmed; an empty table clears.
fn program(s: &mut Service, table: Table, out: &mut Out) {
    if table.is_empty() {
        if s.table.take().is_some() {
            out.push(Action::Clear { service: s.cfg.id });
        }
        return;
    }
    if s.table.as_ref() == Some(&table) {
        return;
    }
    s.table = Some(table.clone());
    out.push(Action::Program {
        service: s.cfg.id,
        table,
    });
}

/// The received assignment in engine addresses, keeping only engines usable here (the data
/// plane cannot reach an engine it has negotiated nothing with).
fn build_table(s: &mut Service, parsed: Parsed<'_>) -> Table {
    let usable = |a: Option<Ipv4Addr>| a.and_then(|a| s.engines.get(&a).filter(|e| e.usable));
    let mut names = BTreeSet::new();
    let assignment = match parsed {
        Parsed::Hash(h) => {
            let caches: Vec<Option<Ipv4Addr>> = h
                .caches
                .iter()
                .map(|c| usable(v4(c)).map(|e| e.address))
                .collect();
            let t = BucketTable::from_fn(|b| match h.buckets.get(b) {
                Some((i, alt)) => {
                    let owner = caches.get(usize::from(i)).copied().flatten();
                    if let Some(o) = owner {
                        names.insert(o);
                    }
                    Bucket {
                        owner,
                        alternate: alt,
                    }
                }
                None => Bucket {
                    owner: None,
                    alternate: false,
                },
            });
            Assignment::Hash(Box::new(t))
        }
        Parsed::Mask(sets) => Assignment::Mask(
            sets.iter()
                .map(|set| MaskRule {
                    mask: set.mask,
                    values: set
                        .values
                        .iter()
                        .filter_map(|v| {
                            let e = usable(v4(&v.cache))?;
                            names.insert(e.address);
                            Some(MaskEntry {
                                src_addr: v.src_addr.to_field(),
                                dst_addr: v.dst_addr.to_field(),
                                src_port: v.src_port,
                                dst_port: v.dst_port,
                                engine: e.address,
                            })
                        })
                        .collect(),
                })
                .collect(),
        ),
    };
    let engines = names
        .iter()
        .filter_map(|a| s.engines.get(a).map(Engine::route))
        .collect();
    Table {
        assignment,
        engines,
    }
}

fn capabilities_for(s: &Service, e: Option<&Engine>) -> CapabilitiesInfo {
    let m = s.cfg.methods;
    let mut caps = vec![
        Capability::ForwardingMethods(m.forwarding),
        Capability::AssignmentMethods(m.assignment),
        Capability::ReturnMethods(m.returns),
    ];
    if let Some(e) = e.filter(|e| e.offered_timers) {
        let ms = u16::try_from(e.interval.as_millis()).unwrap_or(u16::MAX);
        caps.push(Capability::TransmitT(TransmitT {
            upper_ms: 0,
            lower_ms: ms,
        }));
        if let Some(sc) = e.timer_scale {
            caps.push(Capability::TimerScale(TimerScale {
                timeout_upper: 0,
                timeout_lower: sc,
                ra_upper: 0,
                ra_lower: 0,
            }));
        }
    }
    CapabilitiesInfo { capabilities: caps }
}

fn router_view(s: &Service) -> RouterViewInfo {
    RouterViewInfo {
        member_change: s.member_change,
        key: s.key,
        routers: s.routers.iter().map(|r| Address::V4(*r)).collect(),
        caches: s
            .engines
            .values()
            .filter(|e| e.usable)
            .map(|e| view_identity(s, e))
            .collect(),
    }
}

/// An engine's identity as the router reports it: what the engine sent, with the hash
/// buckets it holds in the programmed table, so that any engine (a new designated one after
/// a takeover) can rebuild the table in force and move as few buckets as possible.
fn view_identity(s: &Service, e: &Engine) -> WebCacheIdentity {
    let mut id = e.identity.clone();
    if let AssignmentData::Hash(h) = &mut id.assignment {
        h.buckets = match s.table.as_ref().map(|t| &t.assignment) {
            Some(Assignment::Hash(t)) => (0..=255u8)
                .filter(|b| t.owner(*b) == Some(e.address))
                .collect(),
            _ => BucketSet::default(),
        };
    }
    id
}

fn next_rid(s: &mut Service) -> u32 {
    s.receive_id = s.receive_id.wrapping_add(1);
    if s.receive_id == 0 {
        s.receive_id = 1;
    }
    s.receive_id
}

/// The unicast I-See-You answering one engine (with SHUTDOWN RESPONSE when `shutdown`).
fn isy_for(
    s: &mut Service,
    router_id: Ipv4Addr,
    e: &Engine,
    shutdown: Option<Ipv4Addr>,
) -> Option<(Ipv4Addr, Message)> {
    let rid = next_rid(s);
    if let Some(entry) = s.engines.get_mut(&e.address) {
        entry.rids = [entry.rids[1], rid];
    }
    let mut components = vec![
        Component::Security(security_component(s.cfg.password.as_deref())),
        Component::Service(
            s.definition
                .clone()
                .unwrap_or_else(|| service_info(s.cfg.id)),
        ),
        Component::RouterIdentity(RouterIdentityInfo {
            router: RouterIdElement {
                address: Address::V4(router_id),
                receive_id: rid,
            },
            sent_to: Address::V4(router_id),
            received_from: vec![Address::V4(e.address)],
        }),
        Component::RouterView(router_view(s)),
        Component::Capabilities(capabilities_for(s, Some(e))),
    ];
    if let Some(a) = shutdown {
        components.push(Component::CommandExtension(CommandExtension {
            commands: vec![Command::ShutdownResponse(Address::V4(a))],
        }));
    }
    Some((
        e.reply_to,
        Message {
            version: e.version,
            message_type: MessageType::ISeeYou,
            components,
        },
    ))
}

/// The scheduled group I-See-You: addressed to every engine heard since the last one.
fn multicast_isy(s: &mut Service, router_id: Ipv4Addr) -> Option<(Ipv4Addr, Message)> {
    let group = s.cfg.multicast?;
    let rid = next_rid(s);
    let mut received_from = Vec::new();
    for e in s.engines.values_mut() {
        e.rids = [e.rids[1], rid];
        received_from.push(Address::V4(e.address));
    }
    let version = s
        .engines
        .values()
        .map(|e| e.version)
        .next()
        .unwrap_or(Version::V2);
    let components = vec![
        Component::Security(security_component(s.cfg.password.as_deref())),
        Component::Service(
            s.definition
                .clone()
                .unwrap_or_else(|| service_info(s.cfg.id)),
        ),
        Component::RouterIdentity(RouterIdentityInfo {
            router: RouterIdElement {
                address: Address::V4(router_id),
                receive_id: rid,
            },
            sent_to: Address::V4(group),
            received_from,
        }),
        Component::RouterView(router_view(s)),
        Component::Capabilities(capabilities_for(s, None)),
    ];
    Some((
        group,
        Message {
            version,
            message_type: MessageType::ISeeYou,
            components,
        },
    ))
}

fn service_state(s: &Service) -> ServiceState {
    let counts = s
        .table
        .as_ref()
        .map(|t| t.assignment.counts())
        .unwrap_or_default();
    ServiceState {
        service: s.cfg.id,
        definition: s.definition.clone(),
        member_change: s.member_change,
        receive_id: s.receive_id,
        key: v4(&s.key.address)
            .filter(|a| !a.is_unspecified())
            .map(|a| (a, s.key.change_number)),
        designated: s.designated,
        routers: s.routers.iter().copied().collect(),
        engines: s
            .engines
            .values()
            .map(|e| EngineState {
                address: e.address,
                status: match (e.usable, e.queried) {
                    (false, _) => EngineStatus::Waiting,
                    (true, false) => EngineStatus::Usable,
                    (true, true) => EngineStatus::Queried,
                },
                weight: e.weight(),
                slots: counts.get(&e.address).copied().unwrap_or(0),
                interval_ms: u64::try_from(e.interval.as_millis()).unwrap_or(u64::MAX),
                last_heard: e.last_heard,
                forwarding: e.forwarding,
                assignment: e.assignment,
                returns: e.returns,
            })
            .collect(),
        table: s.table.clone(),
        flush_at: s.flush_at,
        counters: s.counters.clone(),
    }
}
