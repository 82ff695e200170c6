//! The engine's data plane: the tc ingress program of `src/bpf/engine.c` and its maps, as
//! a library for `engine-agent`.
//!
//! The router redirects a client's TCP flow to the engine in WCCP GRE (or by L2 rewrite);
//! the program decapsulates it and hands it, with its original addresses, to the local
//! proxy's socket (`bpf_sk_assign`): the listener for a SYN, the flow's own socket after
//! that. A segment with no socket (a flow that began before redirection) and flows that a
//! return rule names go back to the router that sent them (packet return). The top of
//! `engine.c` describes the per-packet decisions; `engine.h` the maps.
//!
//! # What the host must provide
//!
//! - The proxy's listener bound to the wildcard address (or to the original destination)
//!   with `IP_TRANSPARENT` set: the kernel refuses to deliver a packet for a foreign
//!   address to a socket without it, and the accepted socket's local address is the
//!   client's original destination, from which the proxy answers.
//! - Policy routing for the mark set on delivered packets, since their destination is not
//!   a local address and routing would otherwise forward (or drop) them after the
//!   socket assignment:
//!
//!   ```text
//!   ip rule add fwmark MARK lookup TABLE
//!   ip route add local 0.0.0.0/0 dev lo table TABLE
//!   ```
//!
//!   [`LocalDelivery::install`] adds both by rtnetlink (in the calling thread's network
//!   namespace) and removes them on drop; [`local_delivery_commands`] spells them out for
//!   operators.
//!
//! # Driving it
//!
//! What `engine-agent` does, in order (the router list follows the protocol's view: a
//! router that leaves the view stops being accepted at once):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::Ipv4Addr;
//! use redirector_ebpf::engine_plane::{
//!     EnginePlane, EngineSettings, LocalDelivery, ReturnRule, DEFAULT_MARK,
//!     DEFAULT_RULE_PRIORITY, DEFAULT_TABLE,
//! };
//!
//! let routing = LocalDelivery::install(DEFAULT_MARK, DEFAULT_TABLE, DEFAULT_RULE_PRIORITY)?;
//! let mut plane = EnginePlane::load()?;
//! plane.configure(&EngineSettings {
//!     addr: Some(Ipv4Addr::new(10, 2, 0, 2)),
//!     ..EngineSettings::default()
//! })?;
//! plane.add_router(Ipv4Addr::new(10, 2, 0, 1))?; // each router in the view
//! plane.set_service_port(80, 3129)?; // each service port -> the proxy's port
//! plane.add_rule(&ReturnRule::returning(Ipv4Addr::new(192, 0, 2, 0), 24))?;
//! plane.attach("eth0")?; // from the engine's network namespace
//! // ... later: plane.counters()? for metrics, and on exit:
//! plane.teardown()?;
//! routing.remove()?;
//! # Ok(()) }
//! ```
//!
//! # Lifetime
//!
//! Nothing is pinned: the attachment is a tcx `bpf_link` (kernel 6.6 and later) held by
//! this process, so it ends with [`EnginePlane::teardown`], with drop, or with the
//! process. An engine that dies stops taking redirected traffic at once, which is what the
//! router's view expects of a dead engine (it stops answering, and the router reassigns).
//! On kernels without tcx the program is attached through a `clsact` qdisc, which this
//! code adds when it is missing and leaves in place (an empty clsact qdisc changes no
//! packet).

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, MapError, PerCpuArray,
    },
    programs::{
        tc::{qdisc_add_clsact, SchedClassifierLinkId, TcAttachType},
        ProgramError, SchedClassifier,
    },
    Pod,
};

use crate::{
    layout::{Counters, Field, SharedType},
    EbpfObject, LoadError,
};

mod local_route;
pub use local_route::{LocalDelivery, DEFAULT_RULE_PRIORITY};

