//! The reference model of the XDP program `xdp_redirect` (`src/bpf/redirect.c`), and of
//! the tc egress program `tc_redirect_out` ([`Dataplane::process_egress`]): the same
//! maps, the same per-packet decision, the same output bytes and counters, written for
//! reading rather than for speed. The differential tests hold the C programs to it.
//!
//! The order of the checks is part of the specification (it decides which reason a
//! packet is counted under):
//!
//! 1. Ethernet, up to two VLAN tags (802.1Q / 802.1ad); not IPv4: pass.
//! 2. IPv4 header: version, IHL, total length within the frame; otherwise malformed.
//! 3. Control record: not enabled: pass. The generation picks the table slot.
//! 4. GRE from an engine address: packet return (decapsulate WCCP GRE, pass).
//! 5. Interface flags: excluded: pass.
//! 6. A TCP SYN-ACK (not a fragment) whose source port is served by a service redirected
//!    in GRE (the best of those matching it as a destination port or any port): its MSS
//!    option is lowered to the table's clamp, checksum updated; processing goes on with
//!    the clamped frame. Before the engine-facing check, because the engines' SYN-ACKs
//!    arrive there.
//! 7. Source MAC of an L2-return engine (only when the slot has such engines, a bit of
//!    the control record; then behind a bit filter), source address not the engine's
//!    own: returned, pass.
//! 8. Engine-facing interface: pass.
//! 9. Fragments (first or not): pass; a flow's fragments must not split.
//! 10. TCP or UDP header (ports; TCP flags); other protocols: no service.
//! 11. Service: the best of the services matching the destination port, the source port,
//!     or any port of the protocol.
//! 12. Source is an engine (its own connection): pass.
//! 13. Lists, for services that have them: the source or destination in the skip list, or
//!     a redirect list that holds neither: pass.
//! 14. Bucket (hash, with the alternate hash when the bucket says so) or mask value;
//!     unassigned: fail open.
//! 15. TCP non-SYN in a sticky bucket: the engine remembered at the flow's SYN, while it
//!     is usable.
//! 16. Engine not usable, or heartbeat stale: fail open.
//! 17. GRE and too big for the engine's MTU: DF clear, fail open; DF set, answer with
//!     ICMP fragmentation needed out of the ingress interface.
//! 18. A SYN (without ACK) records its engine in the connection table.
//! 19. The client's tags are dropped; an engine behind a VLAN device gets its 802.1Q tag.
//!     L2: rewrite both MACs. GRE: replace the Ethernet header (and tags) by Ethernet +
//!     outer IPv4 (TOS and DF copied, TTL 64, id 0) + GRE 0x883E + redirect header.

use std::collections::HashMap;

use crate::layout::{
    ConnEntry, Control, Counters, EngineEntry, FlowKey, ServiceEntry, BUCKETS, BUCKET_ALTERNATE,
    BUCKET_ASSIGNED, BUCKET_STICKY, CONTROL_ENABLED, CONTROL_IFACES, CONTROL_L2_RETURN,
    ENGINE_USABLE, IFACE_ENGINE_FACING, IFACE_EXCLUDED, MASK_POSITIONS, MAX_ENGINES, MAX_IFINDEX,
    MAX_SERVICES, METHOD_GRE, METHOD_L2, PORTS, PREFIX_KEY_BITS, PREFIX_REDIRECT, PREFIX_SKIP,
    SERVICE_DYNAMIC, SERVICE_LISTS, SERVICE_MASK, SERVICE_MSS_CLAMP, SERVICE_REDIRECT_LIST,
    STATS_ENGINE_BASE, STATS_ENGINE_CONN_HITS, STATS_ENGINE_REDIRECTED, STATS_ENGINE_RETURNED,
    STATS_ENTRIES, STATS_MSS_CLAMPED, STATS_PER_ENGINE, STATS_PER_SERVICE, STATS_SERVICE_BASE,
    STATS_SERVICE_FAILED_OPEN, STATS_SERVICE_REDIRECTED, STATS_SERVICE_SKIPPED,
};
use crate::table::{filter_position, mac_filter_position, Table};

