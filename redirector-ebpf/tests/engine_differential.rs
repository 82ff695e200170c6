//! `tc_engine` against its model (`redirector_ebpf::engine_model`) on random settings and
//! random and edge-case frames: verdict, output bytes, `skb->mark` and every counter
//! (packets and bytes) must agree exactly, frame by frame. Root only.
//!
//! The program runs with `BPF_PROG_TEST_RUN` in a network namespace of its own, which has
//! no sockets: both socket lookups find nothing, so the reasons that need a socket
//! (`established`, `proxied_syn`, and the decapsulation and assignment failures behind
//! them) cannot occur here, and the model is given empty [`Sockets`] to match; the
//! namespace tests (`engine_netns.rs`) cover those paths on real connections.
//!
//! What a test run exposes, and how it differs from a live packet:
//!
//! - `bpf_redirect` only records its target in the kernel's per-CPU state; the test run
//!   shows the return code `TC_ACT_REDIRECT` and the bytes. So the model's
//!   `Redirect(ifindex)` is compared by its code alone (the test run's skb is on `lo`).
//! - `bpf_clone_redirect` is real: a clone does go out of the copy interface. The lab
//!   gives it `lo` and a veth whose peer is up (both succeed) and an index that no
//!   interface of the namespace has (it fails, `copy_failed`).
//! - The skb is linear, `skb->len` is the frame's length, `ip_summed` is
//!   `CHECKSUM_NONE`, and `pkt_type` and `protocol` come from `eth_type_trans` on `lo`
//!   (all-zero MAC): so frames to the all-zero MAC are `PACKET_HOST`, others not.
//! - The kernel refuses (EINVAL) to build an skb of an IPv4 (IPv6) frame shorter than
//!   Ethernet + 20 (40) bytes; such frames are counted as refused and not compared, which is
//!   why the program's own "too short for IPv4" check is not reached here.

use netns_tests::rng::Rng;
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::Result;
use aya::programs::{TestRun as _, TestRunOptions};
use netns_tests::netns::Lab;
use redirector_ebpf::{
    engine_model::{self, EngineTables, Kernel, Outcome, Skb, Sockets, TC_ACT_REDIRECT},
    engine_plane::{
        Counter, EngineCounters, EnginePlane, EngineSettings, ReturnRule, ENGINE_STATS,
    },
};

/// How many settings are drawn, and frames run through each.
const ROUNDS: usize = 90;
const FRAMES_PER_ROUND: usize = 650;
/// An interface index no interface of the lab's namespace has.
const MISSING_IFINDEX: u32 = 4000;
/// `lo`, where test runs arrive.
const LO_IFINDEX: u32 = 1;

/// `rng.pick` of items that draw from `rng` themselves.
macro_rules! pick {
    ($rng:expr, [$($x:expr),* $(,)?]) => {{
        let items = [$($x),*];
        $rng.pick(&items)
    }};
}

const ENGINE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const ROUTERS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 2, 0, 1),
    Ipv4Addr::new(10, 2, 0, 11),
    Ipv4Addr::new(10, 3, 0, 1),
    Ipv4Addr::new(172, 16, 0, 1),
];
const PORTS: [u16; 6] = [80, 443, 8080, 3128, 25, 1];
/// Destinations of the client's packets; rules are drawn around them.
const DESTS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 130),
    Ipv4Addr::new(198, 51, 100, 9),
    Ipv4Addr::new(203, 0, 113, 77),
    Ipv4Addr::new(10, 9, 5, 9),
    Ipv4Addr::new(10, 2, 0, 2),
];

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const TCP_FLAGS: [u8; 8] = [SYN, SYN, SYN | ACK, ACK, 0x18, 0x04, 0x11, 0];

use netns_tests::checksum::internet as checksum;