/// The object built from `src/bpf/engine.c`.
pub const ENGINE_OBJECT: &str = "engine";
/// Its tc ingress program.
pub const ENGINE_PROGRAM: &str = "tc_engine";
/// The stand-in router of `src/bpf/engine_encap.c` ([`WccpEncap`]).
pub const ENCAP_OBJECT: &str = "engine_encap";
/// Its tc egress program.
pub const ENCAP_PROGRAM: &str = "tc_wccp_encap";

/// A mark no other tool of this project uses; any value works if the policy rule agrees.
pub const DEFAULT_MARK: u32 = 0x0cc2;
/// The routing table of [`local_delivery_commands`] by default.
pub const DEFAULT_TABLE: u32 = 2048;

/// `engine_config.flags`: the program acts (else every packet passes).
pub const ENGINE_ENABLED: u32 = 0x1;
/// `engine_config.flags`: L2-forwarded packets are taken too.
pub const ENGINE_L2: u32 = 0x2;
/// `engine_rule.flags`: return instead of proxying.
pub const RULE_RETURN: u32 = 0x1;
/// `engine_rule.flags`: rewrite the inner destination.
pub const RULE_REWRITE: u32 = 0x2;
/// `engine_rule.flags`: clone the frame to the copy interface.
pub const RULE_COPY: u32 = 0x4;
/// `engine_routers` value of a router GRE is accepted from.
pub const ROUTER_KNOWN: u32 = 0x1;
/// LPM bits of the rule key before the address: port and reserved.
pub const RULE_PORT_BITS: u32 = 32;
/// Entries of `engine_stats`.
pub const ENGINE_STATS: usize = 20;
/// Capacity of `engine_routers`.
pub const MAX_ROUTERS: usize = 256;
/// Capacity of `engine_rules`.
pub const MAX_RULES: usize = 1024;

/// `engine_config[0]` (C: `struct engine_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineConfigRaw {
    /// The engine's address, network order; 0 accepts GRE to any local address.
    pub addr: u32,
    /// Mark of packets handed to a socket.
    pub mark: u32,
    /// Interface that copies go out of; 0: none.
    pub copy_ifindex: u32,
    /// `ENGINE_*`.
    pub flags: u32,
    /// Number of return rules; 0 lets packets skip the rule lookups.
    pub rules: u32,
    /// Zero.
    pub reserved: u32,
}

/// `engine_ports` value (C: `struct engine_port`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// The proxy listener's port; 0: not a service port.
    pub proxy_port: u16,
    /// Zero.
    pub reserved: u16,
}

/// `engine_rules` key (C: `struct engine_rule_key`); see `engine.h` for the LPM layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleKey {
    /// [`RULE_PORT_BITS`] + the destination prefix length.
    pub prefixlen: u32,
    /// Destination port, network order; 0 for every port.
    pub port: u16,
    /// Zero.
    pub reserved: u16,
    /// Destination prefix, network order, host bits zero.
    pub addr: u32,
}

/// The LPM data of [`RuleKey`] (everything after `prefixlen`), as aya's `Key` wants it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RuleData {
    port: u16,
    reserved: u16,
    addr: u32,
}

/// `engine_rules` value (C: `struct engine_rule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    /// `RULE_*`.
    pub flags: u32,
    /// With [`RULE_REWRITE`]: the new inner destination, network order.
    pub new_daddr: u32,
}

/// `encap_config[0]` of the stand-in router (C: `struct engine_encap_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapConfig {
    /// Outer source, network order.
    pub router_addr: u32,
    /// Outer destination, network order.
    pub engine_addr: u32,
    /// Inner destinations encapsulated: `daddr & mask == net` (network order).
    pub net: u32,
    /// See `net`.
    pub mask: u32,
    /// The redirect header as sent.
    pub redirect: [u8; 4],
    /// 0 passes everything.
    pub enabled: u32,
}

// SAFETY: `repr(C)`, integer fields only, no padding (sizes equal the sums of the fields,
// and tests/engine_layout.rs checks them against the BTF of the C structs).
unsafe impl Pod for EngineConfigRaw {}
// SAFETY: as above.
unsafe impl Pod for ServicePort {}
// SAFETY: as above.
unsafe impl Pod for RuleKey {}
// SAFETY: as above.
unsafe impl Pod for RuleData {}
// SAFETY: as above.
unsafe impl Pod for RuleEntry {}
// SAFETY: as above.
unsafe impl Pod for EncapConfig {}

