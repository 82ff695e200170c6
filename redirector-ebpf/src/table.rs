//! What the controller wants redirected ([`TableConfig`]) and its compiled form
//! ([`Table`]): the exact contents of one table slot of the maps, which the loader writes
//! and the model reads.
//!
//! Compiling is where the hot path's shortcuts are made: services are ranked by priority
//! once, each port gets the best-ranked service that matches it, and the engines'
//! addresses go into a bit filter, so the program never scans a list.

use std::{collections::HashMap, fmt, net::Ipv4Addr, str::FromStr};

use wccp::assign::{flags, Mask};

use crate::layout::{
    BucketEntry, EngineEntry, PortEntry, PrefixKey, ServiceEntry, SlotLayout, TableHeader, BUCKETS,
    BUCKET_ALTERNATE, BUCKET_ASSIGNED, BUCKET_STICKY, ENGINE_USABLE, FILTER_WORDS, MASK_POSITIONS,
    MAX_ENGINES, MAX_PREFIXES, MAX_SERVICES, METHOD_GRE, METHOD_L2, NO_POSITION, PORTS,
    PORT_PROTOCOLS, PREFIX_KEY_BITS, PREFIX_REDIRECT, PREFIX_SKIP, SERVICE_DYNAMIC, SERVICE_LISTS,
    SERVICE_MASK, SERVICE_MSS_CLAMP, SERVICE_REDIRECT_LIST, TABLE_SRC_PORTS,
};

/// Outer IPv4 + GRE + redirect header: what GRE redirection adds to a packet.
const GRE_OVERHEAD: u16 = 28;
/// IPv4 and TCP headers without options, which an MSS does not count.
const TCP_IP_HEADERS: u16 = 40;
/// The smallest MTU an IPv4 link may have (RFC 791), so the smallest next-hop MTU an
/// ICMP fragmentation-needed may announce.
const MIN_IPV4_MTU: u16 = 68;
/// The path MTU assumed for a GRE engine whose MTU the controller left unset (0).
const DEFAULT_MTU: u16 = 1500;

/// The protocols a service can match (the only ones with ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: redirected flows are remembered at their SYN. The default, as for WCCP's
    /// standard web-cache service.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Index in the port table (0 TCP, 1 UDP), as in C.
    pub const fn index(self) -> usize {
        match self {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        }
    }
}

/// How packets reach an engine, as negotiated with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// GRE (protocol 0x883E) with the 4-byte redirect header.
    Gre,
    /// Rewrite the Ethernet addresses (the engine is on-link).
    L2,
}

/// An engine and its next hop, resolved by the controller (netlink), never per packet.
///
/// `Default` is an unusable GRE engine at 0.0.0.0, so that callers can name only the
/// fields they know and stay compiling as fields are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The engine's address: GRE destination, and the source of its returns and of its
    /// own connections.
    pub addr: Ipv4Addr,
    /// The router's address on the engine's side: the GRE source.
    pub router_addr: Ipv4Addr,
    /// The next hop's (or engine's) MAC.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
    /// Egress interface; 0 means back out of the ingress interface.
    pub ifindex: u32,
    /// Largest IP packet the path takes; 0 leaves sizes unchecked.
    pub mtu: u16,
    /// Forwarding method.
    pub method: Method,
    /// Return method negotiated with the engine. [`Method::L2`]: the engine is on-link
    /// and returns packets unchanged, recognised by their source MAC, which is
    /// `dst_mac`; they are forwarded and never redirected again. [`Method::Gre`]: returns
    /// come in GRE from `addr` (always decapsulated, whatever this says).
    pub return_method: Method,
    /// A listed but unusable engine makes its buckets fail open.
    pub usable: bool,
    /// The 802.1Q VLAN (1-4094) the engine is reached on, for an engine behind a VLAN
    /// device: `ifindex` is then the device's parent, and frames to the engine carry the
    /// tag (router-on-a-stick); `None`: untagged.
    pub vlan: Option<u16>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            addr: Ipv4Addr::UNSPECIFIED,
            router_addr: Ipv4Addr::UNSPECIFIED,
            dst_mac: [0; 6],
            src_mac: [0; 6],
            ifindex: 0,
            mtu: 0,
            method: Method::Gre,
            return_method: Method::Gre,
            usable: false,
            vlan: None,
        }
    }
}

