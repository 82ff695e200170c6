//! The C program against the Rust model: the same tables, the same packets (random and
//! edge cases), the same verdict, output bytes, counters and connection table. Runs the
//! program with BPF_PROG_TEST_RUN; needs root.

use netns_tests::rng::Rng;
use std::net::Ipv4Addr;

use aya::programs::{TestRun as _, TestRunOptions};
use redirector_ebpf::{
    layout::{
        IFACE_ENGINE_FACING, IFACE_EXCLUDED, MAX_ENGINES, STATS_ENGINE_BASE,
        STATS_ENGINE_CONN_HITS, STATS_MSS_CLAMPED, STATS_PER_ENGINE,
    },
    model::{Dataplane, Outcome, Reason},
    table::{
        Assignment, EngineConfig, Method, MssClamp, Prefix, Protocol, ServiceConfig, Slot,
        TableConfig,
    },
    Redirector,
};
use wccp::assign::Mask;

/// The ifindex BPF_PROG_TEST_RUN gives an XDP program: the loopback device.
const TEST_IFINDEX: u32 = 1;
/// Heartbeats the kernel's clock can only be fresh against (the sum never passes
/// u64::MAX) and only stale against (any time after boot exceeds 1).
const FRESH: (u64, u64) = (u64::MAX / 2, 0);
const STALE: (u64, u64) = (0, 1);
/// What the model takes as "now" in both cases.
const MODEL_NOW: u64 = u64::MAX / 4;

const PORT_POOL: [u16; 8] = [80, 443, 8080, 53, 3128, 21, 25, 1];
const ADDR_POOL: [Ipv4Addr; 8] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 77),
    Ipv4Addr::new(198, 51, 100, 9),
    Ipv4Addr::new(198, 51, 100, 200),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(10, 1, 2, 3),
    Ipv4Addr::new(172, 16, 255, 1),
    Ipv4Addr::new(100, 64, 0, 1),
];

fn random_slot(rng: &mut Rng, engines: usize) -> Slot {
    Slot {
        engine: if engines > 0 && rng.chance(85) {
            Some(rng.below(engines as u64) as u8)
        } else {
            None
        },
        alternate: rng.chance(15),
        sticky: rng.chance(40),
    }
}

fn random_engine(rng: &mut Rng, i: usize) -> EngineConfig {
    EngineConfig {
        addr: Ipv4Addr::new(10, 99, rng.below(4) as u8, i as u8 + 1),
        router_addr: Ipv4Addr::new(10, 99, 0, 254),
        dst_mac: [0x02, 0xee, 0, 0, 0, i as u8],
        src_mac: [0x02, 0xaa, 0, 0, 0, 1],
        ifindex: if rng.chance(50) {
            0
        } else {
            rng.below(8) as u32 + 2
        },
        mtu: rng.pick(&[0, 1500, 1500, 600, 1000]),
        method: if rng.chance(70) {
            Method::Gre
        } else {
            Method::L2
        },
        return_method: if rng.chance(35) {
            Method::L2
        } else {
            Method::Gre
        },
        usable: rng.chance(85),
        vlan: rng.chance(30).then(|| rng.below(4094) as u16 + 1),
    }
}

/// A list of prefixes around the addresses flows use (so that they match often), of
/// every length, with an unrelated one now and then.
fn random_list(rng: &mut Rng) -> Vec<Prefix> {
    (0..rng.below(5))
        .map(|_| {
            let addr = if rng.chance(80) {
                rng.pick(&ADDR_POOL)
            } else {
                Ipv4Addr::from(rng.next() as u32)
            };
            let any = rng.below(33) as u8;
            let len = rng.pick(&[0, 8, 16, 24, 25, 30, 32, any]);
            Prefix::new(addr, len)
        })
        .collect()
}

fn random_mask(rng: &mut Rng) -> Mask {
    let budget = rng.below(8) as u32;
    let (mut s, mut d, mut sp, mut dp) = (0u32, 0u32, 0u16, 0u16);
    for _ in 0..budget {
        match rng.below(4) {
            0 => s |= 1 << rng.below(32),
            1 => d |= 1 << rng.below(32),
            2 => sp |= 1 << rng.below(16),
            _ => dp |= 1 << rng.below(16),
        }
    }
    Mask::new(s, d, sp, dp).expect("at most 7 bits")
}