macro_rules! engine_type {
    ($rust:ident => $c:literal { $($field:ident),+ $(,)? }) => {{
        #[allow(dead_code)]
        fn every_field_is_listed(value: &$rust) {
            let $rust { $($field: _),+ } = value;
        }
        SharedType {
            rust_name: stringify!($rust),
            c_name: $c,
            size: std::mem::size_of::<$rust>(),
            fields: &[$(Field {
                name: stringify!($field),
                offset: std::mem::offset_of!($rust, $field),
                size: crate::layout::size_of_field(|v: &$rust| &v.$field),
            }),+],
        }
    }};
}

/// The types `engine.c` and `engine_encap.c` share with this module, for the BTF layout
/// check (the object each is found in, then the type).
pub const ENGINE_SHARED_TYPES: &[(&str, SharedType)] = &[
    (
        ENGINE_OBJECT,
        engine_type!(EngineConfigRaw => "engine_config" {
            addr, mark, copy_ifindex, flags, rules, reserved
        }),
    ),
    (
        ENGINE_OBJECT,
        engine_type!(ServicePort => "engine_port" { proxy_port, reserved }),
    ),
    (
        ENGINE_OBJECT,
        engine_type!(RuleKey => "engine_rule_key" { prefixlen, port, reserved, addr }),
    ),
    (
        ENGINE_OBJECT,
        engine_type!(RuleEntry => "engine_rule" { flags, new_daddr }),
    ),
    (
        ENGINE_OBJECT,
        engine_type!(Counters => "redirector_counters" { packets, bytes }),
    ),
    (
        ENCAP_OBJECT,
        engine_type!(EncapConfig => "engine_encap_config" {
            router_addr, engine_addr, net, mask, redirect, enabled
        }),
    ),
];