/// Why a packet got its verdict; the index of its counter in `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Reason {
    /// Not IPv4.
    NotIpv4 = 0,
    /// Truncated or invalid headers.
    Malformed = 1,
    /// No table, or redirection disabled.
    Disabled = 2,
    /// Arrived on an excluded interface.
    Excluded = 3,
    /// Arrived on an engine-facing interface.
    EngineFacing = 4,
    /// An IP fragment.
    Fragment = 5,
    /// No service matches.
    NoService = 6,
    /// Sent by an engine.
    EngineSource = 7,
    /// Fail open: bucket or value unassigned.
    Unassigned = 8,
    /// Fail open: engine unusable.
    EngineDown = 9,
    /// Fail open: the controller's heartbeat is stale.
    Heartbeat = 10,
    /// Too big for GRE, DF clear: forwarded unredirected.
    TooBig = 11,
    /// Too big for GRE, DF set: answered with ICMP fragmentation needed (XDP_TX), so
    /// that the sender lowers its path MTU.
    TooBigDf = 12,
    /// Redirected in GRE.
    RedirectGre = 13,
    /// Redirected by L2 rewrite.
    RedirectL2 = 14,
    /// Returned by an engine in GRE and decapsulated.
    ReturnGre = 15,
    /// GRE from an engine that is not WCCP GRE we can decapsulate: passed untouched.
    ReturnBad = 16,
    /// The kernel refused to resize (or tag) the packet: passed (never in the model).
    AdjustFailed = 17,
    /// From the MAC of an engine that returns at L2 (and not from its own address):
    /// forwarded, never redirected again.
    ReturnL2 = 18,
    /// The service's skip list holds the source or the destination.
    ListSkip = 19,
    /// The service has a redirect list that holds neither address.
    NotListed = 20,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 21] = [
        Reason::NotIpv4,
        Reason::Malformed,
        Reason::Disabled,
        Reason::Excluded,
        Reason::EngineFacing,
        Reason::Fragment,
        Reason::NoService,
        Reason::EngineSource,
        Reason::Unassigned,
        Reason::EngineDown,
        Reason::Heartbeat,
        Reason::TooBig,
        Reason::TooBigDf,
        Reason::RedirectGre,
        Reason::RedirectL2,
        Reason::ReturnGre,
        Reason::ReturnBad,
        Reason::AdjustFailed,
        Reason::ReturnL2,
        Reason::ListSkip,
        Reason::NotListed,
    ];

    /// The reason with counter index `index`.
    pub fn from_index(index: u32) -> Option<Reason> {
        Reason::ALL.get(index as usize).copied()
    }
}

/// The XDP verdict, as the kernel numbers it (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// XDP_ABORTED.
    Aborted,
    /// XDP_DROP.
    Drop,
    /// XDP_PASS: on to the kernel's stack.
    Pass,
    /// XDP_TX: back out of the ingress interface.
    Tx,
    /// XDP_REDIRECT to an interface.
    Redirect(u32),
}

impl Verdict {
    /// The tc program's return value for the same decision: `TC_ACT_OK` (0) for
    /// [`Verdict::Pass`], `TC_ACT_REDIRECT` (7), `TC_ACT_SHOT` (2) for the rest.
    pub const fn tc_code(self) -> u32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Redirect(_) => 7,
            _ => 2,
        }
    }

    /// The program's return value.
    pub const fn code(self) -> u32 {
        match self {
            Verdict::Aborted => 0,
            Verdict::Drop => 1,
            Verdict::Pass => 2,
            Verdict::Tx => 3,
            Verdict::Redirect(_) => 4,
        }
    }
}

/// What the program does with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The frame as the program leaves it.
    pub frame: Vec<u8>,
}

/// The state of all maps, as the program sees them.
#[derive(Clone, Debug)]
pub struct Dataplane {
    /// `control[0]`.
    pub control: Control,
    /// `ifaces[]`, [`MAX_IFINDEX`] entries.
    pub ifaces: Vec<u32>,
    /// The two table slots.
    pub slots: [Table; 2],
    /// `conns`.
    pub conns: HashMap<FlowKey, ConnEntry>,
    /// `stats`, summed over CPUs.
    pub stats: Vec<Counters>,
}

