//! Rust twins of the C types that maps share with the kernel, and the registry that the
//! layout test checks against the BTF of `layout_check.o`.
//!
//! The C header `src/bpf/redirector.h` is the source of truth. To share a new type:
//! 1. define it in `redirector.h` and add `LAYOUT_CHECK(<c name>);` to `layout_check.c`;
//! 2. define its `#[repr(C)]` twin here (same field names) and add one line to
//!    [`SHARED_TYPES`]: `shared_type!(RustName => "c_name" { field, field, ... })`.
//!
//! The macro refuses to compile if the field list misses a field of the Rust struct, and
//! the test fails if the C struct has a field the Rust one lacks, or any size or offset
//! differs.

use std::mem::{offset_of, size_of};

use crate::btf::StructLayout;

/// The object that exists only to put every shared type into BTF.
pub const LAYOUT_CHECK_OBJECT: &str = "layout_check";

/// Packet and byte counts, the value of per-CPU counter maps: one per CPU so the
/// hot path never contends, summed by the controller when it reads them.
/// C: `struct redirector_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets counted.
    pub packets: u64,
    /// Bytes of those packets, as the XDP program saw them (from the Ethernet header).
    pub bytes: u64,
}

// SAFETY: `repr(C)`, only integer fields, no padding (checked against BTF by the tests).
unsafe impl aya::Pod for Counters {}

/// Every counter of one CPU, indexed as the `STATS_*` constants say: the one value of
/// the per-CPU `stats` map, so that a packet pays one lookup for all its counts.
/// C: `struct redirector_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsBlock {
    /// By counter index.
    pub c: [Counters; STATS_ENTRIES],
}

// SAFETY: `repr(C)`, an array of `Counters` (integers only, no padding).
unsafe impl aya::Pod for StatsBlock {}

/// What the layout test needs to know about one Rust twin.
#[derive(Clone, Copy, Debug)]
pub struct SharedType {
    /// The Rust type's name, for messages.
    pub rust_name: &'static str,
    /// The C struct's tag, as it appears in BTF.
    pub c_name: &'static str,
    /// `size_of` the Rust type.
    pub size: usize,
    /// Every field, in declaration order.
    pub fields: &'static [Field],
}

/// One field of a Rust twin.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The field's name, which must be the C member's name.
    pub name: &'static str,
    /// `offset_of` the field.
    pub offset: usize,
    /// `size_of` the field's type: equal offsets with a narrower C type (and padding
    /// behind it) would otherwise pass.
    pub size: usize,
}

/// `size_of` the type of the field that `field` projects to; the function pointer is
/// never called, it only names the field's type in a const context.
#[doc(hidden)]
pub const fn size_of_field<T, F>(_field: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Builds a [`SharedType`] entry from a type and its complete field list.
///
/// The destructuring pattern without `..` makes a field missing from the list a compile
/// error, so the list cannot silently fall behind the struct.
macro_rules! shared_type {
    ($rust:ident => $c:literal { $($field:ident),+ $(,)? }) => {{
        #[allow(dead_code)]
        fn every_field_is_listed(value: &$rust) {
            let $rust { $($field: _),+ } = value;
        }
        SharedType {
            rust_name: stringify!($rust),
            c_name: $c,
            size: size_of::<$rust>(),
            fields: &[$(Field {
                name: stringify!($field),
                offset: offset_of!($rust, $field),
                size: size_of_field(|v: &$rust| &v.$field),
            }),+],
        }
    }};
}

/// The one control record (`control[0]`): which table slot packets read, and the
/// dead-man switch. C: `struct redirector_control`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// The controller's last heartbeat in jiffies (the kernel's tick counter, which the
    /// program reads with the inlined `bpf_jiffies64`; a clock helper call would cost a
    /// third of the program).
    pub heartbeat_jiffies: u64,
    /// Redirection stops when now > `heartbeat_jiffies + grace_jiffies` (wrapping, as in C).
    pub grace_jiffies: u64,
    /// Packets read table slot `generation & 1`; bumped after a slot is fully written.
    pub generation: u32,
    /// [`CONTROL_ENABLED`], [`CONTROL_L2_RETURN`] shifted by slot.
    pub flags: u32,
}