/// One counter of `engine_stats`. The first sixteen are reasons: every packet the program
/// sees is counted under exactly one. The others count besides a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Counter {
    /// Passed: not IPv4.
    NotIpv4 = 0,
    /// Passed: the program is not enabled.
    Disabled = 1,
    /// Passed: neither WCCP GRE to this engine nor an L2-forwarded service packet.
    NotRedirected = 2,
    /// Dropped: WCCP GRE from an address that is not a known router. Decapsulating it
    /// would let anyone who can reach the engine inject packets with any source into the
    /// proxy; passing it would only earn an ICMP error from a stack without GRE.
    Stranger = 3,
    /// Dropped: WCCP GRE from a router, too short for its headers (or fragmented).
    Truncated = 4,
    /// Dropped: GRE flags (checksum, key, sequence) or redirect header flags this engine
    /// does not know.
    BadHeader = 5,
    /// Dropped: the inner packet is not a sane IPv4/TCP packet.
    BadInner = 6,
    /// Delivered to the flow's socket.
    Established = 7,
    /// A SYN delivered to the proxy's listener.
    ProxiedSyn = 8,
    /// Returned: not a SYN, and no socket (a flow older than the redirection).
    ReturnNoSocket = 9,
    /// Returned by a return rule.
    ReturnRule = 10,
    /// Returned: not TCP, a fragment, or not a service port.
    ReturnNotServed = 11,
    /// Returned: a SYN, but the proxy has no listener on the service's port.
    ReturnNoListener = 12,
    /// Dropped: the kernel refused to remove the outer headers.
    AdjustFailed = 13,
    /// Dropped: the kernel refused the socket assignment.
    AssignFailed = 14,
    /// Dropped: the returned packet could not be written.
    RedirectFailed = 15,
    /// A copy went to the copy interface.
    Copied = 16,
    /// A copy was asked for and refused by the kernel.
    CopyFailed = 17,
    /// The inner destination was rewritten by a rule.
    Rewritten = 18,
    /// The packet came by L2 forwarding.
    L2 = 19,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; ENGINE_STATS] = [
        Counter::NotIpv4,
        Counter::Disabled,
        Counter::NotRedirected,
        Counter::Stranger,
        Counter::Truncated,
        Counter::BadHeader,
        Counter::BadInner,
        Counter::Established,
        Counter::ProxiedSyn,
        Counter::ReturnNoSocket,
        Counter::ReturnRule,
        Counter::ReturnNotServed,
        Counter::ReturnNoListener,
        Counter::AdjustFailed,
        Counter::AssignFailed,
        Counter::RedirectFailed,
        Counter::Copied,
        Counter::CopyFailed,
        Counter::Rewritten,
        Counter::L2,
    ];

    /// A stable name for metrics and `show` output.
    pub fn name(self) -> &'static str {
        match self {
            Counter::NotIpv4 => "not_ipv4",
            Counter::Disabled => "disabled",
            Counter::NotRedirected => "not_redirected",
            Counter::Stranger => "stranger",
            Counter::Truncated => "truncated",
            Counter::BadHeader => "bad_header",
            Counter::BadInner => "bad_inner",
            Counter::Established => "established",
            Counter::ProxiedSyn => "proxied_syn",
            Counter::ReturnNoSocket => "return_no_socket",
            Counter::ReturnRule => "return_rule",
            Counter::ReturnNotServed => "return_not_served",
            Counter::ReturnNoListener => "return_no_listener",
            Counter::AdjustFailed => "adjust_failed",
            Counter::AssignFailed => "assign_failed",
            Counter::RedirectFailed => "redirect_failed",
            Counter::Copied => "copied",
            Counter::CopyFailed => "copy_failed",
            Counter::Rewritten => "rewritten",
            Counter::L2 => "l2",
        }
    }

    /// Whether this counter is a reason (one per packet) rather than counted besides one.
    pub fn is_reason(self) -> bool {
        (self as u32) < 16
    }

    /// Whether packets counted here went back to their router.
    pub fn is_return(self) -> bool {
        matches!(
            self,
            Counter::ReturnNoSocket
                | Counter::ReturnRule
                | Counter::ReturnNotServed
                | Counter::ReturnNoListener
        )
    }
}

/// The counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    entries: Vec<Counters>,
}

impl EngineCounters {
    /// One counter.
    pub fn get(&self, counter: Counter) -> Counters {
        self.entries
            .get(counter as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Packets of one counter.
    pub fn packets(&self, counter: Counter) -> u64 {
        self.get(counter).packets
    }

    /// Every non-zero counter with its name, for logs and test messages.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|c| (c.name(), self.packets(*c)))
            .filter(|(_, n)| *n != 0)
            .collect()
    }
}

/// How the engine takes redirected traffic; written with [`EnginePlane::configure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// The engine's address: GRE is accepted only when sent to it, and returned packets
    /// come from it. `None` accepts GRE to any address the interface receives (and
    /// returns from the address the router sent to, which is the same thing).
    pub addr: Option<Ipv4Addr>,
    /// Mark of delivered packets; the policy rule of [`local_delivery_commands`] must use
    /// the same.
    pub mark: u32,
    /// Interface index that copies asked for by rules go out of; `None`: no copies.
    pub copy_ifindex: Option<u32>,
    /// Take L2-forwarded packets (the client's packet to this engine's MAC) besides GRE.
    pub l2: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            addr: None,
            mark: DEFAULT_MARK,
            copy_ifindex: None,
            l2: false,
        }
    }
}

/// A return rule: new flows to `prefix/prefix_len` (and to `port`, when set) are not
/// proxied. Flows the proxy already holds carry on, so that adding a rule never breaks a
/// live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnRule {
    /// Destination prefix.
    pub prefix: Ipv4Addr,
    /// Its length, 0 to 32.
    pub prefix_len: u8,
    /// Destination port; `None` for every port.
    pub port: Option<u16>,
    /// Send matching packets back to the router. A rule without it only copies.
    pub return_to_router: bool,
    /// Give returned packets this inner destination (IP and TCP checksums fixed), so the
    /// router forwards them there: a server behind another address, a sinkhole.
    pub rewrite_dst: Option<Ipv4Addr>,
    /// Send a clone of each matching frame, exactly as it arrived (GRE included), out of
    /// the copy interface: for an inspection box or a capture.
    pub copy: bool,
}

