//! The reference model of the engine's tc ingress program `tc_engine`
//! (`src/bpf/engine.c`): the same maps, the same per-packet decision, the same output
//! bytes and counters, written for reading. `tests/engine_differential.rs` holds the C
//! program to it.
//!
//! The order of the checks is part of the specification (it decides which reason a
//! packet is counted under), and is the program's:
//!
//! 1. Not enabled: pass (`Disabled`). `skb->protocol` not IPv4: pass (`NotIpv4`).
//! 2. Fewer than Ethernet + 20 bytes readable: pass (`NotRedirected`). Ethertype not
//!    IPv4: pass (`NotIpv4`). Version not 4 or IHL under 5: pass (`NotRedirected`).
//! 3. Outer protocol GRE to the engine's address (any, when it has none), in this order:
//!    a whole GRE header of another protocol: pass (`NotRedirected`); source not a known
//!    router: drop (`Stranger`), even when the GRE header is cut; an outer fragment, or
//!    no room for GRE + redirect header + 20 inner bytes: drop (`Truncated`); GRE flags
//!    or version, or redirect header flags beyond D, A, U: drop (`BadHeader`).
//! 4. Otherwise, with L2 forwarding on: TCP to an address not the engine's, sent to this
//!    host's MAC (`pkt_type` host): the packet itself is the client's. Anything else:
//!    pass (`NotRedirected`).
//! 5. Inner IPv4: version, IHL, total length between its IHL and what the skb holds
//!    after the inner header's offset; else drop (`BadInner`).
//! 6. Not TCP, or a fragment: returned (`ReturnNotServed`; L2: pass, `NotRedirected`).
//! 7. TCP header readable, data offset at least 5 and within the total length; else drop
//!    (`BadInner`).
//! 8. Destination port without a service: returned (`ReturnNotServed`; L2: pass). An L2
//!    packet of a service counts `L2`.
//! 9. With rules installed: the longest rule for {port, destination}, else for {any
//!    port, destination}. A copy rule with a copy interface clones the frame as it
//!    arrived (`Copied` or `CopyFailed`).
//! 10. A non-listening socket of the flow: decapsulated, delivered (`Established`).
//! 11. A return rule: returned (`ReturnRule`), inner destination rewritten first when the
//!     rule says so (`Rewritten`).
//! 12. Not a SYN without ACK: returned (`ReturnNoSocket`).
//! 13. The lookup of the service's proxy port finds a listener: decapsulated, delivered
//!     (`ProxiedSyn`); anything else: returned (`ReturnNoListener`).
//!
//! Packet return swaps the outer addresses, sets TTL 64 (the outer checksum updated
//! incrementally), swaps the MACs and redirects to the interface the packet came in on;
//! an L2 packet only has its MACs swapped.
//!
//! # What the model cannot know
//!
//! Kernel helpers whose result depends on the kernel's state are inputs ([`Kernel`],
//! [`Sockets`]) or documented assumptions:
//!
//! - The socket lookups (`bpf_skc_lookup_tcp`) are answered from [`Sockets`].
//! - `bpf_clone_redirect` succeeds exactly for the interfaces in
//!   [`Kernel::clone_targets`].
//! - `bpf_skb_adjust_room`, `bpf_sk_assign` and the writes of a return
//!   (`bpf_l3_csum_replace`, `bpf_l4_csum_replace`, `bpf_skb_store_bytes`) succeed unless
//!   the matching flag of [`Kernel`] says they fail; a failing write fails first, before
//!   any byte of the return is written. Every write lies inside headers the program has
//!   already read, so in practice only a failed allocation (a cloned skb made writable)
//!   refuses one.
//! - Checksums are updated as for an skb whose `ip_summed` is not `CHECKSUM_PARTIAL` (a
//!   received packet, and every packet of `BPF_PROG_TEST_RUN`): the checksum fields
//!   change by RFC 1624's incremental update, with the kernel's treatment of zero.
//! - The frame is what the program reads directly once it has pulled the headers in
//!   (`bpf_skb_pull_data` of up to [`HEADERS_MAX`] bytes); `skb->len` may exceed it when
//!   the rest of the packet sits in page fragments. The output frame is those bytes as
//!   the program leaves them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::engine_plane::{
    Counter, EngineConfigRaw, RuleEntry, RuleKey, ENGINE_ENABLED, ENGINE_L2, ROUTER_KNOWN,
    RULE_COPY, RULE_PORT_BITS, RULE_RETURN, RULE_REWRITE,
};