fn random_config(rng: &mut Rng) -> TableConfig {
    let engine_count = rng.below(9) as usize;
    let engines = (0..engine_count).map(|i| random_engine(rng, i)).collect();
    let service_count = if rng.chance(5) {
        256
    } else {
        rng.below(6) as usize
    };
    let mut ids: Vec<u8> = (0..=255).collect();
    for i in 0..ids.len() {
        let j = rng.below(256) as usize;
        ids.swap(i, j);
    }
    let services = ids[..service_count]
        .iter()
        .map(|&id| {
            // Every combination of the hash, alternate and port flags over the run.
            let flags = (rng.next() as u32) & 0x0f3f;
            let ports = (0..rng.below(9)).map(|_| rng.pick(&PORT_POOL)).collect();
            let assignment = if rng.chance(25) {
                let mask = random_mask(rng);
                let values = (0..mask.value_count())
                    .map(|_| random_slot(rng, engine_count))
                    .collect();
                Assignment::Mask { mask, values }
            } else {
                Assignment::Hash((0..256).map(|_| random_slot(rng, engine_count)).collect())
            };
            let lists = rng.chance(30);
            ServiceConfig {
                id,
                dynamic: rng.chance(70),
                protocol: if rng.chance(70) {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                },
                priority: rng.below(4) as u8,
                flags,
                ports,
                assignment,
                redirect_list: if lists { random_list(rng) } else { Vec::new() },
                skip_list: if lists && rng.chance(60) {
                    random_list(rng)
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    let mss_clamp = match rng.below(10) {
        0 => MssClamp::Off,
        1..=3 => {
            let any = rng.next() as u16;
            MssClamp::Fixed(rng.pick(&[0, 536, 1200, 1400, 1460, any]))
        }
        _ => MssClamp::Auto,
    };
    TableConfig {
        services,
        engines,
        mss_clamp,
    }
}

/// A rebalance: some buckets move (and turn sticky), some engines come and go.
fn mutate(rng: &mut Rng, config: &TableConfig) -> TableConfig {
    let mut next = config.clone();
    let engines = next.engines.len();
    for e in &mut next.engines {
        if rng.chance(20) {
            e.usable = !e.usable;
        }
    }
    for s in &mut next.services {
        let slots = match &mut s.assignment {
            Assignment::Hash(slots) => slots,
            Assignment::Mask { values, .. } => values,
        };
        for slot in slots.iter_mut() {
            if rng.chance(20) {
                *slot = random_slot(rng, engines);
                slot.sticky = rng.chance(80);
            }
        }
    }
    next
}

struct Flow {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    tcp: bool,
}

fn ipv4_header(
    rng: &mut Rng,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: usize,
) -> Vec<u8> {
    let options = if rng.chance(10) {
        rng.below(11) as usize * 4
    } else {
        0
    };
    let ihl = 20 + options;
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[1] = rng.next() as u8;
    h[2..4].copy_from_slice(&((ihl + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&(rng.next() as u16).to_be_bytes());
    let mut frag: u16 = if rng.chance(50) { 0x4000 } else { 0 };
    if rng.chance(4) {
        frag |= 0x2000;
    }
    if rng.chance(3) {
        frag |= rng.below(0x1fff) as u16 + 1;
    }
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = if rng.chance(10) { 1 } else { rng.next() as u8 };
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    for (i, b) in h[20..].iter_mut().enumerate() {
        *b = if i % 5 == 4 { 0 } else { 1 };
    }
    let check = redirector_ebpf::model::ipv4_checksum(&h);
    h[10..12].copy_from_slice(&check.to_be_bytes());
    h
}

fn ethernet(rng: &mut Rng, ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0xfe, 0x02, 0, 0, 0, 0, rng.next() as u8];
    let tags = rng.pick(&[0, 0, 0, 0, 1, 2]);
    if tags == 2 {
        f.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20]);
    } else if tags == 1 {
        let tpid: u16 = rng.pick(&[0x8100, 0x88a8]);
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0, 30]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A flow's frame: TCP with a random handshake state, or UDP.
fn flow_packet(rng: &mut Rng, flow: &Flow) -> Vec<u8> {
    let mut f = ethernet(rng, 0x0800);
    f.extend(ip_packet(rng, flow));
    f
}

/// A flow's IP packet.
fn ip_packet(rng: &mut Rng, flow: &Flow) -> Vec<u8> {
    let payload_len = if rng.chance(5) {
        1400 + rng.below(81) as usize
    } else {
        rng.below(120) as usize
    };
    let mut l4 = if flow.tcp {
        let mut t = vec![0u8; 20];
        let any = rng.next() as u8;
        t[13] = rng.pick(&[0x02, 0x02, 0x12, 0x12, 0x10, 0x18, 0x11, 0x04, any]);
        t[16..18].copy_from_slice(&(rng.next() as u16).to_be_bytes());
        let options = if rng.chance(50) {
            tcp_options(rng)
        } else {
            Vec::new()
        };
        t.extend(&options);
        // Now and then a data offset that disagrees with the options written.
        let doff = if rng.chance(5) {
            rng.below(16) as u8
        } else {
            (t.len() / 4) as u8
        };
        t[12] = doff << 4;
        t
    } else {
        let mut u = vec![0u8; 8];
        u[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
        u
    };
    l4[0..2].copy_from_slice(&flow.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&flow.dport.to_be_bytes());
    l4.extend(rng.bytes(payload_len));
    let protocol = if flow.tcp { 6 } else { 17 };
    let mut p = ipv4_header(rng, protocol, flow.src, flow.dst, l4.len());
    p.extend(l4);
    p
}

/// TCP options as SYNs and SYN-ACKs carry them (MSS at even and odd offsets, NOPs,
/// window scale, SACK permitted, timestamps), sometimes broken (zero or one lengths,
/// lengths past the end, an early end of list), padded to whole words.
fn tcp_options(rng: &mut Rng) -> Vec<u8> {
    let mut o = Vec::new();
    for _ in 0..rng.below(6) + 1 {
        match rng.below(12) {
            0..=3 => {
                let any = rng.next() as u16;
                let mss: u16 = rng.pick(&[536, 1200, 1380, 1432, 1460, 8960, any]);
                o.extend_from_slice(&[2, 4]);
                o.extend_from_slice(&mss.to_be_bytes());
            }
            4 | 5 => o.push(1),
            6 => o.extend_from_slice(&[3, 3, rng.below(15) as u8]),
            7 => o.extend_from_slice(&[4, 2]),
            8 => {
                o.extend_from_slice(&[8, 10]);
                o.extend(rng.bytes(8));
            }
            9 => o.push(0),
            10 => o.extend_from_slice(&[rng.next() as u8, rng.below(3) as u8]),
            _ => o.extend_from_slice(&[2, rng.pick(&[3, 5, 40])]),
        }
    }
    o.truncate(40);
    while o.len() % 4 != 0 {
        o.push(1);
    }
    o
}

/// A GRE packet, from an engine or not, well-formed WCCP or not.
fn gre_packet(rng: &mut Rng, config: &TableConfig) -> Vec<u8> {
    let src = match config.engines.first() {
        Some(_) if rng.chance(80) => {
            config.engines[rng.below(config.engines.len() as u64) as usize].addr
        }
        _ => rng.pick(&ADDR_POOL),
    };
    let inner_flow = Flow {
        src: rng.pick(&ADDR_POOL),
        dst: rng.pick(&ADDR_POOL),
        sport: rng.next() as u16,
        dport: rng.pick(&PORT_POOL),
        tcp: rng.chance(80),
    };
    let inner_ip = ip_packet(rng, &inner_flow);
    let mut gre = vec![0, 0, 0x88, 0x3e];
    if rng.chance(5) {
        gre = vec![0x20, 0, 0x88, 0x3e, 0, 0, 0, 1];
    } else if rng.chance(5) {
        gre = vec![0, 0, 0x08, 0x00];
    }
    if rng.chance(70) {
        gre.extend_from_slice(&[
            rng.pick(&[0, 1, 2, 3]),
            rng.next() as u8,
            0,
            rng.next() as u8,
        ]);
    }
    if rng.chance(3) {
        gre.extend_from_slice(&[0x60, 0, 0, 0]);
    }
    gre.extend(inner_ip);
    let mut f = ethernet(rng, 0x0800);
    f.extend(ipv4_header(
        rng,
        47,
        src,
        Ipv4Addr::new(10, 99, 0, 254),
        gre.len(),
    ));
    f.extend(gre);
    f
}

fn random_frame(rng: &mut Rng, config: &TableConfig, flows: &[Flow]) -> Vec<u8> {
    let mut f = match rng.below(100) {
        0..=3 => {
            let ethertype = rng.pick(&[0x0806, 0x86dd, 0x8847]);
            let mut f = ethernet(rng, ethertype);
            let n = rng.below(60) as usize + 20;
            f.extend(rng.bytes(n));
            f
        }
        4..=11 => gre_packet(rng, config),
        12..=14 => {
            let mut f = ethernet(rng, 0x0800);
            let src = rng.pick(&ADDR_POOL);
            let protocol = rng.pick(&[1, 50, 132]);
            f.extend(ipv4_header(rng, protocol, src, src, 30));
            f.extend(rng.bytes(30));
            f
        }
        15..=19 if !config.engines.is_empty() => {
            // An engine's own connection.
            let e = config.engines[rng.below(config.engines.len() as u64) as usize];
            let flow = Flow {
                src: e.addr,
                dst: rng.pick(&ADDR_POOL),
                sport: rng.next() as u16,
                dport: rng.pick(&PORT_POOL),
                tcp: rng.chance(80),
            };
            let mut f = flow_packet(rng, &flow);
            if rng.chance(50) {
                f[6..12].copy_from_slice(&e.dst_mac);
            }
            f
        }
        _ => {
            let i = rng.below(flows.len() as u64) as usize;
            let mut f = flow_packet(rng, &flows[i]);
            // From an engine's MAC: an L2 return when the engine returns at L2, else
            // (and for MACs ending like an engine's) a miss behind a filter hit.
            if !config.engines.is_empty() && rng.chance(12) {
                let e = config.engines[rng.below(config.engines.len() as u64) as usize];
                f[6..12].copy_from_slice(&e.dst_mac);
                if rng.chance(20) {
                    f[6] ^= 0x04;
                }
            }
            f
        }
    };
    // Damage: truncation, bad version or length, trailing padding.
    match rng.below(100) {
        0..=3 if f.len() > 15 => {
            let keep = 14 + rng.below(f.len() as u64 - 14) as usize;
            f.truncate(keep);
        }
        4 if f.len() > 20 => f[14] = rng.next() as u8,
        5 if f.len() > 20 => f[16] = rng.next() as u8,
        6..=8 => f.extend(std::iter::repeat_n(0, rng.below(20) as usize)),
        _ => {}
    }
    f
}

fn random_flows(rng: &mut Rng) -> Vec<Flow> {
    (0..64)
        .map(|_| Flow {
            src: rng.pick(&ADDR_POOL),
            dst: rng.pick(&ADDR_POOL),
            sport: if rng.chance(30) {
                rng.pick(&PORT_POOL)
            } else {
                1024 + rng.below(64) as u16
            },
            dport: if rng.chance(80) {
                rng.pick(&PORT_POOL)
            } else {
                rng.next() as u16
            },
            tcp: rng.chance(75),
        })
        .collect()
}

/// One packet through both; panics with the frame in hex on any difference.
fn run_one(
    redirector: &mut Redirector,
    model: &mut Dataplane,
    frame: &[u8],
    what: &str,
) -> Outcome {
    let expected = model.process(frame, TEST_IFINDEX, MODEL_NOW);
    let mut out = vec![0u8; frame.len() + 256];
    let program = redirector.program().unwrap_or_else(|e| panic!("{e}"));
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    let got = &out[..result.data_size_out as usize];
    if result.return_value != expected.verdict.code() || got != expected.frame.as_slice() {
        panic!(
            "{what}: program and model disagree\ninput    {}\nmodel    {:?} {:?} {}\nprogram  verdict {} {}",
            hex(frame),
            expected.verdict,
            expected.reason,
            hex(&expected.frame),
            result.return_value,
            hex(got)
        );
    }
    expected
}

/// `struct __sk_buff` as BPF_PROG_TEST_RUN takes it for a tc program: zero but for
/// `ingress_ifindex` (offset 36), the interface the packet arrived on.
fn skb_ctx(ingress_ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx
}

/// Whether BPF_PROG_TEST_RUN refuses to make an skb of `frame` (EINVAL): the kernel wants
/// the whole IPv4 or IPv6 header there, and a tc program never sees such a packet.
fn too_short_for_skb(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + 20,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        Some(_) => false,
        None => true,
    }
}

/// One packet through the egress program and the model's egress. `None` when the kernel
/// refuses to make an skb of the frame ([`too_short_for_skb`]), and then the model is not
/// run either.
fn run_one_egress(
    redirector: &mut Redirector,
    model: &mut Dataplane,
    frame: &[u8],
    ingress_ifindex: u32,
    what: &str,
) -> Option<Outcome> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = skb_ctx(ingress_ifindex);
    let program = redirector.out_program().unwrap_or_else(|e| panic!("{e}"));
    let result = match program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..TestRunOptions::new()
    }) {
        Ok(result) => result,
        Err(_) if too_short_for_skb(frame) => return None,
        Err(e) => panic!("{what}: BPF_PROG_TEST_RUN (tc): {e:?} frame {}", hex(frame)),
    };
    let expected = model.process_egress(frame, ingress_ifindex, MODEL_NOW);
    let got = &out[..result.data_size_out as usize];
    if result.return_value != expected.verdict.tc_code() || got != expected.frame.as_slice() {
        panic!(
            "{what} (egress from {ingress_ifindex}): program and model disagree\ninput    {}\nmodel    {:?} {:?} {}\nprogram  verdict {} {}",
            hex(frame),
            expected.verdict,
            expected.reason,
            hex(&expected.frame),
            result.return_value,
            hex(got)
        );
    }
    Some(expected)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn compare_state(redirector: &mut Redirector, model: &Dataplane, what: &str) {
    let stats = redirector.stats().unwrap_or_else(|e| panic!("{e}"));
    for (i, (got, want)) in stats.iter().zip(&model.stats).enumerate() {
        assert_eq!(got, want, "{what}: stats[{i}]");
    }
    let mut conns = redirector.conns().unwrap_or_else(|e| panic!("{e}"));
    let mut expected: Vec<_> = model.conns.iter().map(|(k, v)| (*k, *v)).collect();
    let key = |(k, _): &(redirector_ebpf::layout::FlowKey, _)| (k.saddr, k.daddr, k.sport, k.dport);
    conns.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(conns, expected, "{what}: connection table");
}

#[test]
fn program_matches_model_on_random_packets() {
    let mut redirector = Redirector::load().unwrap_or_else(|e| panic!("{e}"));
    let mut model = Dataplane::default();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let rounds = 60;
    let per_table = 1200;
    let mut packets = 0usize;
    let mut egress_packets = 0usize;
    let mut reasons = std::collections::BTreeMap::new();
    let mut egress = std::collections::BTreeMap::new();

    for round in 0..rounds {
        let config = random_config(&mut rng);
        let flows = random_flows(&mut rng);
        let iface = match round % 12 {
            3 => IFACE_EXCLUDED,
            7 => IFACE_ENGINE_FACING,
            _ => 0,
        };
        redirector
            .set_iface_flags(TEST_IFINDEX, iface)
            .unwrap_or_else(|e| panic!("{e}"));
        model.set_iface_flags(TEST_IFINDEX, iface);
        let (hb, grace) = if rng.chance(8) { STALE } else { FRESH };
        redirector
            .set_heartbeat(hb, grace)
            .unwrap_or_else(|e| panic!("{e}"));
        model.control.heartbeat_jiffies = hb;
        model.control.grace_jiffies = grace;

        let mut table_config = config;
        for step in 0..2 {
            let table = table_config.compile().unwrap_or_else(|e| panic!("{e}"));
            redirector.install(&table).unwrap_or_else(|e| panic!("{e}"));
            model.install(table);
            let enabled = !rng.chance(3);
            redirector
                .set_enabled(enabled)
                .unwrap_or_else(|e| panic!("{e}"));
            if enabled {
                model.control.flags |= 1;
            } else {
                model.control.flags &= !1;
            }
            assert_eq!(redirector.control(), model.control);
            for i in 0..per_table {
                let frame = random_frame(&mut rng, &table_config, &flows);
                let what = format!("round {round} table {step} packet {i}");
                if rng.chance(30) {
                    // Redirect out: the same packet leaving an interface, having
                    // arrived on the flagged test interface or from the router itself.
                    let from = if rng.chance(70) { TEST_IFINDEX } else { 0 };
                    if let Some(outcome) =
                        run_one_egress(&mut redirector, &mut model, &frame, from, &what)
                    {
                        *egress.entry(outcome.reason).or_insert(0usize) += 1;
                        egress_packets += 1;
                        packets += 1;
                    }
                } else {
                    let outcome = run_one(&mut redirector, &mut model, &frame, &what);
                    *reasons.entry(outcome.reason).or_insert(0usize) += 1;
                    packets += 1;
                }
            }
            compare_state(
                &mut redirector,
                &model,
                &format!("round {round} table {step}"),
            );
            table_config = mutate(&mut rng, &table_config);
        }
        redirector.clear_conns().unwrap_or_else(|e| panic!("{e}"));
        model.conns.clear();
    }
    eprintln!("{packets} packets, {egress_packets} of them at egress");
    eprintln!("ingress by reason: {reasons:?}");
    eprintln!("egress by reason: {egress:?}");
    assert!(packets - egress_packets >= 100_000);
    for reason in [
        Reason::RedirectGre,
        Reason::RedirectL2,
        Reason::EngineFacing,
        Reason::ListSkip,
        Reason::TooBigDf,
        Reason::Heartbeat,
    ] {
        assert!(
            egress.get(&reason).copied().unwrap_or(0) > 0,
            "no egress packet took {reason:?}"
        );
    }
    // Every path was taken (adjust_head never fails in a test run).
    for reason in Reason::ALL {
        if reason != Reason::AdjustFailed {
            assert!(
                reasons.get(&reason).copied().unwrap_or(0) > 0,
                "no packet took {reason:?}"
            );
        }
    }
    let conn_hits: u64 = (0..MAX_ENGINES)
        .map(|e| {
            model.stats[STATS_ENGINE_BASE + e * STATS_PER_ENGINE + STATS_ENGINE_CONN_HITS].packets
        })
        .sum();
    eprintln!("connection-table hits: {conn_hits}");
    assert!(conn_hits > 0, "no packet followed the connection table");
    let clamped = model.stats[STATS_MSS_CLAMPED].packets;
    eprintln!("SYN-ACKs clamped: {clamped}");
    assert!(clamped > 0, "no SYN-ACK was clamped");
}

/// A frame for the fixtures, every field chosen.
#[allow(clippy::too_many_arguments)]
fn fixture_frame(
    tags: &[u16],
    options: usize,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    src: [u8; 4],
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 0, 9];
    for &tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0, 7]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ihl = 20 + options;
    let mut ip = vec![0u8; ihl];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = ttl;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[198, 51, 100, 1]);
    for b in &mut ip[20..] {
        *b = 1;
    }
    let c = redirector_ebpf::model::ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(l4);
    f
}