/// One bucket (hash) or value (mask) of a service's assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Index into [`TableConfig::engines`]; `None` is unassigned (fail open).
    pub engine: Option<u8>,
    /// Hash only: use the alternate hash's bucket instead.
    pub alternate: bool,
    /// The owner changed recently: TCP flows consult the connection table so that they
    /// keep the engine that took their SYN. The controller sets it when it moves the
    /// bucket and clears it once no remembered flow can point elsewhere.
    pub sticky: bool,
}

/// A service's assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// 256 buckets by the draft's hash.
    Hash(Vec<Slot>),
    /// A mask and one slot per value, indexed as `wccp::assign::Mask::value`.
    Mask {
        /// The mask.
        mask: Mask,
        /// `mask.value_count()` slots.
        values: Vec<Slot>,
    },
}

impl Default for Assignment {
    /// 256 unassigned buckets: everything fails open until the designated engine assigns.
    fn default() -> Self {
        Assignment::Hash(vec![Slot::default(); BUCKETS])
    }
}

/// An IPv4 prefix of a redirect or skip list, `addr/len`. Bits of `addr` past `len` are
/// ignored, as routers do with an ACL's wildcard bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network.
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

impl Prefix {
    /// `addr/len`.
    pub const fn new(addr: Ipv4Addr, len: u8) -> Self {
        Self { addr, len }
    }

    /// The network as a host-order number, host bits cleared.
    fn network(self) -> u32 {
        let bits = u32::from(self.addr);
        match self.len {
            0 => 0,
            len => bits & (u32::MAX << (32 - u32::from(len.min(32)))),
        }
    }

    /// Whether `addr` (host order) is in this prefix.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        Prefix::new(addr, self.len).network() == self.network()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 prefix {0:?}: expected a.b.c.d/len with len 0 to 32, or an address")]
pub struct PrefixParseError(String);

impl FromStr for Prefix {
    type Err = PrefixParseError;

    /// `a.b.c.d/len`, or a bare address (a /32), as operators write them in configs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixParseError(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        if len > 32 {
            return Err(err());
        }
        Ok(Prefix::new(addr.parse().map_err(|_| err())?, len))
    }
}

/// One service group as the data plane needs it.
///
/// `Default` is service 0 on TCP with no ports, flags or lists and an unassigned hash
/// assignment, so that callers can name only the fields they set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Service id.
    pub id: u8,
    /// Dynamic service (the D bit of the redirect header).
    pub dynamic: bool,
    /// Protocol.
    pub protocol: Protocol,
    /// Higher is tried first; ties go to the lower id.
    pub priority: u8,
    /// WCCP service flags (`wccp::assign::flags`): hash fields and port semantics.
    pub flags: u32,
    /// Up to 8 ports (zeros ignored); used when [`flags::PORTS_DEFINED`] is set.
    pub ports: Vec<u16>,
    /// Buckets or mask values.
    pub assignment: Assignment,
    /// The operator's redirect list (Cisco's `redirect-list`): when not empty, a packet
    /// of this service is redirected only if its source or its destination is in one of
    /// these prefixes; others are forwarded normally. Either address, because an ACL is
    /// written for the clients' side or for the servers' side and both are natural.
    pub redirect_list: Vec<Prefix>,
    /// Prefixes never redirected: a packet whose source or destination is in one is
    /// forwarded normally, whatever the redirect list says (skipping wins, so that an
    /// exception never needs the redirect list rewritten).
    pub skip_list: Vec<Prefix>,
}

/// The MSS clamp of a table: the largest MSS that a SYN-ACK toward the clients of a
/// GRE-redirected service may announce, so that the clients' full-sized segments still
/// fit the engines' path once GRE adds its 28 bytes (DF is set on nearly all TCP, and
/// ICMP-based path MTU discovery is often filtered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MssClamp {
    /// The smallest MTU of the GRE engines minus 68 (IPv4 + TCP headers and GRE),
    /// 1500 for an engine whose MTU is unset; off when no TCP service uses GRE.
    #[default]
    Auto,
    /// No clamping.
    Off,
    /// This MSS (0 is off).
    Fixed(u16),
}