/// One (slot, protocol, port) entry: the best-priority service that matches the port, as
/// a destination port and as a source port, so that classification is a maximum of
/// preferences instead of a scan. A preference is `MAX_SERVICES - rank`, so that zero
/// (a fresh map) means no service. C: `struct redirector_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// Preference of the best service matching this destination port (0: none).
    pub dst_pref: u16,
    /// Preference of the best service matching this source port (0: none).
    pub src_pref: u16,
}

/// Per-slot header: the best service among those that match any port. C: `struct
/// redirector_table`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableHeader {
    /// Per protocol (0 TCP, 1 UDP): preference of the best service without ports.
    pub any_pref: [u16; PORT_PROTOCOLS],
    /// Services in this slot (informational).
    pub services: u16,
    /// Largest MSS a SYN-ACK of a [`SERVICE_MSS_CLAMP`] service may announce (0: no
    /// clamping): per table so that it changes with the generation flip.
    pub mss_clamp: u16,
    /// [`TABLE_SRC_PORTS`]: lets the program skip the source-port read when no service
    /// matches source ports (a cache miss per packet in a 512 KiB table otherwise).
    pub flags: u16,
    /// Zero.
    pub reserved: [u16; 3],
}

/// One table slot, the value of `slots[slot]`: all that classification reads by index,
/// in one map value so that a packet pays one lookup for it and an install is one write.
/// 683 KiB: only ever on the heap ([`SlotLayout::new_boxed`]). C: `struct redirector_slot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    /// Any-port preferences, MSS clamp, flags.
    pub header: TableHeader,
    /// Filter of engine source addresses (bit `addr & 0xffff`, host order).
    pub engine_filter: [u64; FILTER_WORDS],
    /// Filter of L2-return engines' MACs (bit of the last two bytes).
    pub mac_filter: [u64; FILTER_WORDS],
    /// By rank.
    pub services: [ServiceEntry; MAX_SERVICES],
    /// By engine index.
    pub engines: [EngineEntry; MAX_ENGINES],
    /// `[rank * BUCKETS + bucket or mask value]`.
    pub buckets: [BucketEntry; MAX_SERVICES * BUCKETS],
    /// `[protocol * PORTS + port]`.
    pub ports: [PortEntry; PORT_PROTOCOLS * PORTS],
}

impl SlotLayout {
    /// A zeroed slot (what a fresh map holds), allocated directly on the heap: the value
    /// is too big for a thread's stack.
    pub fn new_boxed() -> Box<Self> {
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: the layout is non-zero-sized; every field is an integer or an array of
        // integer-only `repr(C)` structs, for which all-zero bytes are a valid value; the
        // pointer comes from the global allocator with this very layout, as Box needs.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }
}

/// A service at its rank. C: `struct redirector_service`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// WCCP service flags (`wccp::assign::flags`).
    pub flags: u32,
    /// Service id: redirect header and counters.
    pub service_id: u8,
    /// [`SERVICE_DYNAMIC`], [`SERVICE_MASK`].
    pub options: u8,
    /// Zero.
    pub reserved: [u8; 2],
    /// Mask assignment: bit k of the value index is bit `mask_pos[k]` of the 96-bit
    /// number src_addr:dst_addr:src_port:dst_port; [`NO_POSITION`] ends the list.
    pub mask_pos: [u8; MASK_POSITIONS],
}

impl Default for ServiceEntry {
    fn default() -> Self {
        Self {
            flags: 0,
            service_id: 0,
            options: 0,
            reserved: [0; 2],
            mask_pos: [NO_POSITION; MASK_POSITIONS],
        }
    }
}

/// A bucket (hash) or value (mask) of a service. C: `struct redirector_bucket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketEntry {
    /// Engine index, meaningful with [`BUCKET_ASSIGNED`].
    pub engine: u8,
    /// `BUCKET_*`.
    pub flags: u8,
}

