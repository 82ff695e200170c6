//! What the router and engine state machines share: the outgoing datagram, the redirect
//! table they agree on, method and timer configuration, security, and counters.
//!
//! Signing is done here, not by the caller: a [`Transmit`] carries both the typed message
//! (for logs and tests) and its bytes, already MD5-signed when the service has a password,
//! so a daemon only writes `bytes` to its socket and cannot forget to sign.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::assign::BucketTable;
use crate::time::Instant;
use crate::wire::{
    self, AssignmentMethods, ForwardingMethods, MaskElement, Message, ReturnMethods, SecurityInfo,
    ServiceInfo, ServiceType,
};

/// One datagram to send to UDP port 2048 of `to` (a host, or a multicast group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transmit {
    /// Destination address.
    pub to: Ipv4Addr,
    /// The message, as typed components (its MD5 digest field is zero here).
    pub message: Message,
    /// The UDP payload: `message` emitted and, when the service has a password, signed.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// A service group's identity: its type and id (a standard service and a dynamic one may
/// share an id and are different groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceId {
    /// True for a dynamic service (type 1), false for a well-known one (type 0).
    pub dynamic: bool,
    /// The service id.
    pub id: u8,
}

impl ServiceId {
    /// The group a Service Info component names.
    pub fn of(info: &ServiceInfo) -> ServiceId {
        ServiceId {
            dynamic: info.service_type == ServiceType::Dynamic,
            id: info.service_id,
        }
    }
}

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = if self.dynamic { "dynamic" } else { "standard" };
        write!(f, "{t}/{}", self.id)
    }
}

/// The methods one side supports, each as a bit mask: a router advertises all of them (Squid
/// leaves a router whose advertisement lacks its method), an engine picks one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Methods {
    /// Forwarding: GRE, L2.
    pub forwarding: ForwardingMethods,
    /// Assignment: hash, mask.
    pub assignment: AssignmentMethods,
    /// Packet return: GRE, L2.
    pub returns: ReturnMethods,
}

impl Default for Methods {
    /// Everything this implementation can do.
    fn default() -> Self {
        Methods {
            forwarding: ForwardingMethods::GRE | ForwardingMethods::L2,
            assignment: AssignmentMethods::HASH | AssignmentMethods::MASK,
            returns: ReturnMethods::GRE | ReturnMethods::L2,
        }
    }
}

/// How the router reaches one engine of a programmed table: the data plane needs the
/// forwarding method the engine negotiated (GRE or L2 rewrite) and how it returns packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineRoute {
    /// The engine.
    pub address: Ipv4Addr,
    /// Negotiated forwarding method (one bit).
    pub forwarding: ForwardingMethods,
    /// Negotiated packet-return method (one bit).
    pub returns: ReturnMethods,
}

/// One value of a mask/value set and the engine that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MaskEntry {
    /// Source address bits after masking.
    pub src_addr: u32,
    /// Destination address bits after masking.
    pub dst_addr: u32,
    /// Source port bits after masking.
    pub src_port: u16,
    /// Destination port bits after masking.
    pub dst_port: u16,
    /// The engine.
    pub engine: Ipv4Addr,
}

/// One mask and its values, tried in order by the data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskRule {
    /// The packet bits looked at.
    pub mask: MaskElement,
    /// The values and their engines.
    pub values: Vec<MaskEntry>,
}

/// Who takes which traffic, in engine addresses rather than wire indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Assignment {
    /// 256 buckets, each with an engine (or none) and the alternate-hash flag.
    Hash(Box<BucketTable<Ipv4Addr>>),
    /// Mask/value sets.
    Mask(Vec<MaskRule>),
}

impl Assignment {
    /// Slots (buckets or mask values) per engine, for `show`.
    pub fn counts(&self) -> BTreeMap<Ipv4Addr, usize> {
        match self {
            Assignment::Hash(t) => t.counts(),
            Assignment::Mask(rules) => {
                let mut m = BTreeMap::new();
                for v in rules.iter().flat_map(|r| &r.values) {
                    *m.entry(v.engine).or_insert(0) += 1;
                }
                m
            }
        }
    }

    /// The same assignment without `engine`: its slots become unassigned (traffic there is
    /// forwarded normally until the designated engine reassigns).
    pub fn without(&self, engine: Ipv4Addr) -> Assignment {
        match self {
            Assignment::Hash(t) => {
                let mut t = t.clone();
                for b in 0..=255u8 {
                    if t.owner(b) == Some(engine) {
                        t.set_owner(b, None);
                    }
                }
                Assignment::Hash(t)
            }
            Assignment::Mask(rules) => Assignment::Mask(
                rules
                    .iter()
                    .map(|r| MaskRule {
                        mask: r.mask,
                        values: r
                            .values
                            .iter()
                            .copied()
                            .filter(|v| v.engine != engine)
                            .collect(),
                    })
                    .collect(),
            ),
        }
    }
}