/// Everything one table slot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableConfig {
    /// Services, in any order.
    pub services: Vec<ServiceConfig>,
    /// Engines, indexed by [`Slot::engine`].
    pub engines: Vec<EngineConfig>,
    /// SYN-ACK MSS clamp for the services redirected in GRE.
    pub mss_clamp: MssClamp,
}

/// Why a configuration cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// More than 256 services.
    #[error("{0} services, at most {MAX_SERVICES}")]
    TooManyServices(usize),
    /// More than 256 engines.
    #[error("{0} engines, at most {MAX_ENGINES}")]
    TooManyEngines(usize),
    /// The same service id twice.
    #[error("service {0} listed twice")]
    DuplicateService(u8),
    /// More than 8 ports.
    #[error("service {0} has more than 8 ports")]
    TooManyPorts(u8),
    /// A hash assignment without 256 buckets, or a mask without one slot per value.
    #[error("service {0}: {1} assignment slots, expected {2}")]
    AssignmentSize(u8, usize, usize),
    /// A slot names an engine that is not listed.
    #[error("service {0}: engine index {1} is not listed")]
    UnknownEngine(u8, u8),
    /// Two engines with one address.
    #[error("engine address {0} listed twice")]
    DuplicateEngine(Ipv4Addr),
    /// Two L2-return engines with one MAC: their returns could not be told apart.
    #[error("engines {0} and {1} return at L2 with the same MAC")]
    DuplicateEngineMac(Ipv4Addr, Ipv4Addr),
    /// An MTU below 96 (68 + GRE's 28) leaves no valid next-hop MTU to announce in ICMP.
    #[error("engine {0}: MTU {1} is below 96 (0 leaves sizes unchecked)")]
    EngineMtu(Ipv4Addr, u16),
    /// A VLAN id outside 1-4094.
    #[error("engine {0}: VLAN {1} is not an id 1-4094")]
    EngineVlan(Ipv4Addr, u16),
    /// A prefix length over 32.
    #[error("service {0}: invalid prefix {1}")]
    BadPrefix(u8, Prefix),
    /// More prefixes than the map holds per table.
    #[error("{0} distinct list prefixes, at most {MAX_PREFIXES} per table")]
    TooManyPrefixes(usize),
}

/// The contents of one table slot, entry for entry as in the maps (without the slot
/// offset): what the loader writes and what the model reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// `tables[slot]`.
    pub header: TableHeader,
    /// `ports[slot][protocol][port]`, `PORT_PROTOCOLS * PORTS` entries.
    pub ports: Vec<PortEntry>,
    /// `services[slot][rank]`, `MAX_SERVICES` entries.
    pub services: Vec<ServiceEntry>,
    /// `buckets[slot][rank][bucket]`, `MAX_SERVICES * BUCKETS` entries.
    pub buckets: Vec<BucketEntry>,
    /// `engines[slot][index]`, `MAX_ENGINES` entries.
    pub engines: Vec<EngineEntry>,
    /// `engine_filter[slot][word]`, `FILTER_WORDS` words.
    pub filter: Vec<u64>,
    /// `engine_addrs` entries of this slot: address (network order) and index.
    pub engine_addrs: Vec<(u32, u32)>,
    /// `mac_filter[slot][word]`, `FILTER_WORDS` words.
    pub mac_filter: Vec<u64>,
    /// `engine_macs` entries of this slot: an L2-return engine's MAC and its index.
    pub engine_macs: Vec<([u8; 6], u32)>,
    /// `prefixes` entries of this slot (keys with `slot` 0; the loader sets it), with
    /// their `PREFIX_*` value, sorted by key.
    pub prefixes: Vec<(PrefixKey, u32)>,
}

impl Default for Table {
    /// An empty slot: what a fresh (zeroed) map holds.
    fn default() -> Self {
        Self {
            header: TableHeader::default(),
            ports: vec![PortEntry::default(); PORT_PROTOCOLS * PORTS],
            services: vec![ServiceEntry::default(); MAX_SERVICES],
            buckets: vec![BucketEntry::default(); MAX_SERVICES * BUCKETS],
            engines: vec![EngineEntry::default(); MAX_ENGINES],
            filter: vec![0; FILTER_WORDS],
            engine_addrs: Vec::new(),
            mac_filter: vec![0; FILTER_WORDS],
            engine_macs: Vec::new(),
            prefixes: Vec::new(),
        }
    }
}