impl Default for Dataplane {
    /// Fresh maps: everything zero, so every packet passes.
    fn default() -> Self {
        Self {
            control: Control::default(),
            ifaces: vec![0; MAX_IFINDEX],
            slots: [Table::default(), Table::default()],
            conns: HashMap::new(),
            stats: vec![Counters::default(); STATS_ENTRIES],
        }
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ICMP: u8 = 1;
const IP_MF_OFFSET: u16 = 0x3fff;
const IP_DF: u16 = 0x4000;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Outer IPv4 + GRE + redirect header.
pub const GRE_OVERHEAD: usize = 28;

/// The IPv4 header at `l3`, checked as both hooks check it (version 4, IHL >= 5, header
/// and total length within the frame): its length in bytes, total length and fragment
/// word, or `None` for a malformed one.
fn ipv4_header(frame: &[u8], l3: usize) -> Option<(usize, usize, u16)> {
    let ip = frame.get(l3..).filter(|ip| ip.len() >= 20)?;
    if ip[0] >> 4 != 4 || ip[0] & 0xf < 5 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip.len() < ihl || tot_len < ihl || tot_len > ip.len() {
        return None;
    }
    Some((ihl, tot_len, u16::from_be_bytes([ip[6], ip[7]])))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The draft's fold of a key to a bucket.
pub const fn fold(key: u32) -> u8 {
    let h = key ^ (key >> 16);
    ((h ^ (h >> 8)) & 0xff) as u8
}

/// The draft's key for the four hash flags in the low bits of `flags` (primary flags;
/// shift the alternate ones down by 8).
pub const fn hash_key(flags: u32, saddr: u32, daddr: u32, sport: u16, dport: u16) -> u32 {
    let mut key = 0;
    if flags & 0x1 != 0 {
        key ^= saddr;
    }
    if flags & 0x2 != 0 {
        key ^= daddr;
    }
    if flags & 0x4 != 0 {
        key ^= sport as u32;
    }
    if flags & 0x8 != 0 {
        key ^= dport as u32;
    }
    key
}

/// The mask value index of a packet under a service's mask positions.
pub fn mask_index(
    pos: &[u8; MASK_POSITIONS],
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
) -> u32 {
    let packed = (u128::from(saddr) << 64)
        | (u128::from(daddr) << 32)
        | (u128::from(sport) << 16)
        | u128::from(dport);
    let mut index = 0;
    for (k, &p) in pos.iter().enumerate() {
        if p >= 96 {
            break;
        }
        index |= ((packed >> p) & 1) as u32 * (1 << k);
    }
    index
}

/// The IPv4 header checksum of `header` (whose checksum field is zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// RFC 1624's incremental update (eqn. 3) of a checksum for one 16-bit word changed
/// from `old` to `new`: `~(~check + ~old + new)`, the arithmetic the C program does.
pub fn checksum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Bytes of IP packet the ICMP answer needs in the frame: the C program's checksum reads
/// a fixed window of 76 bytes (ICMP header, the longest IP header, 8 bytes) that starts
/// 8 bytes before the original IP header. A compiled table's MTU (at least 96) makes
/// every too-big packet longer than that.
const ICMP_QUOTE_MIN: usize = 68;
/// TOS of the ICMP answer: precedence "internetwork control", as hosts send errors.
const ICMP_TOS: u8 = 0xc0;

/// The ICMP fragmentation-needed (type 3 code 4) answer to a DF packet too big for its
/// engine's path, as the C program writes it: back to the sender on the Ethernet it came
/// by (MACs swapped, VLAN tags kept), from the router's address on the engine's side,
/// announcing the engine's MTU less GRE's 28 bytes, quoting the IP header and the first 8
/// bytes of payload (RFC 792). The client's stack lowers its path MTU and resends.
pub fn frag_needed(frame: &[u8], l3: usize, ihl: usize, router_addr: u32, mtu: u16) -> Vec<u8> {
    let quote = &frame[l3..l3 + ihl + 8];
    let mut out = Vec::with_capacity(l3 + 28 + quote.len());
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l3]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = ICMP_TOS;
    ip[2..4].copy_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP;
    ip[12..16].copy_from_slice(&router_addr.to_ne_bytes());
    ip[16..20].copy_from_slice(&frame[l3 + 12..l3 + 16]);
    let check = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    out.extend_from_slice(&ip);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&(mtu - GRE_OVERHEAD as u16).to_be_bytes());
    icmp.extend_from_slice(quote);
    let check = ipv4_checksum(&icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    out.extend_from_slice(&icmp);
    out
}

/// `flags` with slot `generation & 1`'s [`CONTROL_L2_RETURN`] bit saying whether `table`
/// has L2-return engines: how the loader writes the control record with a table.
pub fn l2_return_flag(flags: u32, generation: u32, table: &Table) -> u32 {
    let bit = CONTROL_L2_RETURN << (generation & 1);
    if table.engine_macs.is_empty() {
        flags & !bit
    } else {
        flags | bit
    }
}

/// `flags` with [`CONTROL_IFACES`] set exactly when some interface has flags.
pub fn iface_flag(flags: u32, ifaces: &[u32]) -> u32 {
    if ifaces.iter().any(|&f| f != 0) {
        flags | CONTROL_IFACES
    } else {
        flags & !CONTROL_IFACES
    }
}

/// What [`Dataplane::classify`] chose for a packet to redirect.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Engine index.
    pub engine: usize,
    /// Its entry.
    pub eng: EngineEntry,
    /// The service's entry.
    pub svc: ServiceEntry,
    /// Service id.
    pub service: u8,
    /// Primary bucket or mask value.
    pub primary: u8,
    /// Secondary (alternate hash) bucket.
    pub secondary: u8,
    /// The alternate hash was used.
    pub alternate: bool,
    /// A TCP SYN without ACK: its engine is remembered.
    pub syn: bool,
    /// The flow, as the connection table keys it.
    pub flow: FlowKey,
}

/// The redirected frame, as both hooks write it: L2, both MACs rewritten; GRE, the
/// Ethernet header (and tags) replaced by Ethernet + outer IPv4 (TOS and DF copied, TTL
/// 64, id 0) + GRE 0x883E + redirect header.
fn encapsulate(frame: &[u8], l3: usize, d: &Decision, tag_in_bytes: bool) -> (Vec<u8>, Reason) {
    let eng = d.eng;
    let ip = &frame[l3..];
    // The client's tags go; an engine behind a VLAN device gets its tag, in the frame's
    // bytes at XDP, as skb metadata at tc egress (not in the bytes).
    let mut out = Vec::with_capacity(frame.len() + GRE_OVERHEAD + 4);
    out.extend_from_slice(&eng.dst_mac);
    out.extend_from_slice(&eng.src_mac);
    if eng.vlan_tci != 0 && tag_in_bytes {
        out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        out.extend_from_slice(&eng.vlan_tci.to_ne_bytes());
    }
    if eng.method == METHOD_L2 {
        out.extend_from_slice(&frame[l3 - 2..]);
        return (out, Reason::RedirectL2);
    }
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag_off = u16::from_be_bytes([ip[6], ip[7]]);
    out.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut outer = [0u8; 20];
    outer[0] = 0x45;
    outer[1] = ip[1];
    outer[2..4].copy_from_slice(&((tot_len + GRE_OVERHEAD) as u16).to_be_bytes());
    outer[6..8].copy_from_slice(&(frag_off & IP_DF).to_be_bytes());
    outer[8] = 64;
    outer[9] = IPPROTO_GRE;
    outer[12..16].copy_from_slice(&eng.router_addr.to_ne_bytes());
    outer[16..20].copy_from_slice(&eng.addr.to_ne_bytes());
    let check = ipv4_checksum(&outer);
    outer[10..12].copy_from_slice(&check.to_be_bytes());
    out.extend_from_slice(&outer);
    out.extend_from_slice(&[0, 0, 0x88, 0x3e]);
    let mut rh0 = 0;
    if d.svc.options & SERVICE_DYNAMIC != 0 {
        rh0 |= 0x01;
    }
    if d.alternate {
        rh0 |= 0x02;
    }
    out.extend_from_slice(&[rh0, d.service, d.secondary, d.primary]);
    out.extend_from_slice(&frame[l3..]);
    (out, Reason::RedirectGre)
}

impl Table {
    /// What the `prefixes` trie answers for `addr` (host order) under the service at
    /// `rank`: the value of the longest listed prefix that contains it, 0 for none.
    pub fn prefix_kinds(&self, rank: usize, addr: u32) -> u32 {
        self.prefixes
            .iter()
            .filter(|(k, _)| usize::from(k.rank) == rank)
            .filter(|(k, _)| {
                let len = k.prefixlen - PREFIX_KEY_BITS;
                let net = u32::from_be(k.addr);
                len == 0 || (addr ^ net) >> (32 - len) == 0
            })
            .max_by_key(|(k, _)| k.prefixlen)
            .map_or(0, |&(_, v)| v)
    }
}

impl Dataplane {
    /// The table packets read now.
    pub fn active(&self) -> &Table {
        &self.slots[(self.control.generation & 1) as usize]
    }