impl ReturnRule {
    /// A rule that returns every flow to `prefix/prefix_len`.
    pub fn returning(prefix: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            prefix,
            prefix_len,
            port: None,
            return_to_router: true,
            rewrite_dst: None,
            copy: false,
        }
    }

    fn key(&self) -> Result<RuleData, EngineError> {
        if self.prefix_len > 32 {
            return Err(EngineError::InvalidRule(format!(
                "prefix length {} is over 32",
                self.prefix_len
            )));
        }
        if self.port == Some(0) {
            return Err(EngineError::InvalidRule(
                "port 0 cannot be matched; use None for every port".into(),
            ));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Ok(RuleData {
            port: self.port.unwrap_or(0).to_be(),
            reserved: 0,
            addr: (u32::from(self.prefix) & mask).to_be(),
        })
    }

    /// The key and value [`EnginePlane::add_rule`] writes, for the model's twin table.
    pub fn raw(&self) -> Result<(RuleKey, RuleEntry), EngineError> {
        let data = self.key()?;
        let key = RuleKey {
            prefixlen: RULE_PORT_BITS + u32::from(self.prefix_len),
            port: data.port,
            reserved: data.reserved,
            addr: data.addr,
        };
        Ok((key, self.entry()))
    }

    fn entry(&self) -> RuleEntry {
        let mut flags = 0;
        if self.return_to_router {
            flags |= RULE_RETURN;
        }
        if self.copy {
            flags |= RULE_COPY;
        }
        let mut new_daddr = 0;
        if let Some(dst) = self.rewrite_dst {
            flags |= RULE_REWRITE;
            new_daddr = u32::from(dst).to_be();
        }
        RuleEntry { flags, new_daddr }
    }
}

/// The two commands that make marked packets for foreign addresses local, as argv for
/// `ip` (the program name first).
pub fn local_delivery_commands(mark: u32, table: u32) -> [Vec<String>; 2] {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    [
        s(&[
            "ip",
            "rule",
            "add",
            "fwmark",
            &format!("{mark:#x}"),
            "lookup",
            &table.to_string(),
        ]),
        s(&[
            "ip",
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            &table.to_string(),
        ]),
    ]
}

/// What went wrong, naming the map or interface involved.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The object could not be had or loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The object lacks a map this code needs (an object of another build).
    #[error("engine object has no map {0}")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("engine map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
    /// Attaching or detaching failed.
    #[error("tc program on {iface}: {source}")]
    Attach {
        /// The interface.
        iface: String,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// This handle already holds an attachment to that interface.
    #[error("already attached to {0}")]
    AlreadyAttached(String),
    /// `detach` of an interface this handle holds no attachment to.
    #[error("not attached to {0}")]
    NotAttached(String),
    /// A rule that cannot be expressed.
    #[error("invalid return rule: {0}")]
    InvalidRule(String),
    /// `engine_routers` or `engine_rules` is full.
    #[error("{0} is full")]
    Full(&'static str),
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> EngineError {
    move |source| EngineError::Map {
        map,
        source: Box::new(source),
    }
}

/// Attaches `program` to `iface` in direction `direction`: tcx where the kernel has it,
/// else through a clsact qdisc (added when missing).
fn attach_tc(
    program: &mut SchedClassifier,
    iface: &str,
    direction: TcAttachType,
) -> Result<SchedClassifierLinkId, EngineError> {
    let error = |source| EngineError::Attach {
        iface: iface.to_owned(),
        source: Box::new(source),
    };
    match program.attach(iface, direction) {
        Ok(id) => Ok(id),
        Err(first) => {
            // Before tcx (kernel < 6.6) aya attaches by netlink, which needs the qdisc.
            if qdisc_add_clsact(iface).is_err() {
                return Err(error(first));
            }
            program.attach(iface, direction).map_err(error)
        }
    }
}

fn classifier<'a>(
    object: &'a mut EbpfObject,
    program: &str,
) -> Result<&'a mut SchedClassifier, EngineError> {
    let name = object.name().to_owned();
    let found =
        object
            .ebpf_mut()
            .program_mut(program)
            .ok_or_else(|| LoadError::ProgramNotFound {
                object: name.clone(),
                program: program.to_owned(),
            })?;
    let error = |source| LoadError::Program {
        object: name.clone(),
        program: program.to_owned(),
        source: Box::new(source),
    };
    let tc: &mut SchedClassifier = found.try_into().map_err(error)?;
    match tc.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(tc),
        Err(source) => Err(error(source).into()),
    }
}

