//! What the controller wants redirected ([`TableConfig`]) and its compiled form
//! ([`Table`]): the exact contents of one table slot of the maps, which the loader writes
//! and the model reads.
//!
//! Compiling is where the hot path's shortcuts are made: services are ranked by priority
//! once, each port gets the best-ranked service that matches it, and the engines'
//! addresses go into a bit filter, so the program never scans a list.

use std::net::Ipv4Addr;

use wccp::assign::{flags, Mask};

use crate::layout::{
    BucketEntry, EngineEntry, PortEntry, ServiceEntry, TableHeader, BUCKETS, BUCKET_ALTERNATE,
    BUCKET_ASSIGNED, BUCKET_STICKY, ENGINE_USABLE, FILTER_WORDS, MASK_POSITIONS, MAX_ENGINES,
    MAX_SERVICES, METHOD_GRE, METHOD_L2, NO_POSITION, PORTS, PORT_PROTOCOLS, SERVICE_DYNAMIC,
    SERVICE_MASK,
};

/// The protocols a service can match (the only ones with ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: redirected flows are remembered at their SYN.
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
    /// A listed but unusable engine makes its buckets fail open.
    pub usable: bool,
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

/// One service group as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Everything one table slot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableConfig {
    /// Services, in any order.
    pub services: Vec<ServiceConfig>,
    /// Engines, indexed by [`Slot::engine`].
    pub engines: Vec<EngineConfig>,
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
        }
    }
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
        Ok(table)
    }
}

impl Table {
    /// A slot whose contents are unknown: every entry differs from it, so the next
    /// write of that slot rewrites everything.
    /// Whether this is [`Table::poisoned`]: the slot's content is unknown.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.header.reserved == u16::MAX && self.ports.is_empty()
    }

    pub(crate) fn poisoned() -> Self {
        Self {
            header: TableHeader {
                reserved: u16::MAX,
                ..TableHeader::default()
            },
            ports: Vec::new(),
            services: Vec::new(),
            buckets: Vec::new(),
            engines: Vec::new(),
            filter: Vec::new(),
            engine_addrs: Vec::new(),
        }
    }
}