    /// Sets interface `ifindex`'s `IFACE_*` flags, and [`CONTROL_IFACES`] as the loader
    /// does ([`iface_flag`]).
    pub fn set_iface_flags(&mut self, ifindex: u32, flags: u32) {
        if let Some(f) = self.ifaces.get_mut(ifindex as usize) {
            *f = flags;
        }
        self.control.flags = iface_flag(self.control.flags, &self.ifaces);
    }

    /// Installs a table the way the loader does: into the slot packets are not reading,
    /// then flips the generation, so no packet sees half of it.
    pub fn install(&mut self, table: Table) {
        let next = self.control.generation.wrapping_add(1);
        self.slots[(next & 1) as usize] = table;
        self.control.generation = next;
        self.control.flags |= CONTROL_ENABLED;
        self.control.flags =
            l2_return_flag(self.control.flags, next, &self.slots[(next & 1) as usize]);
    }

    fn count(&mut self, index: usize, bytes: u64) {
        if let Some(c) = self.stats.get_mut(index) {
            c.packets += 1;
            c.bytes += bytes;
        }
    }

    fn finish(&mut self, verdict: Verdict, reason: Reason, frame: Vec<u8>, bytes: u64) -> Outcome {
        self.count(reason as usize, bytes);
        Outcome {
            verdict,
            reason,
            frame,
        }
    }

    fn fail_open(&mut self, reason: Reason, service: u8, frame: &[u8], bytes: u64) -> Outcome {
        self.count(
            STATS_SERVICE_BASE
                + usize::from(service) * STATS_PER_SERVICE
                + STATS_SERVICE_FAILED_OPEN,
            bytes,
        );
        self.finish(Verdict::Pass, reason, frame.to_vec(), bytes)
    }