/// The engine program, loaded, with its maps and the attachments this process holds.
///
/// Interface names are resolved in the network namespace of the calling thread, as the
/// kernel does: call [`EnginePlane::attach`] from inside the engine's namespace.
#[derive(Debug)]
pub struct EnginePlane {
    object: EbpfObject,
    links: BTreeMap<String, SchedClassifierLinkId>,
    config: EngineConfigRaw,
    rules: BTreeMap<(u32, u16, u32), ReturnRule>,
}

impl EnginePlane {
    /// Loads the program (the verifier runs here) and its fresh, empty maps: disabled, no
    /// routers, no service ports, no rules.
    pub fn load() -> Result<Self, EngineError> {
        let mut object = EbpfObject::open(ENGINE_OBJECT)?;
        classifier(&mut object, ENGINE_PROGRAM)?;
        Ok(Self {
            object,
            links: BTreeMap::new(),
            config: EngineConfigRaw::default(),
            rules: BTreeMap::new(),
        })
    }

    /// Attaches the program to `iface`'s ingress.
    pub fn attach(&mut self, iface: &str) -> Result<(), EngineError> {
        if self.links.contains_key(iface) {
            return Err(EngineError::AlreadyAttached(iface.to_owned()));
        }
        let program = classifier(&mut self.object, ENGINE_PROGRAM)?;
        let id = attach_tc(program, iface, TcAttachType::Ingress)?;
        self.links.insert(iface.to_owned(), id);
        Ok(())
    }

    /// Detaches the program from `iface`: its packets pass untouched from then on.
    pub fn detach(&mut self, iface: &str) -> Result<(), EngineError> {
        let id = self
            .links
            .remove(iface)
            .ok_or_else(|| EngineError::NotAttached(iface.to_owned()))?;
        classifier(&mut self.object, ENGINE_PROGRAM)?
            .detach(id)
            .map_err(|source| EngineError::Attach {
                iface: iface.to_owned(),
                source: Box::new(source),
            })
    }