/// A complete redirect table for one service: what the router's data plane is programmed
/// with, replacing whatever it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Buckets or mask values to engines.
    pub assignment: Assignment,
    /// Every engine the assignment names, with how to reach it.
    pub engines: Vec<EngineRoute>,
}

impl Table {
    /// True when no traffic would be redirected.
    pub fn is_empty(&self) -> bool {
        self.assignment.counts().is_empty()
    }
}

/// Counters by stable name (`show` and metrics): dropped messages by reason, wire errors by
/// [`wire::Error::kind`], messages by type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// Adds one to `name`.
    pub fn bump(&mut self, name: &str) {
        match self.0.get_mut(name) {
            Some(v) => *v = v.saturating_add(1),
            None => {
                self.0.insert(name.to_string(), 1);
            }
        }
    }

    /// The value of `name` (0 when never counted).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// Why a received message was not acted on: a stable name for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Drop {
    /// The bytes did not parse; the wire error's kind.
    Malformed(&'static str),
    /// A required component is missing or one is out of place.
    Components,
    /// A message type this side never receives.
    UnexpectedType,
    /// A service this side is not configured for.
    UnknownService,
    /// MD5 digest wrong, missing, or present where no password is configured.
    Security,
    /// The sender is not on the group list.
    NotInGroupList,
    /// A dynamic service described differently from the group's definition.
    ServiceMismatch,
    /// A method the router does not support was chosen.
    UnsupportedMethod,
    /// A Redirect-Assign whose key or router element does not match what this router sent.
    StaleAssignment,
    /// A Redirect-Assign from an engine that is not usable here.
    AssignerNotUsable,
    /// An address this implementation cannot use (revision 1's indexed or IPv6 forms).
    Address,
    /// An I-See-You or Removal-Query not meant for this engine.
    NotForUs,
}

impl Drop {
    /// The counter name.
    pub fn kind(&self) -> &'static str {
        match self {
            Drop::Malformed(k) => k,
            Drop::Components => "components",
            Drop::UnexpectedType => "unexpected_type",
            Drop::UnknownService => "unknown_service",
            Drop::Security => "security",
            Drop::NotInGroupList => "not_in_group_list",
            Drop::ServiceMismatch => "service_mismatch",
            Drop::UnsupportedMethod => "unsupported_method",
            Drop::StaleAssignment => "stale_assignment",
            Drop::AssignerNotUsable => "assigner_not_usable",
            Drop::Address => "address",
            Drop::NotForUs => "not_for_us",
        }
    }
}

/// The Security Info component for a service with or without a password.
pub(crate) fn security_component(password: Option<&[u8]>) -> SecurityInfo {
    match password {
        Some(_) => SecurityInfo::md5_unsigned(),
        None => SecurityInfo::None,
    }
}

/// Emits and, with a password, signs.
pub(crate) fn encode(message: &Message, password: Option<&[u8]>) -> Result<Vec<u8>, wire::Error> {
    match password {
        Some(p) => message.to_bytes_signed(p),
        None => message.to_bytes(),
    }
}

/// Checks a received message's security against the service's password: with a password,
/// only a matching MD5 digest passes; without one, only the no-security option.
pub(crate) fn authenticate(bytes: &[u8], message: &Message, password: Option<&[u8]>) -> bool {
    match (password, message.security()) {
        (Some(p), Some(SecurityInfo::Md5 { .. })) => wire::md5_is_valid(bytes, p),
        (None, Some(SecurityInfo::None)) => true,
        _ => false,
    }
}

/// Whether two descriptions name the same traffic (draft-01 4.2: a router discards a
/// Here-I-Am whose description conflicts with the group's).
pub(crate) fn same_definition(a: &ServiceInfo, b: &ServiceInfo) -> bool {
    a.service_type == b.service_type
        && a.service_id == b.service_id
        && (a.service_type == ServiceType::Standard
            || (a.protocol == b.protocol
                && a.flags == b.flags
                && a.ports == b.ports
                && a.priority == b.priority))
}

/// The IPv4 address of an address field, if it is one.
pub(crate) fn v4(a: &wire::Address) -> Option<Ipv4Addr> {
    a.ipv4()
}

/// The later of two optional deadlines' earliest: `min` over `Option`s ignoring `None`.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The lowest set bit of a method mask (the default when several are offered).
pub(crate) fn lowest_bit(bits: u32) -> u32 {
    bits & bits.wrapping_neg()
}

/// A message type's counter name (`here_i_am`, ...).
pub fn type_name(t: wire::MessageType) -> &'static str {
    match t {
        wire::MessageType::HereIAm => "here_i_am",
        wire::MessageType::ISeeYou => "i_see_you",
        wire::MessageType::RedirectAssign => "redirect_assign",
        wire::MessageType::RemovalQuery => "removal_query",
    }
}

/// Timer defaults from draft-01: Here-I-Am every 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