fn tcp(dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut t = vec![0u8; 20 + payload];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t
}

fn fixture_config() -> TableConfig {
    let engine = |i: u8, method, return_method| EngineConfig {
        addr: Ipv4Addr::new(10, 0, 0, i),
        router_addr: Ipv4Addr::new(10, 0, 0, 1),
        dst_mac: [2, 0xee, 0, 0, 0, i],
        src_mac: [2, 0xaa, 0, 0, 0, 1],
        ifindex: 0,
        mtu: 1500,
        method,
        return_method,
        usable: true,
        vlan: None,
    };
    let tagged = |i: u8, method, vlan| EngineConfig {
        vlan: Some(vlan),
        ..engine(i, method, Method::Gre)
    };
    let all = |e| Slot {
        engine: Some(e),
        ..Slot::default()
    };
    let prefixes = |list: &[&str]| -> Vec<Prefix> {
        list.iter()
            .map(|p| p.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    };
    let gre_tcp = |id: u8, port: u16| ServiceConfig {
        id,
        dynamic: true,
        protocol: Protocol::Tcp,
        priority: 2,
        flags: wccp::assign::flags::DST_IP_HASH | wccp::assign::flags::PORTS_DEFINED,
        ports: vec![port],
        assignment: Assignment::Hash(vec![all(0); 256]),
        ..ServiceConfig::default()
    };
    TableConfig {
        services: vec![
            ServiceConfig {
                id: 0,
                dynamic: false,
                protocol: Protocol::Tcp,
                priority: 0,
                flags: wccp::assign::flags::DST_IP_HASH | wccp::assign::flags::PORTS_DEFINED,
                ports: vec![80],
                assignment: Assignment::Hash(vec![all(0); 256]),
                ..ServiceConfig::default()
            },
            ServiceConfig {
                id: 91,
                dynamic: true,
                protocol: Protocol::Udp,
                priority: 1,
                flags: wccp::assign::flags::SRC_IP_HASH | wccp::assign::flags::PORTS_DEFINED,
                ports: vec![53],
                assignment: Assignment::Hash(vec![all(1); 256]),
                ..ServiceConfig::default()
            },
            // Lists on the source: only 192.0.2.0/24, but never its lower half.
            ServiceConfig {
                redirect_list: prefixes(&["192.0.2.0/24"]),
                skip_list: prefixes(&["192.0.2.0/25"]),
                ..gre_tcp(92, 25)
            },
            // Lists on both sides: redirected toward 198.51.100.0/24, except from
            // 203.0.113.0/24.
            ServiceConfig {
                redirect_list: prefixes(&["198.51.100.0/24"]),
                skip_list: prefixes(&["203.0.113.0/24"]),
                ..gre_tcp(93, 23)
            },
            // A skip list only: everything but 100.64.0.0/10.
            ServiceConfig {
                skip_list: prefixes(&["100.64.0.0/10"]),
                ..gre_tcp(94, 110)
            },
            // Engines behind VLAN devices: GRE on VLAN 20, L2 on VLAN 30.
            ServiceConfig {
                assignment: Assignment::Hash(vec![all(2); 256]),
                ..gre_tcp(95, 8443)
            },
            ServiceConfig {
                id: 96,
                dynamic: true,
                protocol: Protocol::Udp,
                priority: 1,
                flags: wccp::assign::flags::SRC_IP_HASH | wccp::assign::flags::PORTS_DEFINED,
                ports: vec![5353],
                assignment: Assignment::Hash(vec![all(3); 256]),
                ..ServiceConfig::default()
            },
        ],
        engines: vec![
            engine(2, Method::Gre, Method::Gre),
            engine(3, Method::L2, Method::L2),
            tagged(4, Method::Gre, 20),
            tagged(5, Method::L2, 30),
        ],
        mss_clamp: MssClamp::Auto,
    }
}

/// A TCP segment from `sport` to `dport` with `options` (padded by the caller).
fn tcp_with(sport: u16, dport: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = (((20 + options.len()) / 4) as u8) << 4;
    t[13] = flags;
    t[16..18].copy_from_slice(&0x1234u16.to_be_bytes());
    t.extend_from_slice(options);
    t
}

/// The L2-return engine's MAC in [`fixture_config`].
const ENGINE3_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 3];