/// The MAC filter's word and bit for a MAC: its last two bytes, the ones that differ
/// between the NICs of one vendor.
pub const fn mac_filter_position(mac: &[u8; 6]) -> (usize, u32) {
    let low = ((mac[4] as u32) << 8) | mac[5] as u32;
    ((low >> 6) as usize, low & 63)
}

/// The engine source filter's word and bit for an address (host order).
pub const fn filter_position(addr: u32) -> (usize, u32) {
    (((addr & 0xffff) >> 6) as usize, addr & 63)
}

/// Mask positions for the C program: bit k of a value index is bit `pos[k]` of the
/// 96-bit number src_addr:dst_addr:src_port:dst_port, the order `wccp::assign::Mask`
/// numbers its values in.
pub fn mask_positions(mask: &Mask) -> [u8; MASK_POSITIONS] {
    let packed = (u128::from(mask.src_addr()) << 64)
        | (u128::from(mask.dst_addr()) << 32)
        | (u128::from(mask.src_port()) << 16)
        | u128::from(mask.dst_port());
    let mut out = [NO_POSITION; MASK_POSITIONS];
    let set = (0..96u8).filter(|&bit| packed >> bit & 1 == 1);
    for (slot, bit) in out.iter_mut().zip(set) {
        *slot = bit;
    }
    out
}