    /// Runs the program on one frame that arrived on `ifindex` when the kernel's jiffies
    /// counter read `now_jiffies`.
    pub fn process(&mut self, frame: &[u8], ifindex: u32, now_jiffies: u64) -> Outcome {
        let bytes = frame.len() as u64;
        let pass = |dp: &mut Self, reason| dp.finish(Verdict::Pass, reason, frame.to_vec(), bytes);

        let Some(mut proto) = be16(frame, 12) else {
            return pass(self, Reason::Malformed);
        };
        let mut l3 = 14;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let Some(p) = be16(frame, 16) else {
                return pass(self, Reason::Malformed);
            };
            proto = p;
            l3 = 18;
            if proto == ETH_P_8021Q {
                let Some(p) = be16(frame, 20) else {
                    return pass(self, Reason::Malformed);
                };
                proto = p;
                l3 = 22;
            }
        }
        if proto != ETH_P_IP {
            return pass(self, Reason::NotIpv4);
        }
        let Some((ihl, tot_len, frag_off)) = ipv4_header(frame, l3) else {
            return pass(self, Reason::Malformed);
        };
        let ip = &frame[l3..];
        let frag = frag_off & IP_MF_OFFSET != 0;
        let protocol = ip[9];
        let saddr_ne = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);

        if self.control.flags & CONTROL_ENABLED == 0 {
            return pass(self, Reason::Disabled);
        }
        let slot = (self.control.generation & 1) as usize;

        if protocol == IPPROTO_GRE {
            let engine = self.slots[slot]
                .engine_addrs
                .iter()
                .find(|&&(a, _)| a == saddr_ne)
                .map(|&(_, i)| i);
            if let Some(engine) = engine {
                return self.packet_return(frame, l3, ihl, frag, engine, bytes);
            }
        }

        let iface = if self.control.flags & CONTROL_IFACES != 0 && (ifindex as usize) < MAX_IFINDEX
        {
            self.ifaces[ifindex as usize]
        } else {
            0
        };
        if iface & IFACE_EXCLUDED != 0 {
            return pass(self, Reason::Excluded);
        }

        // From here on the frame may carry a clamped MSS: every outcome uses it.
        let mut frame = frame.to_vec();
        if protocol == IPPROTO_TCP && !frag {
            let th = l3 + ihl;
            if self.clamp_synack(&mut frame, th, slot) {
                self.count(STATS_MSS_CLAMPED, bytes);
            }
        }
        let frame = frame;
        let pass = |dp: &mut Self, reason| dp.finish(Verdict::Pass, reason, frame.clone(), bytes);
        let ip = &frame[l3..];

        {
            let table = &self.slots[slot];
            let mac: [u8; 6] = frame[6..12].try_into().expect("14-byte header checked");
            let (word, bit) = mac_filter_position(&mac);
            if self.control.flags & (CONTROL_L2_RETURN << slot) != 0
                && table.mac_filter[word] >> bit & 1 == 1
            {
                let found = table.engine_macs.iter().find(|(m, _)| *m == mac);
                if let Some(&(_, engine)) = found {
                    let idx = engine as usize & (MAX_ENGINES - 1);
                    if table.engines[idx].addr != saddr_ne {
                        self.count(
                            STATS_ENGINE_BASE + idx * STATS_PER_ENGINE + STATS_ENGINE_RETURNED,
                            bytes,
                        );
                        return pass(self, Reason::ReturnL2);
                    }
                }
            }
        }

        if iface & IFACE_ENGINE_FACING != 0 {
            return pass(self, Reason::EngineFacing);
        }
        if frag {
            return pass(self, Reason::Fragment);
        }