    /// The interfaces the program is attached to.
    pub fn attached(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    /// Detaches from every interface and unloads, reporting the first failure; drop does
    /// the same silently.
    pub fn teardown(mut self) -> Result<(), EngineError> {
        let mut first = None;
        for iface in self.attached() {
            if let Err(e) = self.detach(&iface) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn write_config(&mut self) -> Result<(), EngineError> {
        let name = "engine_config";
        let config = self.config;
        let map = self.map(name)?;
        let mut array: Array<&mut MapData, EngineConfigRaw> =
            Array::try_from(map).map_err(map_err(name))?;
        array.set(0, config, 0).map_err(map_err(name))
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, EngineError> {
        self.object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(EngineError::MissingMap(name))
    }

    /// Writes the settings and enables the program.
    pub fn configure(&mut self, settings: &EngineSettings) -> Result<(), EngineError> {
        let mut flags = ENGINE_ENABLED;
        if settings.l2 {
            flags |= ENGINE_L2;
        }
        self.config = EngineConfigRaw {
            addr: settings.addr.map_or(0, |a| u32::from(a).to_be()),
            mark: settings.mark,
            copy_ifindex: settings.copy_ifindex.unwrap_or(0),
            flags,
            rules: self.rules.len() as u32,
            reserved: 0,
        };
        self.write_config()
    }

    /// Turns the program off (every packet passes) or back on, keeping the settings.
    pub fn set_enabled(&mut self, enabled: bool) -> Result<(), EngineError> {
        if enabled {
            self.config.flags |= ENGINE_ENABLED;
        } else {
            self.config.flags &= !ENGINE_ENABLED;
        }
        self.write_config()
    }

    /// The settings as written to the kernel.
    pub fn config(&self) -> EngineConfigRaw {
        self.config
    }

    fn routers_map(&mut self) -> Result<HashMap<&mut MapData, u32, u32>, EngineError> {
        let name = "engine_routers";
        HashMap::try_from(self.map(name)?).map_err(map_err(name))
    }

    /// Accepts GRE from `router` (a router in this engine's view).
    pub fn add_router(&mut self, router: Ipv4Addr) -> Result<(), EngineError> {
        let mut map = self.routers_map()?;
        let key = u32::from(router).to_be();
        if map.get(&key, 0).is_err() && map.keys().count() >= MAX_ROUTERS {
            return Err(EngineError::Full("engine_routers"));
        }
        map.insert(key, ROUTER_KNOWN, 0)
            .map_err(map_err("engine_routers"))
    }

    /// Stops accepting GRE from `router`; a router that was not there is no error.
    pub fn remove_router(&mut self, router: Ipv4Addr) -> Result<(), EngineError> {
        let mut map = self.routers_map()?;
        match map.remove(&u32::from(router).to_be()) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("engine_routers")(e)),
        }
    }

    /// The routers GRE is accepted from.
    pub fn routers(&mut self) -> Result<Vec<Ipv4Addr>, EngineError> {
        let map = self.routers_map()?;
        let mut out = map
            .keys()
            .map(|k| k.map(|k| Ipv4Addr::from(u32::from_be(k))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("engine_routers"))?;
        out.sort();
        Ok(out)
    }

    fn ports_map(&mut self) -> Result<Array<&mut MapData, ServicePort>, EngineError> {
        let name = "engine_ports";
        Array::try_from(self.map(name)?).map_err(map_err(name))
    }

    /// Serves TCP `port`: new flows to it go to the listener on `proxy_port` (the same
    /// port when the proxy listens on the service port itself).
    pub fn set_service_port(&mut self, port: u16, proxy_port: u16) -> Result<(), EngineError> {
        if proxy_port == 0 {
            return self.remove_service_port(port);
        }
        let entry = ServicePort {
            proxy_port,
            reserved: 0,
        };
        self.ports_map()?
            .set(u32::from(port), entry, 0)
            .map_err(map_err("engine_ports"))
    }

    /// Stops serving TCP `port`: its packets are returned to the router from then on.
    pub fn remove_service_port(&mut self, port: u16) -> Result<(), EngineError> {
        self.ports_map()?
            .set(u32::from(port), ServicePort::default(), 0)
            .map_err(map_err("engine_ports"))
    }

    fn rules_map(&mut self) -> Result<LpmTrie<&mut MapData, RuleData, RuleEntry>, EngineError> {
        let name = "engine_rules";
        LpmTrie::try_from(self.map(name)?).map_err(map_err(name))
    }

    /// Adds or replaces (same prefix and port) a return rule.
    pub fn add_rule(&mut self, rule: &ReturnRule) -> Result<(), EngineError> {
        let data = rule.key()?;
        let id = (u32::from(rule.prefix_len), data.port, data.addr);
        if !self.rules.contains_key(&id) && self.rules.len() >= MAX_RULES {
            return Err(EngineError::Full("engine_rules"));
        }
        let key = Key::new(RULE_PORT_BITS + u32::from(rule.prefix_len), data);
        self.rules_map()?
            .insert(&key, rule.entry(), 0)
            .map_err(map_err("engine_rules"))?;
        self.rules.insert(id, *rule);
        self.config.rules = self.rules.len() as u32;
        self.write_config()
    }

    /// Removes the rule with `rule`'s prefix and port; one that was not there is no error.
    pub fn remove_rule(&mut self, rule: &ReturnRule) -> Result<(), EngineError> {
        let data = rule.key()?;
        let id = (u32::from(rule.prefix_len), data.port, data.addr);
        let key = Key::new(RULE_PORT_BITS + u32::from(rule.prefix_len), data);
        match self.rules_map()?.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("engine_rules")(e)),
        }
        self.rules.remove(&id);
        self.config.rules = self.rules.len() as u32;
        self.write_config()
    }

    /// The rules this handle installed.
    pub fn rules(&self) -> Vec<ReturnRule> {
        self.rules.values().copied().collect()
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&mut self) -> Result<EngineCounters, EngineError> {
        let name = "engine_stats";
        let stats: PerCpuArray<&mut MapData, Counters> =
            PerCpuArray::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut entries = Vec::with_capacity(ENGINE_STATS);
        for i in 0..ENGINE_STATS as u32 {
            let values = stats.get(&i, 0).map_err(map_err(name))?;
            entries.push(values.iter().fold(Counters::default(), |a, c| Counters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            }));
        }
        Ok(EngineCounters { entries })
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN` (edge cases without interfaces).
    pub fn program(&mut self) -> Result<&mut SchedClassifier, EngineError> {
        classifier(&mut self.object, ENGINE_PROGRAM)
    }

    /// The aya handle, for what this type does not cover.
    pub fn object_mut(&mut self) -> &mut EbpfObject {
        &mut self.object
    }
}

/// A stand-in WCCP router on tc egress (`src/bpf/engine_encap.c`): wraps a host's own TCP
/// packets to a prefix in WCCP GRE towards an engine, so that tests and the lab can send
/// real connections through [`EnginePlane`] without a router. Single-segment packets only.
#[derive(Debug)]
pub struct WccpEncap {
    object: EbpfObject,
    link: Option<SchedClassifierLinkId>,
}

impl WccpEncap {
    /// Loads the program with encapsulation off.
    pub fn load() -> Result<Self, EngineError> {
        let mut object = EbpfObject::open(ENCAP_OBJECT)?;
        classifier(&mut object, ENCAP_PROGRAM)?;
        Ok(Self { object, link: None })
    }

    /// Wraps packets to `net/len` as router `router` sending to `engine`, with `redirect`
    /// as the redirect header.
    pub fn configure(
        &mut self,
        router: Ipv4Addr,
        engine: Ipv4Addr,
        net: Ipv4Addr,
        len: u8,
        redirect: [u8; 4],
    ) -> Result<(), EngineError> {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0);
        let config = EncapConfig {
            router_addr: u32::from(router).to_be(),
            engine_addr: u32::from(engine).to_be(),
            net: (u32::from(net) & mask).to_be(),
            mask: mask.to_be(),
            redirect,
            enabled: 1,
        };
        let name = "encap_config";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(EngineError::MissingMap(name))?;
        let mut array: Array<&mut MapData, EncapConfig> =
            Array::try_from(map).map_err(map_err(name))?;
        array.set(0, config, 0).map_err(map_err(name))
    }

    /// Attaches to `iface`'s egress (resolved in the calling thread's namespace).
    pub fn attach(&mut self, iface: &str) -> Result<(), EngineError> {
        if self.link.is_some() {
            return Err(EngineError::AlreadyAttached(iface.to_owned()));
        }
        let program = classifier(&mut self.object, ENCAP_PROGRAM)?;
        self.link = Some(attach_tc(program, iface, TcAttachType::Egress)?);
        Ok(())
    }

    /// Packets encapsulated, packets passed because they were GSO, failures.
    pub fn counters(&mut self) -> Result<[u64; 3], EngineError> {
        let name = "encap_stats";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(EngineError::MissingMap(name))?;
        let array: Array<&mut MapData, u64> = Array::try_from(map).map_err(map_err(name))?;
        let mut out = [0; 3];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = array.get(&(i as u32), 0).map_err(map_err(name))?;
        }
        Ok(out)
    }
}