/// `TC_ACT_OK`: the packet goes on through the stack.
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: the packet is dropped.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`: what `bpf_redirect` returns; the target is kept in the kernel.
pub const TC_ACT_REDIRECT: u32 = 7;
/// `ETH_P_IP`, the `skb->protocol` (host order) of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// `PACKET_HOST`: the frame was sent to this host's MAC.
pub const PACKET_HOST: u32 = 0;
/// What the program pulls into the linear area when less is there: Ethernet, outer IPv4
/// with options, GRE + redirect header, inner IPv4 with options, TCP without options.
pub const HEADERS_MAX: usize = 14 + 60 + 8 + 60 + 20;
/// The outer TTL of a returned packet.
pub const RETURN_TTL: u8 = 64;
/// Redirect header flags a router may set (D, A, U); any other bit is refused.
pub const RH_KNOWN_FLAGS: u8 = 0x07;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_GRE: u8 = 47;
const IP_MF_OFFSET: u16 = 0x3fff;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const GRE_LEN: usize = 4;
const REDIRECT_LEN: usize = 4;
const ETH_LEN: usize = 14;

/// The program's maps, as the model reads them: what [`crate::engine_plane::EnginePlane`]
/// writes, kept in Rust so that a test can change both sides alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineTables {
    /// `engine_config[0]`.
    pub config: EngineConfigRaw,
    /// `engine_routers`: router address -> flags; GRE needs [`ROUTER_KNOWN`] set.
    pub routers: BTreeMap<Ipv4Addr, u32>,
    /// `engine_ports`: service port -> proxy port; a missing port and proxy port 0 are
    /// both "not a service".
    pub ports: BTreeMap<u16, u16>,
    /// `engine_rules`, by prefix length and LPM data with the bits past the prefix
    /// cleared, as the kernel's trie tells entries apart.
    rules: BTreeMap<(u32, [u8; 8]), RuleEntry>,
}

impl EngineTables {
    /// Tables with `config` and nothing else, like a freshly configured plane.
    pub fn new(config: EngineConfigRaw) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Adds or replaces a rule as `bpf_map_update_elem` on the LPM trie would: entries
    /// with the same prefix length and the same leading bits are one entry.
    pub fn insert_rule(&mut self, key: RuleKey, entry: RuleEntry) {
        self.rules.insert(masked(&key), entry);
    }

    /// Removes the entry `key` names, if any.
    pub fn remove_rule(&mut self, key: RuleKey) {
        self.rules.remove(&masked(&key));
    }

    /// How many rules the trie holds.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The trie's longest-prefix match for the full-length key {`port` (host order),
    /// `addr`}, as `bpf_map_lookup_elem` answers it.
    pub fn lookup_rule(&self, port: u16, addr: Ipv4Addr) -> Option<RuleEntry> {
        let data = rule_data(port.to_be(), 0, u32::from(addr).to_be());
        self.rules
            .iter()
            .filter(|((len, prefix), _)| prefix_matches(prefix, &data, *len))
            .max_by_key(|((len, _), _)| *len)
            .map(|(_, entry)| *entry)
    }
}

/// The LPM data of a rule key: port and reserved as stored (network order), address.
fn rule_data(port: u16, reserved: u16, addr: u32) -> [u8; 8] {
    let mut data = [0u8; 8];
    data[..2].copy_from_slice(&port.to_ne_bytes());
    data[2..4].copy_from_slice(&reserved.to_ne_bytes());
    data[4..].copy_from_slice(&addr.to_ne_bytes());
    data
}

fn masked(key: &RuleKey) -> (u32, [u8; 8]) {
    let len = key.prefixlen.min(64);
    let mut data = rule_data(key.port, key.reserved, key.addr);
    for (i, byte) in data.iter_mut().enumerate() {
        let keep = len.saturating_sub(i as u32 * 8).min(8);
        *byte &= (0xff00u16 >> keep) as u8;
    }
    (len, data)
}

fn prefix_matches(prefix: &[u8; 8], data: &[u8; 8], len: u32) -> bool {
    (0..len as usize).all(|bit| {
        let mask = 0x80 >> (bit % 8);
        prefix[bit / 8] & mask == data[bit / 8] & mask
    })
}

/// A TCP flow as the socket lookup sees it (client's view: source is the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// Client address.
    pub saddr: Ipv4Addr,
    /// Original destination.
    pub daddr: Ipv4Addr,
    /// Client port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// The answers of `bpf_skc_lookup_tcp`: the model's stand-in for the host's sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    /// Flows with a socket that is not a listener (established, a request socket of a
    /// handshake in progress, time-wait): the lookup of the exact four-tuple finds it
    /// before any listener.
    pub connected: BTreeSet<Flow>,
    /// Listeners by local address and port; [`Ipv4Addr::UNSPECIFIED`] is the wildcard.
    pub listeners: BTreeSet<(Ipv4Addr, u16)>,
}

impl Sockets {
    /// What the lookup of `flow` returns: `Some(true)` a listener, `Some(false)` another
    /// socket, `None` nothing. A connected socket shadows any listener, as in
    /// `__inet_lookup`.
    fn lookup(&self, flow: &Flow) -> Option<bool> {
        if self.connected.contains(flow) {
            return Some(false);
        }
        let listening = self.listeners.contains(&(flow.daddr, flow.dport))
            || self
                .listeners
                .contains(&(Ipv4Addr::UNSPECIFIED, flow.dport));
        listening.then_some(true)
    }
}

/// The results of kernel helpers that the model cannot derive from the packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Interfaces `bpf_clone_redirect` succeeds on (it fails on any other).
    pub clone_targets: BTreeSet<u32>,
    /// `bpf_skb_adjust_room` refuses to decapsulate.
    pub adjust_room_fails: bool,
    /// `bpf_sk_assign` refuses the socket.
    pub sk_assign_fails: bool,
    /// The first write of a packet return fails (nothing written).
    pub return_write_fails: bool,
}

/// What `tc_engine` sees of one skb.
#[derive(Clone, Copy, Debug)]
pub struct Skb<'a> {
    /// The bytes the program reads directly, from the Ethernet header on.
    pub frame: &'a [u8],
    /// `skb->len`: every byte of the packet, at least `frame.len()`.
    pub len: u32,
    /// `skb->pkt_type` (`PACKET_HOST` 0 for frames to this host's MAC).
    pub pkt_type: u32,
    /// `skb->protocol`, host order.
    pub protocol: u16,
    /// `skb->ifindex`, where returned packets go.
    pub ifindex: u32,
}

impl<'a> Skb<'a> {
    /// A linear skb as `eth_type_trans` makes it from `frame` on an interface whose MAC
    /// is `own_mac` (pkt_type and protocol from the Ethernet header), the way
    /// `BPF_PROG_TEST_RUN` builds one.
    pub fn received(frame: &'a [u8], own_mac: [u8; 6], ifindex: u32) -> Self {
        let dst = frame.get(..6).unwrap_or(&[]);
        let pkt_type = if dst == own_mac {
            PACKET_HOST
        } else if dst.first().is_some_and(|b| b & 1 != 0) {
            if dst == [0xff; 6] {
                1 // PACKET_BROADCAST
            } else {
                2 // PACKET_MULTICAST
            }
        } else {
            3 // PACKET_OTHERHOST
        };
        let protocol = match frame.get(12..14) {
            Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) >= 0x0600 => {
                u16::from_be_bytes([hi, lo])
            }
            // 802.3 frames: raw IPX or 802.2 LLC; neither is IPv4.
            Some(_) if frame.get(14..16) == Some(&[0xff, 0xff]) => 0x0001,
            _ => 0x0004,
        };
        Self {
            frame,
            len: frame.len() as u32,
            pkt_type,
            protocol,
            ifindex,
        }
    }
}

/// What the program does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `TC_ACT_OK`.
    Pass,
    /// `TC_ACT_SHOT`.
    Drop,
    /// `bpf_redirect(ifindex, 0)`: out of that interface (the one it came in on).
    Redirect(u32),
}

impl Verdict {
    /// The program's return value.
    pub fn code(self) -> u32 {
        match self {
            Verdict::Pass => TC_ACT_OK,
            Verdict::Drop => TC_ACT_SHOT,
            Verdict::Redirect(_) => TC_ACT_REDIRECT,
        }
    }
}

/// The model's answer for one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The reason counter (exactly one per packet).
    pub reason: Counter,
    /// Every counter bumped, in the program's order (the reason among them); each by one
    /// packet and [`Outcome::bytes`].
    pub counted: Vec<Counter>,
    /// `skb->len` on entry, which every counter adds.
    pub bytes: u64,
    /// The frame as the program leaves it.
    pub frame: Vec<u8>,
    /// `skb->mark` set for local delivery.
    pub mark: Option<u32>,
    /// The interface a clone of the frame (as it arrived) was sent out of.
    pub copied_to: Option<u32>,
}

/// What the decision keeps of a packet (the program's `struct eng_packet`).
#[derive(Default)]
struct Packet {
    inner_off: usize,
    tcp_off: usize,
    decap_len: usize,
    outer_saddr: [u8; 4],
    outer_daddr: [u8; 4],
    outer_ttl_proto: [u8; 2],
    tcp_flags: u8,
    l2: bool,
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
    eth: [u8; 12],
}

struct Run<'a> {
    skb: &'a Skb<'a>,
    bytes: u64,
    frame: Vec<u8>,
    counted: Vec<Counter>,
    mark: Option<u32>,
    copied_to: Option<u32>,
}

impl Run<'_> {
    fn count(&mut self, counter: Counter) {
        self.counted.push(counter);
    }

    fn done(mut self, verdict: Verdict, reason: Counter) -> Outcome {
        self.count(reason);
        Outcome {
            verdict,
            reason,
            counted: self.counted,
            bytes: self.bytes,
            frame: self.frame,
            mark: self.mark,
            copied_to: self.copied_to,
        }
    }

    fn be16(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.frame[off], self.frame[off + 1]])
    }

    fn addr(&self, off: usize) -> [u8; 4] {
        self.frame[off..off + 4].try_into().expect("4 bytes")
    }

    /// `bpf_l3_csum_replace` / `bpf_l4_csum_replace` of a 4-byte field at `off`.
    fn csum_replace4(&mut self, off: usize, from: [u8; 4], to: [u8; 4]) {
        let old = u16::from_ne_bytes([self.frame[off], self.frame[off + 1]]);
        let new = csum_replace4(old, u32::from_ne_bytes(from), u32::from_ne_bytes(to));
        self.frame[off..off + 2].copy_from_slice(&new.to_ne_bytes());
    }

    /// `bpf_l3_csum_replace` of a 2-byte field at `off`.
    fn csum_replace2(&mut self, off: usize, from: [u8; 2], to: [u8; 2]) {
        let old = u16::from_ne_bytes([self.frame[off], self.frame[off + 1]]);
        let new = csum_replace2(old, u16::from_ne_bytes(from), u16::from_ne_bytes(to));
        self.frame[off..off + 2].copy_from_slice(&new.to_ne_bytes());
    }

    /// The program's `packet_return`.
    fn packet_return(
        mut self,
        kernel: &Kernel,
        p: &Packet,
        rule: Option<&RuleEntry>,
        reason: Counter,
    ) -> Outcome {
        let rewrite = rule.filter(|r| r.flags & RULE_REWRITE != 0);
        if kernel.return_write_fails {
            // The first helper call fails: the rewrite's L4 checksum, else the outer
            // checksum, else (L2) the MACs.
            return self.done(Verdict::Drop, Counter::RedirectFailed);
        }
        if let Some(rule) = rewrite {
            let new = rule.new_daddr.to_ne_bytes();
            self.csum_replace4(p.tcp_off + 16, p.daddr, new);
            self.csum_replace4(p.inner_off + 10, p.daddr, new);
            self.frame[p.inner_off + 16..p.inner_off + 20].copy_from_slice(&new);
            self.count(Counter::Rewritten);
        }
        if !p.l2 {
            let ttl_proto = [RETURN_TTL, IPPROTO_GRE];
            self.csum_replace2(ETH_LEN + 10, p.outer_ttl_proto, ttl_proto);
            self.frame[ETH_LEN + 8..ETH_LEN + 10].copy_from_slice(&ttl_proto);
            self.frame[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&p.outer_daddr);
            self.frame[ETH_LEN + 16..ETH_LEN + 20].copy_from_slice(&p.outer_saddr);
        }
        self.frame[..6].copy_from_slice(&p.eth[6..]);
        self.frame[6..12].copy_from_slice(&p.eth[..6]);
        let ifindex = self.skb.ifindex;
        self.done(Verdict::Redirect(ifindex), reason)
    }

    /// The program's `deliver`: decapsulate, assign, mark.
    fn deliver(mut self, kernel: &Kernel, p: &Packet, mark: u32, reason: Counter) -> Outcome {
        if p.decap_len != 0 {
            if kernel.adjust_room_fails {
                return self.done(Verdict::Drop, Counter::AdjustFailed);
            }
            // BPF_ADJ_ROOM_MAC: the bytes right after the Ethernet header go.
            self.frame.drain(ETH_LEN..ETH_LEN + p.decap_len);
        }
        if kernel.sk_assign_fails {
            return self.done(Verdict::Drop, Counter::AssignFailed);
        }
        self.mark = Some(mark);
        self.done(Verdict::Pass, reason)
    }
}

/// `csum_add`: 32-bit one's complement addition.
fn csum_add(a: u32, b: u32) -> u32 {
    let r = a.wrapping_add(b);
    r.wrapping_add(u32::from(r < b))
}

/// `csum_fold`.
fn csum_fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// `csum_replace4` (and `inet_proto_csum_replace4` without `CHECKSUM_PARTIAL`, which
/// computes the same): the checksum `check` after a 4-byte field went from `from` to `to`.
/// Values as loaded from memory (native order), like the kernel's.
fn csum_replace4(check: u16, from: u32, to: u32) -> u16 {
    csum_fold(csum_add(csum_add(!u32::from(check), !from), to))
}

/// `csum16_add`: 16-bit one's complement addition.
fn csum16_add(a: u16, b: u16) -> u16 {
    let r = a.wrapping_add(b);
    r.wrapping_add(u16::from(r < b))
}

/// `csum_replace2`: the checksum `check` after a 2-byte field went from `from` to `to`.
fn csum_replace2(check: u16, from: u16, to: u16) -> u16 {
    !csum16_add(csum16_add(!check, !from), to)
}

/// One packet through `tc_engine`.
pub fn process(tables: &EngineTables, sockets: &Sockets, kernel: &Kernel, skb: &Skb) -> Outcome {
    let cfg = &tables.config;
    let mut run = Run {
        skb,
        bytes: u64::from(skb.len),
        frame: skb.frame.to_vec(),
        counted: Vec::new(),
        mark: None,
        copied_to: None,
    };
    let ok = Verdict::Pass;
    let shot = Verdict::Drop;
    if cfg.flags & ENGINE_ENABLED == 0 {
        return run.done(ok, Counter::Disabled);
    }
    if skb.protocol != ETH_P_IP {
        return run.done(ok, Counter::NotIpv4);
    }
    let len = run.frame.len();
    if ETH_LEN + 20 > len {
        return run.done(ok, Counter::NotRedirected);
    }
    if run.be16(12) != ETH_P_IP {
        return run.done(ok, Counter::NotIpv4);
    }
    let mut p = Packet {
        eth: run.frame[..12].try_into().expect("12 bytes"),
        ..Packet::default()
    };
    let ip = ETH_LEN;
    let ver_ihl = run.frame[ip];
    if ver_ihl >> 4 != 4 || ver_ihl & 0xf < 5 {
        return run.done(ok, Counter::NotRedirected);
    }
    let own_addr = cfg.addr.to_ne_bytes();
    let protocol = run.frame[ip + 9];
    let outer_saddr = run.addr(ip + 12);
    let outer_daddr = run.addr(ip + 16);
    let inner;
    if protocol == IPPROTO_GRE && (cfg.addr == 0 || outer_daddr == own_addr) {
        let ihl = usize::from(ver_ihl & 0xf) * 4;
        let gre = ip + ihl;
        // Other GRE tunnels to this host are not ours.
        if gre + GRE_LEN <= len && (run.frame[gre + 2] != 0x88 || run.frame[gre + 3] != 0x3e) {
            return run.done(ok, Counter::NotRedirected);
        }
        let known = tables
            .routers
            .get(&Ipv4Addr::from(outer_saddr))
            .is_some_and(|flags| flags & ROUTER_KNOWN != 0);
        if !known {
            return run.done(shot, Counter::Stranger);
        }
        if run.be16(ip + 6) & IP_MF_OFFSET != 0 {
            return run.done(shot, Counter::Truncated);
        }
        if gre + GRE_LEN + REDIRECT_LEN + 20 > len {
            return run.done(shot, Counter::Truncated);
        }
        if run.frame[gre] != 0
            || run.frame[gre + 1] != 0
            || run.frame[gre + 4] & !RH_KNOWN_FLAGS != 0
        {
            return run.done(shot, Counter::BadHeader);
        }
        p.outer_saddr = outer_saddr;
        p.outer_daddr = outer_daddr;
        p.outer_ttl_proto = [run.frame[ip + 8], run.frame[ip + 9]];
        p.decap_len = ihl + GRE_LEN + REDIRECT_LEN;
        p.inner_off = ETH_LEN + p.decap_len;
        inner = p.inner_off;
    } else if cfg.flags & ENGINE_L2 != 0
        && protocol == IPPROTO_TCP
        && outer_daddr != own_addr
        && skb.pkt_type == PACKET_HOST
    {
        // Sent to our MAC for a foreign address: redirected by L2 forwarding, if it is
        // for a service (checked below).
        p.l2 = true;
        p.inner_off = ETH_LEN;
        inner = ip;
    } else {
        return run.done(ok, Counter::NotRedirected);
    }

    // The client's packet: 20 bytes of it are readable here.
    let inner_ver_ihl = run.frame[inner];
    if inner_ver_ihl >> 4 != 4 || inner_ver_ihl & 0xf < 5 {
        return run.done(shot, Counter::BadInner);
    }
    let inner_ihl = u32::from(inner_ver_ihl & 0xf) * 4;
    let tot_len = u32::from(run.be16(inner + 2));
    if tot_len < inner_ihl || tot_len > skb.len.wrapping_sub(p.inner_off as u32) {
        return run.done(shot, Counter::BadInner);
    }
    p.saddr = run.addr(inner + 12);
    p.daddr = run.addr(inner + 16);
    if run.frame[inner + 9] != IPPROTO_TCP || run.be16(inner + 6) & IP_MF_OFFSET != 0 {
        if p.l2 {
            return run.done(ok, Counter::NotRedirected);
        }
        return run.packet_return(kernel, &p, None, Counter::ReturnNotServed);
    }
    let tcp = inner + inner_ihl as usize;
    if tcp + 20 > len {
        return run.done(shot, Counter::BadInner);
    }
    let doff = u32::from(run.frame[tcp + 12] >> 4);
    if doff < 5 || tot_len < inner_ihl + doff * 4 {
        return run.done(shot, Counter::BadInner);
    }
    p.tcp_off = tcp;
    p.sport = run.be16(tcp);
    p.dport = run.be16(tcp + 2);
    p.tcp_flags = run.frame[tcp + 13];

    let proxy_port = tables.ports.get(&p.dport).copied().unwrap_or(0);
    if proxy_port == 0 {
        if p.l2 {
            return run.done(ok, Counter::NotRedirected);
        }
        return run.packet_return(kernel, &p, None, Counter::ReturnNotServed);
    }
    if p.l2 {
        run.count(Counter::L2);
    }

    let daddr = Ipv4Addr::from(p.daddr);
    let rule = if cfg.rules != 0 {
        tables
            .lookup_rule(p.dport, daddr)
            .or_else(|| tables.lookup_rule(0, daddr))
    } else {
        None
    };
    if rule.is_some_and(|r| r.flags & RULE_COPY != 0) && cfg.copy_ifindex != 0 {
        // The frame as it arrived, before any change of ours.
        if kernel.clone_targets.contains(&cfg.copy_ifindex) {
            run.copied_to = Some(cfg.copy_ifindex);
            run.count(Counter::Copied);
        } else {
            run.count(Counter::CopyFailed);
        }
    }

    // A flow the proxy already has stays with it, whatever the rules say.
    let mut flow = Flow {
        saddr: Ipv4Addr::from(p.saddr),
        daddr,
        sport: p.sport,
        dport: p.dport,
    };
    if sockets.lookup(&flow) == Some(false) {
        return run.deliver(kernel, &p, cfg.mark, Counter::Established);
    }
    if let Some(rule) = rule.filter(|r| r.flags & RULE_RETURN != 0) {
        return run.packet_return(kernel, &p, Some(&rule), Counter::ReturnRule);
    }
    if p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return run.packet_return(kernel, &p, None, Counter::ReturnNoSocket);
    }

    // A new flow: the proxy's listener.
    flow.dport = proxy_port;
    if sockets.lookup(&flow) == Some(true) {
        return run.deliver(kernel, &p, cfg.mark, Counter::ProxiedSyn);
    }
    run.packet_return(kernel, &p, None, Counter::ReturnNoListener)
}

/// The prefix length of a rule key covering `prefix_len` address bits.
pub fn rule_prefixlen(prefix_len: u8) -> u32 {
    RULE_PORT_BITS + u32::from(prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic example of RFC 1624 section 4, worked by the kernel's arithmetic.
    #[test]
    fn incremental_checksum_matches_a_full_one() {
        fn full(words: &[u16]) -> u16 {
            let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        }
        let mut header = [
            0x4500u16, 0x0054, 0, 0x4000, 0x4006, 0, 0x0a00, 0x0001, 0x0a00, 2,
        ];
        header[5] = full(&header);
        let old = header[4];
        header[4] = 0x402f;
        let updated = csum_replace2(header[5].to_be(), old.to_be(), header[4].to_be());
        header[5] = 0;
        assert_eq!(u16::from_be(updated), full(&header));
    }

    /// The paths a socket-less test run cannot reach: delivery to a listener or to the
    /// flow's socket (decapsulated, marked), and the helper failures behind them.
    #[test]
    fn sockets_decide_delivery() {
        let engine = Ipv4Addr::new(10, 2, 0, 2);
        let router = Ipv4Addr::new(10, 2, 0, 1);
        let server = Ipv4Addr::new(192, 0, 2, 1);
        let mut tables = EngineTables::new(EngineConfigRaw {
            addr: u32::from(engine).to_be(),
            mark: 0xcc2,
            flags: ENGINE_ENABLED,
            ..EngineConfigRaw::default()
        });
        tables.routers.insert(router, ROUTER_KNOWN);
        tables.ports.insert(80, 3129);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 68, 0, 0, 0, 0, 64, 47, 0, 0]);
        frame.extend_from_slice(&router.octets());
        frame.extend_from_slice(&engine.octets());
        frame.extend_from_slice(&[0, 0, 0x88, 0x3e, 0, 0, 0, 0]);
        frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 0, 5]);
        frame.extend_from_slice(&server.octets());
        frame.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, TCP_SYN]);
        frame.extend_from_slice(&[0; 6]);
        let skb = Skb::received(&frame, [0; 6], 3);
        let flow = Flow {
            saddr: Ipv4Addr::new(10, 1, 0, 5),
            daddr: server,
            sport: 40000,
            dport: 80,
        };
        let kernel = Kernel::default();

        let none = process(&tables, &Sockets::default(), &kernel, &skb);
        assert_eq!(none.reason, Counter::ReturnNoListener);
        assert_eq!(none.verdict, Verdict::Redirect(3));

        let mut sockets = Sockets::default();
        sockets.listeners.insert((Ipv4Addr::UNSPECIFIED, 3129));
        let syn = process(&tables, &sockets, &kernel, &skb);
        assert_eq!(
            (syn.verdict, syn.reason),
            (Verdict::Pass, Counter::ProxiedSyn)
        );
        assert_eq!(syn.mark, Some(0xcc2));
        assert_eq!(syn.frame[..14], frame[..14]);
        assert_eq!(syn.frame[14..], frame[14 + 28..], "outer headers removed");

        sockets.connected.insert(flow);
        assert_eq!(
            process(&tables, &sockets, &kernel, &skb).reason,
            Counter::Established
        );
        let failing = Kernel {
            adjust_room_fails: true,
            ..Kernel::default()
        };
        let out = process(&tables, &sockets, &failing, &skb);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::Drop, Counter::AdjustFailed)
        );
        let failing = Kernel {
            sk_assign_fails: true,
            ..Kernel::default()
        };
        assert_eq!(
            process(&tables, &sockets, &failing, &skb).reason,
            Counter::AssignFailed
        );

        // A connected socket on the proxy port's four-tuple hides the listener.
        let mut shadowed = Sockets::default();
        shadowed.listeners.insert((server, 3129));
        shadowed.connected.insert(Flow {
            dport: 3129,
            ..flow
        });
        let out = process(&tables, &shadowed, &kernel, &skb);
        assert_eq!(out.reason, Counter::ReturnNoListener);
        let failing = Kernel {
            return_write_fails: true,
            ..Kernel::default()
        };
        let out = process(&tables, &Sockets::default(), &failing, &skb);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::Drop, Counter::RedirectFailed)
        );
        assert_eq!(out.frame, frame);
    }

    #[test]
    fn rule_lookup_prefers_the_longest_prefix() {
        let mut t = EngineTables::default();
        let key = |port: u16, addr: [u8; 4], len: u8| RuleKey {
            prefixlen: rule_prefixlen(len),
            port: port.to_be(),
            reserved: 0,
            addr: u32::from(Ipv4Addr::from(addr)).to_be(),
        };
        let entry = |flags| RuleEntry {
            flags,
            new_daddr: 0,
        };
        t.insert_rule(key(80, [10, 0, 0, 0], 8), entry(1));
        t.insert_rule(key(80, [10, 1, 0, 99], 16), entry(2));
        t.insert_rule(key(0, [10, 1, 2, 0], 24), entry(4));
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(t.lookup_rule(80, a), Some(entry(2)));
        assert_eq!(t.lookup_rule(0, a), Some(entry(4)));
        assert_eq!(t.lookup_rule(81, a), None);
        assert_eq!(t.lookup_rule(80, Ipv4Addr::new(11, 0, 0, 1)), None);
    }
}