/// An engine and how to reach it. C: `struct redirector_engine`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineEntry {
    /// Engine address, network order (as the bytes of the packet).
    pub addr: u32,
    /// Outer source address of GRE packets, network order.
    pub router_addr: u32,
    /// Destination MAC: the engine's, or its next hop's.
    pub dst_mac: [u8; 6],
    /// Source MAC: the egress interface's.
    pub src_mac: [u8; 6],
    /// Egress interface; 0 sends back out of the ingress interface (XDP_TX).
    pub ifindex: u32,
    /// Largest IP packet the path takes after encapsulation; 0 leaves it unchecked.
    pub mtu: u16,
    /// [`METHOD_GRE`] or [`METHOD_L2`].
    pub method: u8,
    /// [`ENGINE_USABLE`].
    pub flags: u8,
    /// 802.1Q tag control (the VLAN id), network order, for an engine behind a VLAN
    /// device (`ifindex` is then the VLAN device's parent); 0: untagged.
    pub vlan_tci: u16,
    /// Zero.
    pub reserved: u16,
}

/// Key of `engine_addrs`. C: `struct redirector_engine_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EngineKey {
    /// Table slot.
    pub slot: u32,
    /// Engine address, network order.
    pub addr: u32,
}

/// Key of `engine_macs`: the L2-return engines by MAC, per slot so that the set changes
/// with the generation flip. C: `struct redirector_mac_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    /// Table slot.
    pub slot: u32,
    /// The engine's MAC, the source MAC of what it returns.
    pub mac: [u8; 6],
    /// Zero.
    pub reserved: [u8; 2],
}

/// Key of the `prefixes` LPM trie: slot and service rank lead the key so that each
/// slot's and each service's lists are separate sub-tries and a list changes with the
/// generation flip. `prefixlen` is [`PREFIX_KEY_BITS`] plus the address prefix's length.
/// C: `struct redirector_prefix_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKey {
    /// Bits of the key that count: [`PREFIX_KEY_BITS`] + the prefix length.
    pub prefixlen: u32,
    /// Table slot.
    pub slot: u8,
    /// The service's rank.
    pub rank: u8,
    /// Zero.
    pub reserved: [u8; 2],
    /// Address, network order.
    pub addr: u32,
}

/// Key of `conns`: a TCP flow as the client sends it. C: `struct redirector_flow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address, network order.
    pub saddr: u32,
    /// Destination address, network order.
    pub daddr: u32,
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol (6).
    pub protocol: u8,
    /// Zero.
    pub reserved: [u8; 3],
}

/// Value of `conns`. C: `struct redirector_conn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnEntry {
    /// Address of the engine chosen at the SYN, network order: a reused index never
    /// sends the flow to another engine.
    pub engine_addr: u32,
    /// Its index.
    pub engine: u32,
}

// SAFETY: all of these are `repr(C)` with only integer fields and no padding (checked
// against BTF by the tests, whose sizes equal the sum of the fields).
unsafe impl aya::Pod for Control {}
// SAFETY: as above.
unsafe impl aya::Pod for PortEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for TableHeader {}
// SAFETY: as above (arrays of the twins above, laid out without gaps: checked by BTF).
unsafe impl aya::Pod for SlotLayout {}
// SAFETY: as above.
unsafe impl aya::Pod for ServiceEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for BucketEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for EngineEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for EngineKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for MacKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PrefixKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ConnEntry {}

/// Every type shared with the C programs. One line per type.
pub const SHARED_TYPES: &[SharedType] = &[
    shared_type!(Counters => "redirector_counters" { packets, bytes }),
    shared_type!(Control => "redirector_control" { heartbeat_jiffies, grace_jiffies, generation, flags }),
    shared_type!(PortEntry => "redirector_port" { dst_pref, src_pref }),
    shared_type!(TableHeader => "redirector_table" { any_pref, services, mss_clamp, flags, reserved }),
    shared_type!(ServiceEntry => "redirector_service" {
        flags, service_id, options, reserved, mask_pos
    }),
    shared_type!(BucketEntry => "redirector_bucket" { engine, flags }),
    shared_type!(EngineEntry => "redirector_engine" {
        addr, router_addr, dst_mac, src_mac, ifindex, mtu, method, flags, vlan_tci, reserved
    }),
    shared_type!(EngineKey => "redirector_engine_key" { slot, addr }),
    shared_type!(FlowKey => "redirector_flow" { saddr, daddr, sport, dport, protocol, reserved }),
    shared_type!(ConnEntry => "redirector_conn" { engine_addr, engine }),
    shared_type!(MacKey => "redirector_mac_key" { slot, mac, reserved }),
    shared_type!(PrefixKey => "redirector_prefix_key" { prefixlen, slot, rank, reserved, addr }),
    shared_type!(StatsBlock => "redirector_stats" { c }),
    shared_type!(SlotLayout => "redirector_slot" {
        header, engine_filter, mac_filter, services, engines, buckets, ports
    }),
];