/// An MSS option.
fn mss(value: u16) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&value.to_be_bytes());
    o
}

fn with_src_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

/// The edge cases the issue names, by name, with the ingress interface's flags.
fn fixture_inputs() -> Vec<(&'static str, Vec<u8>, u32)> {
    let mut cases: Vec<_> = fixture_frames()
        .into_iter()
        .map(|(name, frame)| (name, frame, 0))
        .collect();
    cases.extend(egress_frames());
    let server = [198, 51, 100, 9];
    let synack = tcp_with(80, 40000, 0x12, &mss(1460));
    cases.push((
        "syn-ack on an engine-facing interface: clamped",
        fixture_frame(&[], 0, 0x4000, 64, 6, server, &synack),
        IFACE_ENGINE_FACING,
    ));
    cases.push((
        "syn-ack on an excluded interface: untouched",
        fixture_frame(&[], 0, 0x4000, 64, 6, server, &synack),
        IFACE_EXCLUDED,
    ));
    cases.push((
        "l2 return on an engine-facing interface",
        with_src_mac(
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 7], &tcp(80, 0x10, 0)),
            ENGINE3_MAC,
        ),
        IFACE_ENGINE_FACING,
    ));
    cases
}

/// Cases for the egress program ("redirect out"): names start with "egress: ".
fn egress_frames() -> Vec<(&'static str, Vec<u8>, u32)> {
    let client = [192, 0, 2, 7];
    let syn = tcp(80, 0x02, 0);
    vec![
        (
            "egress: tcp syn to service 0, gre",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &syn),
            0,
        ),
        (
            "egress: udp service 91, l2",
            {
                let mut udp = vec![0u8; 8];
                udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
                udp[2..4].copy_from_slice(&53u16.to_be_bytes());
                udp[4..6].copy_from_slice(&8u16.to_be_bytes());
                fixture_frame(&[], 0, 0, 64, 17, client, &udp)
            },
            0,
        ),
        (
            // The engine's tag is skb metadata at egress, not in the bytes.
            "egress: tcp syn to service 95, gre, engine on vlan 20",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &tcp(8443, 0x02, 0)),
            0,
        ),
        (
            "egress: arrived on an engine-facing interface (a return)",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &syn),
            IFACE_ENGINE_FACING,
        ),
        (
            "egress: arrived on an excluded interface",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &syn),
            IFACE_EXCLUDED,
        ),
        (
            "egress: oversize with df fails open (no icmp)",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &tcp(80, 0x10, 1460)),
            0,
        ),
        (
            "egress: vlan-tagged bytes are not ipv4",
            fixture_frame(&[0x8100], 0, 0, 64, 6, client, &syn),
            0,
        ),
        (
            "egress: skip list",
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 7], &tcp(25, 0x02, 0)),
            0,
        ),
        (
            "egress: syn-ack from port 80 is not clamped",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                [198, 51, 100, 9],
                &tcp_with(80, 40000, 0x12, &mss(1460)),
            ),
            0,
        ),
    ]
}