        let d = match self.classify(&frame, l3, ihl, slot, now_jiffies, bytes) {
            Ok(d) => d,
            Err(outcome) => return outcome,
        };
        let eng = d.eng;
        if eng.method == METHOD_GRE && eng.mtu != 0 && tot_len + GRE_OVERHEAD > usize::from(eng.mtu)
        {
            if frag_off & IP_DF == 0 {
                return self.fail_open(Reason::TooBig, d.service, &frame, bytes);
            }
            // The C program needs the quote and the words its checksum loop reads in
            // the frame; a compiled table's MTU (>= 96) always leaves them there.
            if ip.len() < ICMP_QUOTE_MIN {
                return self.fail_open(Reason::TooBigDf, d.service, &frame, bytes);
            }
            let out = frag_needed(&frame, l3, ihl, eng.router_addr, eng.mtu);
            return self.finish(Verdict::Tx, Reason::TooBigDf, out, bytes);
        }
        self.redirect(&frame, l3, &d, Verdict::Tx, true, bytes)
    }

    /// "Redirect out": runs the tc egress program `tc_redirect_out` on one frame leaving
    /// an interface it is attached to, which arrived on `ingress_ifindex` (0 for the
    /// router's own packets). Its verdict is [`Verdict::Pass`] for "on its way out of
    /// this interface" (rewritten or not), [`Verdict::Redirect`] for another interface;
    /// [`Verdict::tc_code`] numbers them as tc does.
    ///
    /// 1. Untagged Ethernet and IPv4, checked as at ingress.
    /// 2. Control record: not enabled, pass.
    /// 3. Arrived on an excluded or engine-facing interface (the engines' returns among
    ///    what arrives there): pass. Fragments: pass.
    /// 4. The classification of ingress ([`Dataplane::classify`]).
    /// 5. GRE and too big for the engine's MTU: fail open, DF or not (no ICMP here).
    ///    GSO packets, which the program checks by the length of one segment and
    ///    encapsulates for the kernel to segment (counted at
    ///    [`STATS_GSO_ENCAPSULATED`](crate::layout::STATS_GSO_ENCAPSULATED)), are not
    ///    modelled: a test run cannot make one, and the namespace test of redirect out
    ///    sends them.
    /// 6. SYN recorded; L2 or GRE rewrite as at ingress, but an engine's VLAN tag is skb
    ///    metadata (`bpf_skb_vlan_push`), not in the bytes; the engine's interface, or this
    ///    one when the engine's is 0.
    pub fn process_egress(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
        now_jiffies: u64,
    ) -> Outcome {
        let bytes = frame.len() as u64;
        let pass = |dp: &mut Self, reason| dp.finish(Verdict::Pass, reason, frame.to_vec(), bytes);
        let Some(proto) = be16(frame, 12) else {
            return pass(self, Reason::Malformed);
        };
        if proto != ETH_P_IP {
            return pass(self, Reason::NotIpv4);
        }
        let l3 = 14;
        let Some((ihl, tot_len, frag_off)) = ipv4_header(frame, l3) else {
            return pass(self, Reason::Malformed);
        };
        if self.control.flags & CONTROL_ENABLED == 0 {
            return pass(self, Reason::Disabled);
        }
        let slot = (self.control.generation & 1) as usize;
        let iface = if self.control.flags & CONTROL_IFACES != 0
            && (ingress_ifindex as usize) < MAX_IFINDEX
        {
            self.ifaces[ingress_ifindex as usize]
        } else {
            0
        };
        if iface & IFACE_EXCLUDED != 0 {
            return pass(self, Reason::Excluded);
        }
        if iface & IFACE_ENGINE_FACING != 0 {
            return pass(self, Reason::EngineFacing);
        }
        if frag_off & IP_MF_OFFSET != 0 {
            return pass(self, Reason::Fragment);
        }
        let d = match self.classify(frame, l3, ihl, slot, now_jiffies, bytes) {
            Ok(d) => d,
            Err(mut outcome) => {
                outcome.verdict = Verdict::Pass;
                return outcome;
            }
        };
        let eng = d.eng;
        if eng.method == METHOD_GRE && eng.mtu != 0 && tot_len + GRE_OVERHEAD > usize::from(eng.mtu)
        {
            let reason = if frag_off & IP_DF != 0 {
                Reason::TooBigDf
            } else {
                Reason::TooBig
            };
            return self.fail_open(reason, d.service, frame, bytes);
        }
        self.redirect(frame, l3, &d, Verdict::Pass, false, bytes)
    }

    /// The classification both hooks share (`classify()` in `src/bpf/classify.h`), from
    /// the transport header of an unfragmented IPv4 packet at `l3` with an `ihl`-byte
    /// header: steps 10 to 16 of [`Dataplane::process`]. The engine chosen, or the
    /// counted outcome of a packet that goes on unredirected.
    pub fn classify(
        &mut self,
        frame: &[u8],
        l3: usize,
        ihl: usize,
        slot: usize,
        now_jiffies: u64,
        bytes: u64,
    ) -> Result<Decision, Outcome> {
        let pass = |dp: &mut Self, reason| dp.finish(Verdict::Pass, reason, frame.to_vec(), bytes);
        let ip = &frame[l3..];
        let protocol = ip[9];
        let saddr_ne = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
        let saddr = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        let daddr = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let l4 = &ip[ihl..];
        let (proto_i, tcp_flags) = match protocol {
            IPPROTO_TCP if l4.len() >= 20 => (0, l4[13]),
            IPPROTO_UDP if l4.len() >= 8 => (1, 0),
            IPPROTO_TCP | IPPROTO_UDP => return Err(pass(self, Reason::Malformed)),
            _ => return Err(pass(self, Reason::NoService)),
        };
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        let dport = u16::from_be_bytes([l4[2], l4[3]]);

        let table = &self.slots[slot];
        let base = proto_i * PORTS;
        let pref = table.ports[base + usize::from(dport)]
            .dst_pref
            .max(table.ports[base + usize::from(sport)].src_pref)
            .max(table.header.any_pref[proto_i]);
        if pref == 0 || usize::from(pref) > MAX_SERVICES {
            return Err(pass(self, Reason::NoService));
        }
        let rank = MAX_SERVICES - usize::from(pref);

        let (word, bit) = filter_position(saddr);
        if table.filter[word] >> bit & 1 == 1
            && table.engine_addrs.iter().any(|&(a, _)| a == saddr_ne)
        {
            return Err(pass(self, Reason::EngineSource));
        }

        let svc = table.services[rank];
        let service = svc.service_id;
        if svc.options & SERVICE_LISTS != 0 {
            let mut kinds = table.prefix_kinds(rank, daddr);
            if kinds & PREFIX_SKIP == 0 {
                kinds |= table.prefix_kinds(rank, saddr);
            }
            let skipped = if kinds & PREFIX_SKIP != 0 {
                Some(Reason::ListSkip)
            } else if svc.options & SERVICE_REDIRECT_LIST != 0 && kinds & PREFIX_REDIRECT == 0 {
                Some(Reason::NotListed)
            } else {
                None
            };
            if let Some(reason) = skipped {
                self.count(
                    STATS_SERVICE_BASE
                        + usize::from(service) * STATS_PER_SERVICE
                        + STATS_SERVICE_SKIPPED,
                    bytes,
                );
                return Err(pass(self, reason));
            }
        }
        let table = &self.slots[slot];
        let svc_base = rank * BUCKETS;
        let mask = svc.options & SERVICE_MASK != 0;
        let primary = if mask {
            (mask_index(&svc.mask_pos, saddr, daddr, sport, dport) as usize & (BUCKETS - 1)) as u8
        } else {
            fold(hash_key(svc.flags, saddr, daddr, sport, dport))
        };
        let b = table.buckets[svc_base + usize::from(primary)];
        if b.flags & BUCKET_ASSIGNED == 0 {
            return Err(self.fail_open(Reason::Unassigned, service, frame, bytes));
        }
        let mut engine = usize::from(b.engine);
        let sticky = b.flags & BUCKET_STICKY != 0;
        let mut secondary = 0;
        let alternate = b.flags & BUCKET_ALTERNATE != 0 && !mask;
        if alternate {
            secondary = fold(hash_key(svc.flags >> 8, saddr, daddr, sport, dport));
            let b2 = table.buckets[svc_base + usize::from(secondary)];
            if b2.flags & BUCKET_ASSIGNED == 0 {
                return Err(self.fail_open(Reason::Unassigned, service, frame, bytes));
            }
            engine = usize::from(b2.engine);
        }

        let flow = FlowKey {
            saddr: saddr_ne,
            daddr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
            sport: sport.to_be(),
            dport: dport.to_be(),
            protocol: IPPROTO_TCP,
            reserved: [0; 3],
        };
        let syn = proto_i == 0 && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let mut conn_hit = false;
        if proto_i == 0 && !syn && sticky {
            if let Some(c) = self.conns.get(&flow) {
                let idx = c.engine as usize & (MAX_ENGINES - 1);
                let e = table.engines[idx];
                if e.addr == c.engine_addr && e.flags & ENGINE_USABLE != 0 {
                    engine = idx;
                    conn_hit = true;
                }
            }
        }
        let eng = table.engines[engine];
        if conn_hit {
            self.count(
                STATS_ENGINE_BASE + engine * STATS_PER_ENGINE + STATS_ENGINE_CONN_HITS,
                bytes,
            );
        }
        if eng.flags & ENGINE_USABLE == 0 {
            return Err(self.fail_open(Reason::EngineDown, service, frame, bytes));
        }
        if now_jiffies
            > self
                .control
                .heartbeat_jiffies
                .wrapping_add(self.control.grace_jiffies)
        {
            return Err(self.fail_open(Reason::Heartbeat, service, frame, bytes));
        }
        Ok(Decision {
            engine,
            eng,
            svc,
            service,
            primary,
            secondary,
            alternate,
            syn,
            flow,
        })
    }

    /// A classified packet on its way to the engine: its SYN recorded, rewritten (an
    /// engine's VLAN tag in the bytes when `tag_in_bytes`, else left to metadata),
    /// counted, and sent out of the engine's interface, or with `local` (the hook's
    /// verdict for "out of the interface it is on") when the engine's is 0.
    fn redirect(
        &mut self,
        frame: &[u8],
        l3: usize,
        d: &Decision,
        local: Verdict,
        tag_in_bytes: bool,
        bytes: u64,
    ) -> Outcome {
        self.remember_syn(d);
        let (out, reason) = encapsulate(frame, l3, d, tag_in_bytes);
        self.count_redirected(d, bytes);
        let verdict = match d.eng.ifindex {
            0 => local,
            ifindex => Verdict::Redirect(ifindex),
        };
        self.finish(verdict, reason, out, bytes)
    }

    fn remember_syn(&mut self, d: &Decision) {
        if d.syn {
            self.conns.insert(
                d.flow,
                ConnEntry {
                    engine_addr: d.eng.addr,
                    engine: d.engine as u32,
                },
            );
        }
    }

    fn count_redirected(&mut self, d: &Decision, bytes: u64) {
        self.count(
            STATS_SERVICE_BASE
                + usize::from(d.service) * STATS_PER_SERVICE
                + STATS_SERVICE_REDIRECTED,
            bytes,
        );
        self.count(
            STATS_ENGINE_BASE + d.engine * STATS_PER_ENGINE + STATS_ENGINE_REDIRECTED,
            bytes,
        );
    }

    /// Step 6: lowers the MSS option of a SYN-ACK whose source port is served by a
    /// clamped service (the best of those matching it as a destination port or any
    /// port), in place, with the TCP checksum updated incrementally. Whether it did.
    fn clamp_synack(&self, frame: &mut [u8], th: usize, slot: usize) -> bool {
        let table = &self.slots[slot];
        let clamp = table.header.mss_clamp;
        let Some(tcp) = frame.get(th..th + 20) else {
            return false;
        };
        if tcp[13] & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK || clamp == 0 {
            return false;
        }
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let pref = table.ports[usize::from(sport)]
            .dst_pref
            .max(table.header.any_pref[0]);
        if pref == 0 || usize::from(pref) > MAX_SERVICES {
            return false;
        }
        let svc = table.services[MAX_SERVICES - usize::from(pref)];
        if svc.options & SERVICE_MSS_CLAMP == 0 {
            return false;
        }
        let doff = usize::from(tcp[12] >> 4) * 4;
        if doff <= 20 || th + doff > frame.len() {
            return false;
        }
        let opts = &frame[th..th + doff];
        let mut off = 20;
        while off < doff {
            let kind = opts[off];
            if kind == 0 {
                return false;
            }
            if kind == 1 {
                off += 1;
                continue;
            }
            if off + 2 > doff {
                return false;
            }
            let len = usize::from(opts[off + 1]);
            if len < 2 {
                return false;
            }
            if kind == 2 && len == 4 {
                if off + 4 > doff {
                    return false;
                }
                let mss = u16::from_be_bytes([opts[off + 2], opts[off + 3]]);
                if mss <= clamp {
                    return false;
                }
                let at = th + off + 2;
                frame[at..at + 2].copy_from_slice(&clamp.to_be_bytes());
                let check = u16::from_be_bytes([frame[th + 16], frame[th + 17]]);
                // A field at an odd offset straddles two checksum words, its bytes
                // swapped in the sum.
                let (old, new) = if (off + 2) % 2 == 1 {
                    (mss.swap_bytes(), clamp.swap_bytes())
                } else {
                    (mss, clamp)
                };
                let check = checksum_replace(check, old, new);
                frame[th + 16..th + 18].copy_from_slice(&check.to_be_bytes());
                return true;
            }
            off += len;
        }
        false
    }

    /// Step 4: GRE from an engine.
    fn packet_return(
        &mut self,
        frame: &[u8],
        l3: usize,
        ihl: usize,
        frag: bool,
        engine: u32,
        bytes: u64,
    ) -> Outcome {
        let bad =
            |dp: &mut Self| dp.finish(Verdict::Pass, Reason::ReturnBad, frame.to_vec(), bytes);
        if frag {
            return bad(self);
        }
        let gre = l3 + ihl;
        if be32(frame, gre) != Some(0x0000_883e) || frame.len() < gre + 5 {
            return bad(self);
        }
        let mut remove = ihl + 4;
        if frame[gre + 4] >> 4 != 4 {
            remove += 4;
        }
        let inner = l3 + remove;
        if frame.len() < inner + 20 || frame[inner] >> 4 != 4 {
            return bad(self);
        }
        // The C program checks that the 22 bytes it may copy are in the frame.
        if frame.len() < remove + 22 {
            return bad(self);
        }
        let mut out = frame[..l3].to_vec();
        out.extend_from_slice(&frame[inner..]);
        self.count(
            STATS_ENGINE_BASE
                + (engine as usize & (MAX_ENGINES - 1)) * STATS_PER_ENGINE
                + STATS_ENGINE_RETURNED,
            bytes,
        );
        self.finish(Verdict::Pass, Reason::ReturnGre, out, bytes)
    }
}