impl TableConfig {
    /// Compiles the configuration into one slot's map contents.
    pub fn compile(&self) -> Result<Table, TableError> {
        if self.services.len() > MAX_SERVICES {
            return Err(TableError::TooManyServices(self.services.len()));
        }
        if self.engines.len() > MAX_ENGINES {
            return Err(TableError::TooManyEngines(self.engines.len()));
        }
        let mut table = Table::default();
        for (i, e) in self.engines.iter().enumerate() {
            let addr = u32::from_ne_bytes(e.addr.octets());
            if table.engine_addrs.iter().any(|&(a, _)| a == addr) {
                return Err(TableError::DuplicateEngine(e.addr));
            }
            table.engine_addrs.push((addr, i as u32));
            let (word, bit) = filter_position(u32::from(e.addr));
            table.filter[word] |= 1 << bit;
            if e.mtu != 0 && e.mtu < MIN_IPV4_MTU + GRE_OVERHEAD {
                return Err(TableError::EngineMtu(e.addr, e.mtu));
            }
            if let Some(v) = e.vlan.filter(|v| !(1..=4094).contains(v)) {
                return Err(TableError::EngineVlan(e.addr, v));
            }
            if e.return_method == Method::L2 {
                if let Some(&(_, other)) = table.engine_macs.iter().find(|(m, _)| *m == e.dst_mac) {
                    return Err(TableError::DuplicateEngineMac(
                        self.engines[other as usize].addr,
                        e.addr,
                    ));
                }
                table.engine_macs.push((e.dst_mac, i as u32));
                let (word, bit) = mac_filter_position(&e.dst_mac);
                table.mac_filter[word] |= 1 << bit;
            }
            table.engines[i] = EngineEntry {
                addr,
                router_addr: u32::from_ne_bytes(e.router_addr.octets()),
                dst_mac: e.dst_mac,
                src_mac: e.src_mac,
                ifindex: e.ifindex,
                mtu: e.mtu,
                method: match e.method {
                    Method::Gre => METHOD_GRE,
                    Method::L2 => METHOD_L2,
                },
                flags: if e.usable { ENGINE_USABLE } else { 0 },
                vlan_tci: e.vlan.unwrap_or(0).to_be(),
                reserved: 0,
            };
        }

        let mut order: Vec<&ServiceConfig> = self.services.iter().collect();
        order.sort_by_key(|s| (std::cmp::Reverse(s.priority), s.id));
        for (rank, s) in order.iter().enumerate() {
            if order.iter().filter(|o| o.id == s.id).count() > 1 {
                return Err(TableError::DuplicateService(s.id));
            }
            if s.ports.len() > 8 {
                return Err(TableError::TooManyPorts(s.id));
            }
            let pref = (MAX_SERVICES - rank) as u16;
            let p = s.protocol.index();
            if s.flags & flags::PORTS_DEFINED != 0 {
                let source = s.flags & flags::PORTS_SOURCE != 0;
                if source {
                    table.header.flags |= TABLE_SRC_PORTS;
                }
                for &port in s.ports.iter().filter(|&&port| port != 0) {
                    let entry = &mut table.ports[p * PORTS + usize::from(port)];
                    let slot = if source {
                        &mut entry.src_pref
                    } else {
                        &mut entry.dst_pref
                    };
                    *slot = (*slot).max(pref);
                }
            } else {
                table.header.any_pref[p] = table.header.any_pref[p].max(pref);
            }

            let (slots, mut entry) = match &s.assignment {
                Assignment::Hash(slots) => {
                    if slots.len() != BUCKETS {
                        return Err(TableError::AssignmentSize(s.id, slots.len(), BUCKETS));
                    }
                    (slots, ServiceEntry::default())
                }
                Assignment::Mask { mask, values } => {
                    if values.len() != mask.value_count() {
                        return Err(TableError::AssignmentSize(
                            s.id,
                            values.len(),
                            mask.value_count(),
                        ));
                    }
                    let entry = ServiceEntry {
                        options: SERVICE_MASK,
                        mask_pos: mask_positions(mask),
                        ..ServiceEntry::default()
                    };
                    (values, entry)
                }
            };
            entry.flags = s.flags;
            entry.service_id = s.id;
            if s.dynamic {
                entry.options |= SERVICE_DYNAMIC;
            }
            let gre = slots.iter().filter_map(|slot| slot.engine).any(|e| {
                self.engines
                    .get(usize::from(e))
                    .is_some_and(|e| e.method == Method::Gre)
            });
            if gre && s.protocol == Protocol::Tcp {
                entry.options |= SERVICE_MSS_CLAMP;
            }
            if !s.redirect_list.is_empty() || !s.skip_list.is_empty() {
                entry.options |= SERVICE_LISTS;
                if !s.redirect_list.is_empty() {
                    entry.options |= SERVICE_REDIRECT_LIST;
                }
                compile_lists(s, rank as u8, &mut table.prefixes)?;
                if table.prefixes.len() > MAX_PREFIXES {
                    return Err(TableError::TooManyPrefixes(table.prefixes.len()));
                }
            }
            table.services[rank] = entry;
            for (b, slot) in slots.iter().enumerate() {
                let mut flags = 0;
                let mut engine = 0;
                if let Some(e) = slot.engine {
                    if usize::from(e) >= self.engines.len() {
                        return Err(TableError::UnknownEngine(s.id, e));
                    }
                    flags |= BUCKET_ASSIGNED;
                    engine = e;
                }
                if slot.alternate {
                    flags |= BUCKET_ALTERNATE;
                }
                if slot.sticky {
                    flags |= BUCKET_STICKY;
                }
                table.buckets[rank * BUCKETS + b] = BucketEntry { engine, flags };
            }
        }
        table.header.services = order.len() as u16;
        table.header.mss_clamp = self.mss_clamp_value(&table);
        table
            .prefixes
            .sort_by_key(|(k, _)| (k.rank, k.addr, k.prefixlen));
        Ok(table)
    }

    /// The clamp the table holds: [`MssClamp::Auto`] resolved against the engines that
    /// clamped services use.
    fn mss_clamp_value(&self, table: &Table) -> u16 {
        match self.mss_clamp {
            MssClamp::Off => 0,
            MssClamp::Fixed(mss) => mss,
            MssClamp::Auto => {
                let clamped = table
                    .services
                    .iter()
                    .take(self.services.len())
                    .any(|s| s.options & SERVICE_MSS_CLAMP != 0);
                if !clamped {
                    return 0;
                }
                self.engines
                    .iter()
                    .filter(|e| e.method == Method::Gre)
                    .map(|e| if e.mtu == 0 { DEFAULT_MTU } else { e.mtu })
                    .min()
                    .map_or(0, |mtu| mtu - TCP_IP_HEADERS - GRE_OVERHEAD)
            }
        }
    }
}