/// Random IP options: NOPs, an end, router alert, or noise, in whole words.
fn ip_options(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=5 => Vec::new(),
        6 => vec![0x94, 0x04, 0, 0],
        7 => vec![1; 4 * (1 + rng.below(10) as usize)],
        8 => vec![0; 40],
        _ => {
            let words = rng.below(11) as usize;
            rng.bytes(4 * words)
        }
    }
}

/// An IPv4 header with `options` for `payload` bytes, checksum valid (mostly).
fn ipv4(
    rng: &mut Rng,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    payload: usize,
) -> Vec<u8> {
    let ihl = 20 + options.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[1] = rng.next() as u8;
    ip[2..4].copy_from_slice(&((ihl + payload) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(rng.next() as u16).to_be_bytes());
    if rng.chance(50) {
        ip[6] = 0x40; // DF
    }
    ip[8] = pick!(rng, [1, 33, 64, 255, rng.next() as u8]);
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    ip.extend_from_slice(options);
    let sum = if rng.chance(95) {
        checksum(&ip)
    } else {
        rng.next() as u16
    };
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

/// The client's packet: TCP (mostly) to `dst`, with random options and payload, valid
/// TCP checksum (mostly).
fn client_packet(rng: &mut Rng) -> Vec<u8> {
    let src = if rng.chance(80) {
        Ipv4Addr::new(10, 1, 0, rng.below(8) as u8 + 1)
    } else {
        rng.addr()
    };
    let dst = if rng.chance(85) {
        rng.pick(&DESTS)
    } else {
        rng.addr()
    };
    let options = ip_options(rng);
    let protocol = match rng.below(20) {
        0 => 17,
        1 => 1,
        2 => rng.next() as u8,
        _ => 6,
    };
    let payload_len = pick!(rng, [0, 0, 1, 4, 100, rng.below(600) as usize]);
    let mut l4 = if protocol == 6 {
        let opt_words = pick!(rng, [0, 0, 1, 3, rng.below(11) as usize]);
        let mut tcp = rng.bytes(20 + opt_words * 4);
        let dport = if rng.chance(90) {
            rng.pick(&PORTS)
        } else {
            rng.next() as u16
        };
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = ((5 + opt_words) as u8) << 4;
        tcp[13] = if rng.chance(90) {
            rng.pick(&TCP_FLAGS)
        } else {
            rng.next() as u8
        };
        tcp
    } else {
        rng.bytes(8)
    };
    l4.extend(rng.bytes(payload_len));
    let mut pkt = ipv4(rng, src, dst, protocol, &options, l4.len());
    let ihl = pkt.len();
    pkt.extend_from_slice(&l4);
    if protocol == 6 && rng.chance(95) {
        let mut pseudo = pkt[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pkt[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
        pseudo.extend_from_slice(&pkt[ihl..]);
        let sum = checksum(&pseudo);
        pkt[ihl + 16..ihl + 18].copy_from_slice(&sum.to_be_bytes());
    }
    pkt
}

/// Ethernet to `dst`, from a random unicast MAC.
fn ethernet(rng: &mut Rng, dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    let mut src = rng.bytes(6);
    src[0] &= 0xfe;
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Mostly `lo`'s all-zero MAC (PACKET_HOST in a test run); else another unicast MAC,
/// broadcast or multicast.
fn dst_mac(rng: &mut Rng) -> [u8; 6] {
    match rng.below(10) {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0, 0, 1],
        2 => [0x02, 0, 0, 0, 0, rng.next() as u8 | 1],
        _ => [0; 6],
    }
}

/// The kinds of frame drawn, for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    GreKnown,
    GreStranger,
    GreOtherProtocol,
    GreElsewhere,
    L2,
    PlainIpv4,
    NotIpv4,
    Edge,
}

/// WCCP GRE: the 4-byte GRE header (protocol 0x883E) and a redirect header.
fn wccp_header(rng: &mut Rng) -> Vec<u8> {
    let mut h = vec![0, 0, 0x88, 0x3e];
    let flags = if rng.chance(90) {
        rng.below(8) as u8
    } else {
        rng.next() as u8
    };
    h.push(flags);
    h.push(rng.next() as u8);
    h.extend(rng.bytes(2));
    h
}

fn random_frame(rng: &mut Rng, routers: &[Ipv4Addr], engine: Ipv4Addr) -> (Kind, Vec<u8>) {
    let kind = match rng.below(100) {
        0..=59 => Kind::GreKnown,
        60..=64 => Kind::GreStranger,
        65..=69 => Kind::GreOtherProtocol,
        70..=72 => Kind::GreElsewhere,
        73..=91 => Kind::L2,
        92..=95 => Kind::PlainIpv4,
        _ => Kind::NotIpv4,
    };
    let mut frame = match kind {
        Kind::GreKnown | Kind::GreStranger | Kind::GreOtherProtocol | Kind::GreElsewhere => {
            let src = match kind {
                Kind::GreStranger => pick!(rng, [rng.addr(), Ipv4Addr::new(10, 2, 0, 99)]),
                _ if routers.is_empty() => rng.pick(&ROUTERS),
                _ => rng.pick(routers),
            };
            let dst = match kind {
                Kind::GreElsewhere => pick!(rng, [Ipv4Addr::new(10, 2, 0, 3), rng.addr()]),
                _ => engine,
            };
            let mut gre = wccp_header(rng);
            if kind == Kind::GreOtherProtocol {
                let proto = pick!(rng, [0x0800u16, 0x6558, 0x86dd, rng.next() as u16]);
                gre[2..4].copy_from_slice(&proto.to_be_bytes());
            }
            if rng.chance(4) {
                // GRE checksum, key or sequence bits, or a version.
                gre[rng.below(2) as usize] |= 1 << rng.below(8);
            }
            let inner = client_packet(rng);
            let options = ip_options(rng);
            let mac = if rng.chance(90) { [0; 6] } else { dst_mac(rng) };
            let mut f = ethernet(rng, mac, 0x0800);
            f.extend(ipv4(rng, src, dst, 47, &options, gre.len() + inner.len()));
            f.extend(gre);
            f.extend(inner);
            f
        }
        Kind::L2 => {
            let mac = dst_mac(rng);
            let mut f = ethernet(rng, mac, 0x0800);
            f.extend(client_packet(rng));
            f
        }
        Kind::PlainIpv4 => {
            let protocol = pick!(rng, [1u8, 17, 47, 6, rng.next() as u8]);
            let n = rng.below(80) as usize;
            let payload = rng.bytes(n);
            let mut f = ethernet(rng, [0; 6], 0x0800);
            let options = ip_options(rng);
            let (src, dst) = (rng.addr(), pick!(rng, [engine, rng.addr()]));
            f.extend(ipv4(rng, src, dst, protocol, &options, payload.len()));
            f.extend(payload);
            f
        }
        Kind::Edge => unreachable!("edge cases are built by edge_frames"),
        Kind::NotIpv4 => {
            let ethertype = pick!(
                rng,
                [0x0806u16, 0x86dd, 0x8100, 0x88a8, 0x0040, rng.next() as u16]
            );
            let mut f = ethernet(rng, [0; 6], ethertype);
            if ethertype == 0x8100 && rng.chance(50) {
                // A tagged IPv4 packet: still not IPv4 at the top.
                f.extend_from_slice(&[0, 5, 0x08, 0x00]);
                f.extend(client_packet(rng));
            } else {
                let n = 20 + rng.below(60) as usize;
                f.extend(rng.bytes(n));
            }
            f
        }
    };
    mutate(rng, &mut frame);
    (kind, frame)
}

/// Offsets of the outer IPv4 header, the GRE header and the inner IPv4 header (when the
/// frame is WCCP GRE-shaped) and of the inner TCP header.
fn layers(frame: &[u8]) -> (usize, Option<usize>, usize, usize) {
    let outer_ihl = usize::from(frame.get(14).copied().unwrap_or(0x45) & 0xf) * 4;
    let gre = (frame.get(14 + 9) == Some(&47)).then_some(14 + outer_ihl);
    let inner = gre.map_or(14, |g| g + 8);
    let inner_ihl = usize::from(frame.get(inner).copied().unwrap_or(0x45) & 0xf) * 4;
    (14, gre, inner, inner + inner_ihl)
}

/// Damage of every kind the program must survive: cuts at and around each layer,
/// fragments, bad versions and IHLs, lying lengths, bad data offsets.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    if !rng.chance(30) {
        return;
    }
    let (outer, gre, inner, tcp) = layers(frame);
    let set = |frame: &mut Vec<u8>, off: usize, value: u8| {
        if let Some(b) = frame.get_mut(off) {
            *b = value;
        }
    };
    match rng.below(13) {
        0 => {
            // Cut near a layer boundary (or anywhere), never below the Ethernet header.
            let boundary = rng.pick(&[
                outer + 20,
                gre.unwrap_or(34),
                gre.map_or(38, |g| g + 4),
                inner,
                inner + 20,
                tcp,
                tcp + 20,
            ]);
            let cut = if rng.chance(80) {
                (boundary as i64 + rng.below(7) as i64 - 3).max(14) as usize
            } else {
                14 + rng.below(frame.len() as u64) as usize
            };
            frame.truncate(cut.max(14));
        }
        1 => set(
            frame,
            outer + 6,
            rng.pick(&[0x20, 0x00, 0x40, 0x60]) | (rng.below(2) as u8),
        ),
        2 => {
            set(frame, outer + 6, rng.pick(&[0x20, 0x00, 0x40]));
            set(frame, outer + 7, rng.pick(&[0, 1, 185]));
        }
        3 => set(frame, inner + 6, rng.pick(&[0x20, 0x00, 0x01, 0x40, 0x60])),
        4 => set(
            frame,
            inner,
            rng.pick(&[0x44, 0x46, 0x4f, 0x65, 0x00, 0x45]),
        ),
        5 => set(frame, outer, rng.pick(&[0x44, 0x4f, 0x65, 0x46, 0x47])),
        6 => {
            // The inner total length lies.
            let len = pick!(
                rng,
                [0u16, 19, 20, 39, 40, 41, 1500, 65535, rng.next() as u16]
            );
            if frame.len() >= inner + 4 {
                frame[inner + 2..inner + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        7 => set(frame, tcp + 12, rng.pick(&[0x00, 0x40, 0x50, 0xf0, 0x60])),
        8 => {
            if let Some(g) = gre {
                set(frame, g + 4, rng.pick(&[0x08, 0x80, 0x10, 0x07]));
            }
        }
        9 => {
            // Padding past the IP packet: a total length shorter than the frame.
            let n = rng.below(40) as usize;
            let pad = rng.bytes(n);
            frame.extend(pad);
        }
        10 => set(frame, inner + 9, rng.pick(&[17, 1, 47, 0])),
        11 => {
            // Inner SYN to a service port, the path to a listener lookup.
            set(frame, tcp + 13, SYN);
            let port = rng.pick(&PORTS);
            if frame.len() >= tcp + 4 {
                frame[tcp + 2..tcp + 4].copy_from_slice(&port.to_be_bytes());
            }
        }
        _ => {
            let at = 14 + rng.below(frame.len().saturating_sub(14).min(120) as u64) as usize;
            set(frame, at, rng.next() as u8);
        }
    }
}

/// A TCP packet to `dst:dport`, valid checksums, with `ip_options` and 12 bytes of TCP
/// options.
fn tcp_packet(rng: &mut Rng, dst: Ipv4Addr, dport: u16, flags: u8, ip_options: &[u8]) -> Vec<u8> {
    let mut tcp = rng.bytes(32);
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = flags;
    tcp[16..18].copy_from_slice(&[0, 0]);
    tcp.extend(rng.bytes(10));
    let mut pkt = ipv4(
        rng,
        Ipv4Addr::new(10, 1, 0, 5),
        dst,
        6,
        ip_options,
        tcp.len(),
    );
    if checksum(&pkt) != 0 {
        pkt[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&pkt);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let mut pseudo = pkt[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    pkt.extend(tcp);
    pkt
}

/// WCCP GRE (redirect header flags 0) from `router` to `engine` around `inner`.
fn gre_frame(
    rng: &mut Rng,
    router: Ipv4Addr,
    engine: Ipv4Addr,
    options: &[u8],
    inner: &[u8],
) -> Vec<u8> {
    let mut f = ethernet(rng, [0; 6], 0x0800);
    let mut ip = ipv4(rng, router, engine, 47, options, 8 + inner.len());
    ip[6] = 0;
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&[0, 0, 0x88, 0x3e, 0, 7, 0, 0]);
    f.extend_from_slice(inner);
    f
}

/// The checksum values that an incremental update of a field from `from` to `to`
/// (big-endian bytes) turns into 0x0000, where one's complement implementations differ
/// (0x0000 or 0xffff), and their neighbours.
fn boundary_checks(from: &[u8], to: &[u8]) -> [u16; 4] {
    let sum = |b: &[u8]| {
        b.chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>()
            % 0xffff
    };
    // ~c + ~from + to = 0 (mod 0xffff), so ~c = from - to.
    let d = ((sum(from) + 0xffff - sum(to)) % 0xffff) as u16;
    [
        !d,
        !d.wrapping_add(0xffff),
        !d.wrapping_add(1),
        !d.wrapping_sub(1),
    ]
}

/// Named edge cases for one round's settings: every truncation of a GRE and of an L2
/// frame (each layer cut at each byte), outer TTLs and checksums at the boundaries of the
/// incremental update, and for each rewriting rule its inner checksums at those
/// boundaries.
fn edge_frames(rng: &mut Rng, setup: &Setup) -> Vec<(String, Vec<u8>)> {
    let router = setup.routers.first().copied().unwrap_or(ROUTERS[0]);
    let engine = if setup.engine.is_unspecified() {
        ENGINE
    } else {
        setup.engine
    };
    let port = setup
        .tables
        .ports
        .iter()
        .find(|(_, proxy)| **proxy != 0)
        .map_or(80, |(port, _)| *port);
    let option = [0x94, 0x04, 0, 0];
    let mut out = Vec::new();

    let inner = tcp_packet(rng, DESTS[0], port, SYN, &option);
    let gre = gre_frame(rng, router, engine, &option, &inner);
    for cut in 34..=gre.len() {
        out.push((format!("gre cut at {cut}"), gre[..cut].to_vec()));
    }
    let mut l2 = ethernet(rng, [0; 6], 0x0800);
    l2.extend(tcp_packet(rng, DESTS[2], port, ACK, &option));
    for cut in 34..=l2.len() {
        out.push((format!("l2 cut at {cut}"), l2[..cut].to_vec()));
    }

    let inner = tcp_packet(rng, DESTS[1], port, ACK | 0x08, &[]);
    for ttl in [64u8, 0, 1, 255] {
        let mut f = gre_frame(rng, router, engine, &[], &inner);
        f[14 + 8] = ttl;
        f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let valid = checksum(&f[14..34]);
        for check in [valid, 0, 0xffff]
            .into_iter()
            .chain(boundary_checks(&[ttl, 47], &[64, 47]))
        {
            let mut f = f.clone();
            f[14 + 10..14 + 12].copy_from_slice(&check.to_be_bytes());
            out.push((format!("outer ttl {ttl} check {check:#06x}"), f));
        }
    }

    for rule in setup.rules.iter().filter(|r| r.rewrite_dst.is_some()) {
        let new = rule.rewrite_dst.unwrap().octets();
        let dport = rule.port.unwrap_or(port);
        let inner = tcp_packet(rng, rule.prefix, dport, ACK, &[]);
        let old = rule.prefix.octets();
        for (i, check) in boundary_checks(&old, &new)
            .into_iter()
            .chain([0, 0xffff])
            .enumerate()
        {
            for at in [10, 20 + 16] {
                let mut inner = inner.clone();
                inner[at..at + 2].copy_from_slice(&check.to_be_bytes());
                let f = gre_frame(rng, router, engine, &[], &inner);
                out.push((format!("rewrite {rule:?} check {i} at {at}"), f.clone()));
                let mut l2 = f[..14].to_vec();
                l2.extend_from_slice(&inner);
                out.push((format!("l2 rewrite {rule:?} check {i} at {at}"), l2));
            }
        }
    }
    out
}

/// One round's settings, as written to the plane and to the model's tables.
struct Setup {
    plane: EnginePlane,
    tables: EngineTables,
    routers: Vec<Ipv4Addr>,
    engine: Ipv4Addr,
    rules: Vec<ReturnRule>,
}

fn random_setup(rng: &mut Rng, copy_targets: &[u32]) -> Result<Setup> {
    let mut plane = EnginePlane::load()?;
    let engine = if rng.chance(85) {
        ENGINE
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let settings = EngineSettings {
        addr: (!engine.is_unspecified()).then_some(engine),
        mark: rng.next() as u32,
        copy_ifindex: Some(rng.pick(copy_targets)).filter(|i| *i != 0),
        l2: rng.chance(50),
    };
    plane.configure(&settings)?;
    let mut routers: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    for _ in 0..rng.below(4) + usize::from(rng.chance(90)) as u64 {
        let router = rng.pick(&ROUTERS);
        plane.add_router(router)?;
        routers.insert(router, 1);
    }
    if rng.chance(15) {
        // An entry whose flags lack ROUTER_KNOWN: still a stranger.
        let router = Ipv4Addr::new(10, 2, 0, 99);
        let map = plane
            .object_mut()
            .ebpf_mut()
            .map_mut("engine_routers")
            .expect("engine_routers");
        let mut map: aya::maps::HashMap<_, u32, u32> = aya::maps::HashMap::try_from(map)?;
        let flags = rng.pick(&[0u32, 2]);
        map.insert(u32::from(router).to_be(), flags, 0)?;
        routers.insert(router, flags);
    }
    let mut ports = BTreeMap::new();
    for port in PORTS {
        if rng.chance(60) {
            let proxy = pick!(rng, [port, 61999, 3129, rng.next() as u16 | 1]);
            plane.set_service_port(port, proxy)?;
            ports.insert(port, proxy);
        }
    }
    let mut rules = Vec::new();
    let n = if rng.chance(25) { 0 } else { 1 + rng.below(6) };
    for _ in 0..n {
        let dest = rng.pick(&DESTS);
        let prefix_len = pick!(rng, [0u8, 8, 16, 24, 25, 31, 32, rng.below(33) as u8]);
        let rule = ReturnRule {
            prefix: dest,
            prefix_len,
            port: rng.chance(50).then(|| rng.pick(&PORTS)),
            return_to_router: rng.chance(70),
            rewrite_dst: rng
                .chance(40)
                .then(|| pick!(rng, [Ipv4Addr::new(10, 9, 0, 200), rng.addr()])),
            copy: rng.chance(40),
        };
        plane.add_rule(&rule)?;
        rules.push(rule);
    }
    if rng.chance(5) {
        plane.set_enabled(false)?;
    }
    let mut tables = EngineTables::new(plane.config());
    tables.routers = routers.clone();
    tables.ports = ports;
    for rule in &rules {
        let (key, entry) = rule.raw()?;
        tables.insert_rule(key, entry);
    }
    assert_eq!(tables.rule_count() as u32, plane.config().rules);
    let known = routers
        .iter()
        .filter(|(_, f)| **f & 1 != 0)
        .map(|(a, _)| *a)
        .collect();
    Ok(Setup {
        plane,
        tables,
        routers: known,
        engine,
        rules,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `struct __sk_buff` for the test run: all zero (on `lo`, no mark).
const SKB_CTX: [u8; 192] = [0; 192];
/// Offset of `mark` in `struct __sk_buff`.
const MARK_OFFSET: usize = 8;

/// Per-counter (packets, bytes) that moved between two reads.
fn moved(before: &EngineCounters, after: &EngineCounters) -> Vec<(u64, u64)> {
    Counter::ALL
        .iter()
        .map(|c| {
            let (a, b) = (after.get(*c), before.get(*c));
            (a.packets - b.packets, a.bytes - b.bytes)
        })
        .collect()
}

fn expected_moves(outcome: &Outcome) -> Vec<(u64, u64)> {
    let mut v = vec![(0, 0); ENGINE_STATS];
    for c in &outcome.counted {
        v[*c as usize].0 += 1;
        v[*c as usize].1 += outcome.bytes;
    }
    v
}

/// Whether BPF_PROG_TEST_RUN refuses (EINVAL) to make an skb of `frame`: it wants the
/// whole IPv4 or IPv6 header, and a tc program never sees such a packet.
fn too_short_for_skb(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + 20,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        _ => false,
    }
}

/// One frame through both; `None` when the kernel refuses to build an skb of it.
fn run_one(
    setup: &mut Setup,
    kernel: &Kernel,
    before: &mut EngineCounters,
    frame: &[u8],
    what: &str,
) -> Option<Outcome> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx_out = [0u8; 192];
    let program = setup.plane.program().unwrap_or_else(|e| panic!("{e}"));
    let result = match program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&SKB_CTX),
        ctx_out: Some(&mut ctx_out),
        ..TestRunOptions::new()
    }) {
        Ok(result) => result,
        Err(_) if too_short_for_skb(frame) => return None,
        Err(e) => panic!("{what}: BPF_PROG_TEST_RUN: {e:?}\ninput {}", hex(frame)),
    };
    let got = &out[..result.data_size_out as usize];
    let mark = u32::from_ne_bytes(ctx_out[MARK_OFFSET..MARK_OFFSET + 4].try_into().unwrap());
    let after = setup.plane.counters().unwrap_or_else(|e| panic!("{e}"));
    let got_moves = moved(before, &after);
    *before = after;

    let skb = Skb::received(frame, [0; 6], LO_IFINDEX);
    let expected = engine_model::process(&setup.tables, &Sockets::default(), kernel, &skb);
    let want_moves = expected_moves(&expected);
    if result.return_value != expected.verdict.code()
        || got != expected.frame.as_slice()
        || mark != expected.mark.unwrap_or(0)
        || got_moves != want_moves
    {
        let names = |m: &[(u64, u64)]| {
            Counter::ALL
                .iter()
                .zip(m)
                .filter(|(_, n)| n.0 != 0 || n.1 != 0)
                .map(|(c, n)| format!("{}={}/{}", c.name(), n.0, n.1))
                .collect::<Vec<_>>()
                .join(" ")
        };
        panic!(
            "{what}: program and model disagree\nconfig   {:?}\ninput    {}\nmodel    {:?} {:?} mark {:?} [{}]\n         {}\nprogram  verdict {} mark {mark:#x} [{}]\n         {}",
            setup.tables.config,
            hex(frame),
            expected.verdict,
            expected.reason,
            expected.mark,
            names(&want_moves),
            hex(&expected.frame),
            result.return_value,
            names(&got_moves),
            hex(got),
        );
    }
    if expected.verdict.code() == TC_ACT_REDIRECT {
        // The target is not visible in a test run; the model sends it back out of lo.
        assert_eq!(
            expected.verdict,
            engine_model::Verdict::Redirect(LO_IFINDEX)
        );
    }
    Some(expected)
}

#[test]
fn program_matches_model_on_random_frames() -> Result<()> {
    let lab = Lab::new("engdiff")?;
    let host = lab.host("engine")?;
    let peer = lab.host("peer")?;
    lab.link(&host, "cp0", &peer, "cp1")?;
    let veth = host.ifindex("cp0")?;
    assert_ne!(veth, MISSING_IFINDEX);
    let copy_targets = [0, 0, LO_IFINDEX, veth, MISSING_IFINDEX];
    let kernel = Kernel {
        clone_targets: [LO_IFINDEX, veth].into_iter().collect(),
        ..Kernel::default()
    };

    let mut rng = Rng(0x5eed_e61e_0d1f_f001);
    let mut per_reason: BTreeMap<Counter, u64> = BTreeMap::new();
    let mut per_kind: BTreeMap<Kind, u64> = BTreeMap::new();
    let (mut frames, mut refused) = (0u64, 0u64);
    let mut total_program = [0u64; ENGINE_STATS];
    for round in 0..ROUNDS {
        let mut setup = random_setup(&mut rng, &copy_targets)?;
        let mut before = setup.plane.counters()?;
        let start = before.clone();
        host.in_ns(|| {
            let edges = edge_frames(&mut rng, &setup);
            let random = (0..FRAMES_PER_ROUND)
                .map(|i| {
                    (
                        format!("frame {i}"),
                        random_frame(&mut rng, &setup.routers, setup.engine),
                    )
                })
                .collect::<Vec<_>>();
            let edges = edges.into_iter().map(|(name, f)| (name, (Kind::Edge, f)));
            for (name, (kind, frame)) in edges.chain(random) {
                let what = format!("round {round} {name} ({kind:?})");
                match run_one(&mut setup, &kernel, &mut before, &frame, &what) {
                    Some(outcome) => {
                        frames += 1;
                        *per_kind.entry(kind).or_default() += 1;
                        for c in outcome.counted {
                            *per_reason.entry(c).or_default() += 1;
                        }
                    }
                    None => refused += 1,
                }
            }
        })?;
        let end = setup.plane.counters()?;
        for (i, c) in Counter::ALL.iter().enumerate() {
            total_program[i] += end.packets(*c) - start.packets(*c);
        }
    }

    let summary = Counter::ALL
        .iter()
        .filter_map(|c| per_reason.get(c).map(|n| format!("{}={n}", c.name())))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "engine differential: {frames} frames agreed ({refused} refused by the kernel), {ROUNDS} settings; kinds {per_kind:?}; counters {summary}"
    );

    // The comparison happened, and covered every path a socket-less namespace allows.
    assert!(frames >= 50_000, "only {frames} frames compared");
    let reasons: u64 = Counter::ALL
        .iter()
        .filter(|c| c.is_reason())
        .map(|c| total_program[*c as usize])
        .sum();
    assert_eq!(
        reasons, frames,
        "one reason per frame in the program's counters"
    );
    let reachable = [
        Counter::NotIpv4,
        Counter::Disabled,
        Counter::NotRedirected,
        Counter::Stranger,
        Counter::Truncated,
        Counter::BadHeader,
        Counter::BadInner,
        Counter::ReturnNoSocket,
        Counter::ReturnRule,
        Counter::ReturnNotServed,
        Counter::ReturnNoListener,
        Counter::Copied,
        Counter::CopyFailed,
        Counter::Rewritten,
        Counter::L2,
    ];
    for c in Counter::ALL {
        let n = per_reason.get(&c).copied().unwrap_or(0);
        assert_eq!(
            n,
            total_program[c as usize],
            "{}: model vs program",
            c.name()
        );
        if reachable.contains(&c) {
            assert!(n > 0, "{} never occurred", c.name());
        } else {
            assert_eq!(n, 0, "{} needs a socket, and there is none", c.name());
        }
    }
    lab.teardown()
}