/// The tc verdict's name.
fn tc_verdict_name(code: u32) -> &'static str {
    match code {
        0 => "TC_ACT_OK",
        2 => "TC_ACT_SHOT",
        7 => "TC_ACT_REDIRECT",
        _ => "?",
    }
}

fn fixture_frames() -> Vec<(&'static str, Vec<u8>)> {
    let client = [192, 0, 2, 7];
    let engine = [10, 0, 0, 2];
    let syn = tcp(80, 0x02, 0);
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
    udp[2..4].copy_from_slice(&53u16.to_be_bytes());
    udp[4..6].copy_from_slice(&8u16.to_be_bytes());
    let mut udp5353 = udp.clone();
    udp5353[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp5353[2..4].copy_from_slice(&5353u16.to_be_bytes());
    let redirected = fixture_frame(&[], 0, 0x4000, 1, 6, client, &syn);
    let mut gre_rh = vec![0, 0, 0x88, 0x3e, 0x01, 0, 0, 0];
    gre_rh.extend_from_slice(&redirected[14..]);
    let mut gre_plain = vec![0, 0, 0x88, 0x3e];
    gre_plain.extend_from_slice(&redirected[14..]);
    let mut gre_keyed = vec![0x20, 0, 0x88, 0x3e, 0, 0, 0, 1];
    gre_keyed.extend_from_slice(&redirected[14..]);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let plain = fixture_frame(&[], 0, 0, 64, 6, client, &syn);
    let server = [198, 51, 100, 9];
    let synack = tcp_with(80, 40000, 0x12, &mss(1460));
    vec![
        ("arp", arp),
        ("truncated ethernet+ip", plain[..30].to_vec()),
        ("truncated tcp", plain[..40].to_vec()),
        ("tcp syn to service 0", plain.clone()),
        (
            "tcp ack to service 0",
            fixture_frame(&[], 0, 0, 64, 6, client, &tcp(80, 0x10, 10)),
        ),
        (
            "802.1q tag",
            fixture_frame(&[0x8100], 0, 0, 64, 6, client, &syn),
        ),
        (
            "802.1ad + 802.1q tags",
            fixture_frame(&[0x88a8, 0x8100], 0, 0, 64, 6, client, &syn),
        ),
        (
            "ip options 40 bytes",
            fixture_frame(&[], 40, 0, 64, 6, client, &syn),
        ),
        (
            "first fragment",
            fixture_frame(&[], 0, 0x2000, 64, 6, client, &syn),
        ),
        (
            "non-first fragment",
            fixture_frame(&[], 0, 0x0010, 64, 6, client, &syn),
        ),
        ("ttl 1 redirected", redirected.clone()),
        (
            "no service port",
            fixture_frame(&[], 0, 0, 64, 6, client, &tcp(8080, 0x02, 0)),
        ),
        (
            "udp service 91 (l2)",
            fixture_frame(&[], 0, 0, 64, 17, client, &udp),
        ),
        (
            "udp service 91 (l2), 802.1q tag dropped",
            fixture_frame(&[0x8100], 0, 0, 64, 17, client, &udp),
        ),
        (
            "udp service 91 (l2), 802.1ad + 802.1q tags dropped",
            fixture_frame(&[0x88a8, 0x8100], 0, 0, 64, 17, client, &udp),
        ),
        (
            "tcp syn to service 95 (gre, engine on vlan 20)",
            fixture_frame(&[], 0, 0, 64, 6, client, &tcp(8443, 0x02, 0)),
        ),
        (
            "tcp syn to service 95 (gre, engine on vlan 20), 802.1q tag replaced",
            fixture_frame(&[0x8100], 0, 0, 64, 6, client, &tcp(8443, 0x02, 0)),
        ),
        (
            "udp service 96 (l2, engine on vlan 30): tag added",
            fixture_frame(&[], 0, 0, 64, 17, client, &udp5353),
        ),
        (
            "udp service 96 (l2, engine on vlan 30): 802.1q tag replaced",
            fixture_frame(&[0x8100], 0, 0, 64, 17, client, &udp5353),
        ),
        (
            "udp service 96 (l2, engine on vlan 30): 802.1ad + 802.1q tags replaced",
            fixture_frame(&[0x88a8, 0x8100], 0, 0, 64, 17, client, &udp5353),
        ),
        (
            "engine's own connection",
            fixture_frame(&[], 0, 0, 64, 6, engine, &syn),
        ),
        (
            "oversize with df",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &tcp(80, 0x10, 1460)),
        ),
        (
            "oversize without df",
            fixture_frame(&[], 0, 0, 64, 6, client, &tcp(80, 0x10, 1460)),
        ),
        (
            "return with redirect header, ttl 1 inside",
            fixture_frame(&[], 0, 0, 64, 47, engine, &gre_rh),
        ),
        (
            "return without redirect header",
            fixture_frame(&[0x8100], 0, 0, 64, 47, engine, &gre_plain),
        ),
        (
            "return with gre key: not decapsulated",
            fixture_frame(&[], 0, 0, 64, 47, engine, &gre_keyed),
        ),
        (
            "gre from a non-engine",
            fixture_frame(&[], 0, 0, 64, 47, client, &gre_rh),
        ),
        (
            "oversize with df, 802.1q tag and ip options: icmp quotes 60+8 bytes",
            fixture_frame(&[0x8100], 40, 0x4000, 64, 6, client, &tcp(80, 0x10, 1440)),
        ),
        (
            "oversize with df, exactly at the mtu: redirected",
            fixture_frame(&[], 0, 0x4000, 64, 6, client, &tcp(80, 0x10, 1432)),
        ),
        (
            "syn-ack from port 80: mss 1460 clamped to 1432",
            fixture_frame(&[], 0, 0x4000, 64, 6, server, &synack),
        ),
        (
            "syn-ack, mss at an odd offset after a nop",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                server,
                &tcp_with(80, 40000, 0x12, &[1, 2, 4, 0x23, 0x28, 1, 1, 0]),
            ),
        ),
        (
            "syn-ack, mss after timestamps and window scale",
            fixture_frame(&[], 0, 0x4000, 64, 6, server, &{
                let mut o = vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7];
                o.extend(mss(65535));
                tcp_with(80, 40000, 0x12, &o)
            }),
        ),
        (
            "syn-ack, mss below the clamp: untouched",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                server,
                &tcp_with(80, 40000, 0x12, &mss(1200)),
            ),
        ),
        (
            "syn-ack, option list ends before the mss: untouched",
            fixture_frame(&[], 0, 0x4000, 64, 6, server, &{
                let mut o = vec![0, 1, 1, 1];
                o.extend(mss(1460));
                tcp_with(80, 40000, 0x12, &o)
            }),
        ),
        (
            "syn-ack, zero option length: untouched",
            fixture_frame(&[], 0, 0x4000, 64, 6, server, &{
                let mut o = vec![4, 0, 1, 1];
                o.extend(mss(1460));
                tcp_with(80, 40000, 0x12, &o)
            }),
        ),
        (
            "syn-ack from the udp service's port: untouched",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                server,
                &tcp_with(53, 40000, 0x12, &mss(1460)),
            ),
        ),
        (
            "syn (no ack) from port 80: untouched",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                server,
                &tcp_with(80, 40000, 0x02, &mss(1460)),
            ),
        ),
        (
            "syn-ack to port 80 (client's port): clamped by nothing, redirected",
            fixture_frame(
                &[],
                0,
                0x4000,
                64,
                6,
                server,
                &tcp_with(40000, 80, 0x12, &mss(1460)),
            ),
        ),
        (
            "syn-ack from an l2-return engine: clamped, then returned",
            with_src_mac(
                fixture_frame(&[], 0, 0x4000, 64, 6, server, &synack),
                ENGINE3_MAC,
            ),
        ),
        (
            "l2 return: from engine 3's mac",
            with_src_mac(plain.clone(), ENGINE3_MAC),
        ),
        (
            "l2-return engine's own connection: not a return",
            with_src_mac(
                fixture_frame(&[], 0, 0, 64, 6, [10, 0, 0, 3], &syn),
                ENGINE3_MAC,
            ),
        ),
        (
            "mac filter hit, no engine: redirected",
            with_src_mac(plain.clone(), [2, 0, 0, 0, 0, 3]),
        ),
        (
            "gre engine's mac: no l2 return",
            with_src_mac(plain.clone(), [2, 0xee, 0, 0, 0, 2]),
        ),
        (
            "redirect list holds the source: redirected",
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 200], &tcp(25, 0x02, 0)),
        ),
        (
            "skip list inside the redirect list: skipped",
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 7], &tcp(25, 0x02, 0)),
        ),
        (
            "neither address in the redirect list: not listed",
            fixture_frame(&[], 0, 0, 64, 6, [203, 0, 113, 5], &tcp(25, 0x02, 0)),
        ),
        (
            "redirect list holds the destination: redirected",
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 7], &tcp(23, 0x02, 0)),
        ),
        (
            "skip list holds the source, redirect list the destination: skipped",
            fixture_frame(&[], 0, 0, 64, 6, [203, 0, 113, 5], &tcp(23, 0x02, 0)),
        ),
        (
            "skip list only, address outside: redirected",
            fixture_frame(&[], 0, 0, 64, 6, [192, 0, 2, 7], &tcp(110, 0x02, 0)),
        ),
        (
            "skip list only, address inside: skipped",
            fixture_frame(&[], 0, 0, 64, 6, [100, 100, 0, 1], &tcp(110, 0x02, 0)),
        ),
    ]
}