/// Adds a service's lists to `out` as `prefixes` entries. Each listed prefix carries
/// the kinds of every listed prefix that contains it (itself included): the prefixes
/// that contain one address are nested, so the longest of them, which is what the trie
/// returns, then answers for all of them with one lookup.
fn compile_lists(
    s: &ServiceConfig,
    rank: u8,
    out: &mut Vec<(PrefixKey, u32)>,
) -> Result<(), TableError> {
    let mut kinds: HashMap<(u32, u8), u32> = HashMap::new();
    for (list, kind) in [
        (&s.skip_list, PREFIX_SKIP),
        (&s.redirect_list, PREFIX_REDIRECT),
    ] {
        for p in list {
            if p.len > 32 {
                return Err(TableError::BadPrefix(s.id, *p));
            }
            *kinds.entry((p.network(), p.len)).or_default() |= kind;
        }
    }
    for (&(network, len), _) in kinds.iter() {
        let mut value = 0;
        for l in 0..=len {
            let outer = Prefix::new(Ipv4Addr::from(network), l).network();
            value |= kinds.get(&(outer, l)).copied().unwrap_or(0);
        }
        out.push((
            PrefixKey {
                prefixlen: PREFIX_KEY_BITS + u32::from(len),
                slot: 0,
                rank,
                reserved: [0; 2],
                addr: network.to_be(),
            },
            value,
        ));
    }
    Ok(())
}

impl Table {
    /// A slot whose contents are unknown: every entry differs from it, so the next
    /// write of that slot rewrites everything.
    /// Whether this is [`Table::poisoned`]: the slot's content is unknown.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.header.services == u16::MAX && self.ports.is_empty()
    }

    /// Whether `other` has the same `slots[slot]` value (the hash and trie entries aside).
    pub(crate) fn same_slot_value(&self, other: &Self) -> bool {
        self.header == other.header
            && self.filter == other.filter
            && self.mac_filter == other.mac_filter
            && self.services == other.services
            && self.engines == other.engines
            && self.buckets == other.buckets
            && self.ports == other.ports
    }

    /// The `slots[slot]` value of this table: what the loader writes in one update.
    pub fn to_slot(&self) -> Box<SlotLayout> {
        let mut slot = SlotLayout::new_boxed();
        slot.header = self.header;
        copy_prefix(&mut slot.engine_filter, &self.filter);
        copy_prefix(&mut slot.mac_filter, &self.mac_filter);
        copy_prefix(&mut slot.services, &self.services);
        copy_prefix(&mut slot.engines, &self.engines);
        copy_prefix(&mut slot.buckets, &self.buckets);
        copy_prefix(&mut slot.ports, &self.ports);
        slot
    }

    /// The parts of a table a `slots[slot]` value holds, read back (the hash and trie
    /// maps' entries, `engine_addrs`, `engine_macs` and `prefixes`, stay empty).
    pub fn from_slot(slot: &SlotLayout) -> Self {
        Self {
            header: slot.header,
            ports: slot.ports.to_vec(),
            services: slot.services.to_vec(),
            buckets: slot.buckets.to_vec(),
            engines: slot.engines.to_vec(),
            filter: slot.engine_filter.to_vec(),
            engine_addrs: Vec::new(),
            mac_filter: slot.mac_filter.to_vec(),
            engine_macs: Vec::new(),
            prefixes: Vec::new(),
        }
    }

    pub(crate) fn poisoned() -> Self {
        Self {
            header: TableHeader {
                services: u16::MAX,
                mss_clamp: u16::MAX,
                ..TableHeader::default()
            },
            ports: Vec::new(),
            services: Vec::new(),
            buckets: Vec::new(),
            engines: Vec::new(),
            filter: Vec::new(),
            engine_addrs: Vec::new(),
            mac_filter: Vec::new(),
            engine_macs: Vec::new(),
            prefixes: Vec::new(),
        }
    }
}

/// Copies `from` over the start of `to` (a compiled table's vectors have exactly the
/// slot's lengths; a shorter one leaves zeros behind it, as a fresh map holds).
fn copy_prefix<T: Copy>(to: &mut [T], from: &[T]) {
    let n = from.len().min(to.len());
    to[..n].copy_from_slice(&from[..n]);
}