// The constants of redirector.h, same names (the differential tests catch a drift).

/// Table slots, written alternately.
pub const SLOTS: usize = 2;
/// Services per table.
pub const MAX_SERVICES: usize = 256;
/// Engine indices per table.
pub const MAX_ENGINES: usize = 256;
/// Buckets (or mask values) per service.
pub const BUCKETS: usize = 256;
/// Ports per protocol.
pub const PORTS: usize = 65536;
/// Protocols with ports: 0 TCP, 1 UDP.
pub const PORT_PROTOCOLS: usize = 2;
/// Interfaces that can have flags; higher ifindexes have none.
pub const MAX_IFINDEX: usize = 1024;
/// 64-bit words of the engine source filter per slot.
pub const FILTER_WORDS: usize = 1024;
/// Preference meaning no service.
pub const NO_SERVICE_PREF: u16 = 0;
/// Mask positions per service.
pub const MASK_POSITIONS: usize = 8;
/// An unused mask position.
pub const NO_POSITION: u8 = 0xff;
/// `control.flags`: redirection on.
pub const CONTROL_ENABLED: u32 = 0x1;
/// `control.flags`, shifted left by the slot: that slot has L2-return engines. Part of
/// the record every packet reads anyway, so that tables without such engines pay nothing
/// for the L2 return check.
pub const CONTROL_L2_RETURN: u32 = 0x2;
/// `control.flags`: some interface has `IFACE_*` flags. Without it the program neither
/// reads the ingress interface nor looks it up (in XDP the index is three dependent loads
/// away, a cache miss where nothing else touches the device).
pub const CONTROL_IFACES: u32 = 0x8;
/// `ifaces[]`: never redirect traffic arriving here.
pub const IFACE_EXCLUDED: u32 = 0x1;
/// `ifaces[]`: engine-facing, packet return only.
pub const IFACE_ENGINE_FACING: u32 = 0x2;
/// `service.options`: the D bit of the redirect header.
pub const SERVICE_DYNAMIC: u8 = 0x1;
/// `service.options`: mask assignment.
pub const SERVICE_MASK: u8 = 0x2;
/// `service.options`: the service has a skip or a redirect list, so its packets pay the
/// prefix lookups; services without lists pay nothing.
pub const SERVICE_LISTS: u8 = 0x4;
/// `service.options`: the service has a redirect list, so a packet with neither address
/// in it is skipped.
pub const SERVICE_REDIRECT_LIST: u8 = 0x8;
/// `service.options`: the service is redirected in GRE, so the SYN-ACKs toward its
/// clients are MSS-clamped (when the table's clamp is not 0).
pub const SERVICE_MSS_CLAMP: u8 = 0x10;
/// `prefixes` value: a listed skip prefix contains the address.
pub const PREFIX_SKIP: u32 = 0x1;
/// `prefixes` value: a listed redirect prefix contains the address.
pub const PREFIX_REDIRECT: u32 = 0x2;
/// Bits of a `prefixes` key before the address (slot, rank, reserved).
pub const PREFIX_KEY_BITS: u32 = 32;
/// Prefixes per table slot (both lists of every service).
pub const MAX_PREFIXES: usize = 16384;
/// `bucket.flags`: the engine is meaningful.
pub const BUCKET_ASSIGNED: u8 = 0x1;
/// `table.flags`: some service of the slot matches source ports.
pub const TABLE_SRC_PORTS: u16 = 0x1;
/// `bucket.flags`: use the alternate hash's bucket.
pub const BUCKET_ALTERNATE: u8 = 0x2;
/// `bucket.flags`: owner changed recently, TCP flows consult the connection table.
pub const BUCKET_STICKY: u8 = 0x4;
/// `engine.method`: GRE with redirect header.
pub const METHOD_GRE: u8 = 1;
/// `engine.method`: L2 rewrite.
pub const METHOD_L2: u8 = 2;
/// `engine.flags`: usable.
pub const ENGINE_USABLE: u8 = 0x1;
/// Reasons: one counter per reason at `stats[reason]`.
pub const REASONS: usize = 32;
/// First counter of things done to a packet besides its verdict (reasons stay below).
pub const STATS_EVENTS_BASE: usize = 24;
/// SYN-ACKs whose MSS option was lowered.
pub const STATS_MSS_CLAMPED: usize = STATS_EVENTS_BASE;
/// GSO packets (merged by GRO on the way in) that "redirect out" sent in GRE for the
/// kernel to segment, one GRE packet per segment.
pub const STATS_GSO_ENCAPSULATED: usize = STATS_EVENTS_BASE + 1;
/// First per-service counter.
pub const STATS_SERVICE_BASE: usize = REASONS;
/// Counters per service.
pub const STATS_PER_SERVICE: usize = 3;
/// Per-service kind: redirected.
pub const STATS_SERVICE_REDIRECTED: usize = 0;
/// Per-service kind: failed open (unassigned, engine down, heartbeat, too big without DF).
pub const STATS_SERVICE_FAILED_OPEN: usize = 1;
/// Per-service kind: skipped by its skip or redirect list.
pub const STATS_SERVICE_SKIPPED: usize = 2;
/// First per-engine counter.
pub const STATS_ENGINE_BASE: usize = STATS_SERVICE_BASE + 256 * STATS_PER_SERVICE;
/// Counters per engine.
pub const STATS_PER_ENGINE: usize = 3;
/// Per-engine kind: redirected to it.
pub const STATS_ENGINE_REDIRECTED: usize = 0;
/// Per-engine kind: returned by it and decapsulated.
pub const STATS_ENGINE_RETURNED: usize = 1;
/// Per-engine kind: sent to it by the connection table.
pub const STATS_ENGINE_CONN_HITS: usize = 2;
/// Counters in the `stats` map's one per-CPU value ([`StatsBlock`]).
pub const STATS_ENTRIES: usize = STATS_ENGINE_BASE + MAX_ENGINES * STATS_PER_ENGINE;