fn verdict_name(code: u32) -> &'static str {
    [
        "XDP_ABORTED",
        "XDP_DROP",
        "XDP_PASS",
        "XDP_TX",
        "XDP_REDIRECT",
    ]
    .get(code as usize)
    .copied()
    .unwrap_or("?")
}

/// Fixture file `tests/fixtures/edge-cases.txt`: {input, expected action, expected output}
/// per case, replayed by the model and by the program. `REDIRECTOR_BLESS=1` rewrites it
/// from the model (review the diff).
#[test]
fn fixtures_replay_in_model_and_program() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/edge-cases.txt");
    let table = fixture_config().compile().unwrap_or_else(|e| panic!("{e}"));
    let fresh = || {
        let mut model = Dataplane::default();
        model.control.heartbeat_jiffies = FRESH.0;
        model.control.grace_jiffies = FRESH.1;
        model.install(table.clone());
        model
    };
    if std::env::var_os("REDIRECTOR_BLESS").is_some() {
        let mut model = fresh();
        let mut text = String::from(
            "# Edge cases for xdp_redirect and tc_redirect_out, table: tests/differential.rs\n\
             # fixture_config().\n\
             # Per case: name, the ingress interface's flags when not 0, input frame,\n\
             # expected verdict and reason, expected output. Cases named \"egress: ...\"\n\
             # run the tc egress program (redirect out) on a packet that arrived on the\n\
             # interface with those flags.\n",
        );
        for (name, frame, iface) in fixture_inputs() {
            model.set_iface_flags(TEST_IFINDEX, iface);
            let egress = name.starts_with("egress: ");
            let o = if egress {
                model.process_egress(&frame, TEST_IFINDEX, MODEL_NOW)
            } else {
                model.process(&frame, TEST_IFINDEX, MODEL_NOW)
            };
            let verdict = if egress {
                tc_verdict_name(o.verdict.tc_code())
            } else {
                verdict_name(o.verdict.code())
            };
            let iface = if iface == 0 {
                String::new()
            } else {
                format!("iface {iface}\n")
            };
            text.push_str(&format!(
                "\ncase {name}\n{iface}in {}\naction {} {:?}\nout {}\n",
                hex(&frame),
                verdict,
                o.reason,
                hex(&o.frame)
            ));
        }
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    };
    let mut model = fresh();
    let mut redirector = Redirector::load().unwrap_or_else(|e| panic!("{e}"));
    redirector
        .set_heartbeat(FRESH.0, FRESH.1)
        .unwrap_or_else(|e| panic!("{e}"));
    redirector.install(&table).unwrap_or_else(|e| panic!("{e}"));
    let mut mirror = fresh();
    let mut cases = 0;
    for block in text.split("\ncase ").skip(1) {
        let mut lines = block.lines();
        let name = lines.next().unwrap_or_default();
        let field = |prefix: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{name}: no {prefix}line"))
                .to_owned()
        };
        let input = unhex(&field("in "));
        let action = field("action ");
        let output = unhex(&field("out "));
        let iface: u32 = block
            .lines()
            .find_map(|l| l.strip_prefix("iface "))
            .map_or(0, |f| {
                f.parse().unwrap_or_else(|e| panic!("{name}: iface: {e}"))
            });
        model.set_iface_flags(TEST_IFINDEX, iface);
        mirror.set_iface_flags(TEST_IFINDEX, iface);
        redirector
            .set_iface_flags(TEST_IFINDEX, iface)
            .unwrap_or_else(|e| panic!("{e}"));
        // Egress cases arrived on the test interface and leave by another.
        let egress = name.starts_with("egress: ");
        let (o, verdict) = if egress {
            let o = model.process_egress(&input, TEST_IFINDEX, MODEL_NOW);
            let v = tc_verdict_name(o.verdict.tc_code());
            (o, v)
        } else {
            let o = model.process(&input, TEST_IFINDEX, MODEL_NOW);
            let v = verdict_name(o.verdict.code());
            (o, v)
        };
        assert_eq!(
            format!("{verdict} {:?}", o.reason),
            action,
            "{name}: model action"
        );
        assert_eq!(o.frame, output, "{name}: model output");
        // The program agrees with the model (and so with the file) on every case.
        if egress {
            run_one_egress(&mut redirector, &mut mirror, &input, TEST_IFINDEX, name)
                .unwrap_or_else(|| panic!("{name}: refused by the kernel"));
        } else {
            run_one(&mut redirector, &mut mirror, &input, name);
        }
        cases += 1;
    }
    assert_eq!(
        cases,
        fixture_inputs().len(),
        "fixture file out of date: bless it"
    );
}