impl SharedType {
    /// How this twin differs from the C struct `c` (empty when they agree): struct size,
    /// every field's offset and size, fields on one side only, and bitfields (Rust has
    /// none).
    pub fn mismatches(&self, c: &StructLayout) -> Vec<String> {
        let mut out = Vec::new();
        let who = format!("{} (C struct {})", self.rust_name, self.c_name);
        if c.size as usize != self.size {
            out.push(format!(
                "{who}: size is {} in C, {} in Rust",
                c.size, self.size
            ));
        }
        for member in &c.members {
            let Some(field) = self.fields.iter().find(|f| f.name == member.name) else {
                out.push(format!(
                    "{who}: C field `{}` has no Rust field",
                    member.name
                ));
                continue;
            };
            if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
                out.push(format!(
                    "{who}: C field `{}` is a bitfield, which Rust cannot mirror",
                    member.name
                ));
                continue;
            }
            if (member.bit_offset / 8) as usize != field.offset {
                out.push(format!(
                    "{who}: field `{}` is at offset {} in C, {} in Rust",
                    member.name,
                    member.bit_offset / 8,
                    field.offset
                ));
            }
            if member.size as usize != field.size {
                out.push(format!(
                    "{who}: field `{}` has size {} in C, {} in Rust",
                    member.name, member.size, field.size
                ));
            }
        }
        for field in self.fields {
            if !c.members.iter().any(|m| m.name == field.name) {
                out.push(format!("{who}: Rust field `{}` is not in C", field.name));
            }
        }
        out
    }
}
