//! The model against independent references: `wccp::assign` for the draft's hash and
//! mask values, `wccp::wire::decapsulate` for the GRE it writes. No kernel needed.

use std::net::Ipv4Addr;

use redirector_ebpf::{
    model::{fold, hash_key, mask_index, Dataplane, Reason, Verdict},
    table::{
        mask_positions, Assignment, EngineConfig, Method, Protocol, ServiceConfig, Slot,
        TableConfig,
    },
};
use wccp::{
    assign::{bucket_of, flags, Flow, Mask},
    wire::{decapsulate, RedirectLayout},
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn hash_matches_wccp_assign_primary_and_alternate() {
    let mut rng = Rng(7);
    for _ in 0..100_000 {
        let f = rng.next() as u32 & 0x0f3f;
        let (s, d) = (rng.next() as u32, rng.next() as u32);
        let (sp, dp) = (rng.next() as u16, rng.next() as u16);
        let (si, di) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
        assert_eq!(
            fold(hash_key(f, s, d, sp, dp)),
            bucket_of(f, si, di, sp, dp, false)
        );
        assert_eq!(
            fold(hash_key(f >> 8, s, d, sp, dp)),
            bucket_of(f, si, di, sp, dp, true)
        );
    }
    // The draft's arithmetic on a known vector: 0x0A010203 folds to 0x0A.
    assert_eq!(fold(0x0A01_0203), 0x0A);
    assert_eq!(
        fold(hash_key(
            flags::DST_IP_HASH,
            0,
            u32::from(Ipv4Addr::new(10, 1, 2, 3)),
            0,
            0
        )),
        0x0A
    );
}

#[test]
fn mask_index_matches_wccp_assign() {
    let mut rng = Rng(11);
    for _ in 0..20_000 {
        let mut m = [0u32; 4];
        for _ in 0..(rng.next() % 8) {
            let field = (rng.next() % 4) as usize;
            let width = if field < 2 { 32 } else { 16 };
            m[field] |= 1 << (rng.next() % width);
        }
        let mask = Mask::new(m[0], m[1], m[2] as u16, m[3] as u16).expect("<= 7 bits");
        let pos = mask_positions(&mask);
        let (s, d) = (rng.next() as u32, rng.next() as u32);
        let (sp, dp) = (rng.next() as u16, rng.next() as u16);
        let flow = Flow::new(Ipv4Addr::from(s), Ipv4Addr::from(d), sp, dp);
        assert_eq!(
            mask_index(&pos, s, d, sp, dp) as usize,
            mask.index_of(&flow)
        );
    }
    // Squid's mask: 0x1741 on the source address.
    let squid = Mask::new(0x1741, 0, 0, 0).expect("6 bits");
    assert_eq!(mask_positions(&squid), [64, 70, 72, 73, 74, 76, 0xff, 0xff]);
}

fn one_service_config(method: Method) -> TableConfig {
    TableConfig {
        services: vec![ServiceConfig {
            id: 90,
            dynamic: true,
            protocol: Protocol::Tcp,
            priority: 0,
            flags: flags::SRC_IP_HASH | flags::PORTS_DEFINED,
            ports: vec![80, 443],
            assignment: Assignment::Hash(vec![
                Slot {
                    engine: Some(0),
                    ..Slot::default()
                };
                256
            ]),
            ..ServiceConfig::default()
        }],
        engines: vec![EngineConfig {
            addr: Ipv4Addr::new(10, 0, 0, 2),
            router_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            ifindex: 0,
            mtu: 1500,
            method,
            usable: true,
            ..EngineConfig::default()
        }],
        ..TableConfig::default()
    }
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, src[0], src[1], src[2], src[3], dst[0], dst[1],
        dst[2], dst[3],
    ];
    let c = redirector_ebpf::model::ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    f.extend(tcp);
    f
}

#[test]
fn gre_output_decapsulates_to_the_original_packet() {
    let mut dp = Dataplane::default();
    dp.control.heartbeat_jiffies = u64::MAX / 2;
    dp.install(one_service_config(Method::Gre).compile().expect("valid"));
    let frame = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 443);
    let out = dp.process(&frame, 1, 0);
    assert_eq!(
        (out.verdict, out.reason),
        (Verdict::Tx, Reason::RedirectGre)
    );
    assert_eq!(&out.frame[..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    assert_eq!(out.frame.len(), frame.len() + 28);
    let outer = &out.frame[14..34];
    assert_eq!(
        redirector_ebpf::model::ipv4_checksum(outer),
        0,
        "outer checksum"
    );
    assert_eq!(outer[9], 47);
    let d = decapsulate(&out.frame[34..], RedirectLayout::Wireshark).expect("WCCP GRE");
    let rh = d.redirect.expect("redirect header");
    assert!(rh.dynamic && !rh.alt_bucket_used);
    assert_eq!(rh.service_id, 90);
    assert_eq!(
        rh.primary_bucket,
        bucket_of(
            flags::SRC_IP_HASH,
            Ipv4Addr::new(192, 0, 2, 7),
            Ipv4Addr::new(198, 51, 100, 1),
            40000,
            443,
            false
        )
    );
    assert_eq!(d.inner, &frame[14..]);
    // The first nibble is not 4, so Linux's GRE receive path skips the header.
    assert_ne!(out.frame[38] >> 4, 4);
    // The SYN was remembered.
    assert_eq!(dp.conns.len(), 1);

    // The engine returns it: decapsulated back to the original packet.
    let mut ret = frame[..14].to_vec();
    ret.extend_from_slice(&out.frame[14..]);
    ret[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 2]);
    let back = dp.process(&ret, 1, 0);
    assert_eq!(
        (back.verdict, back.reason),
        (Verdict::Pass, Reason::ReturnGre)
    );
    assert_eq!(back.frame, frame);
}

#[test]
fn fails_open_without_engine_heartbeat_or_service() {
    let mut dp = Dataplane::default();
    let frame = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 80);
    assert_eq!(dp.process(&frame, 1, 0).reason, Reason::Disabled);
    dp.control.heartbeat_jiffies = 100;
    dp.control.grace_jiffies = 10;
    dp.install(one_service_config(Method::L2).compile().expect("valid"));
    let stale = dp.process(&frame, 1, 111);
    assert_eq!(
        (stale.verdict, stale.reason),
        (Verdict::Pass, Reason::Heartbeat)
    );
    assert_eq!(stale.frame, frame);
    let fresh = dp.process(&frame, 1, 110);
    assert_eq!(
        (fresh.verdict, fresh.reason),
        (Verdict::Tx, Reason::RedirectL2)
    );
    assert_eq!(&fresh.frame[12..], &frame[12..]);
    let other_port = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 8080);
    assert_eq!(dp.process(&other_port, 1, 0).reason, Reason::NoService);
    let mut down = one_service_config(Method::Gre);
    down.engines[0].usable = false;
    dp.install(down.compile().expect("valid"));
    assert_eq!(dp.process(&frame, 1, 0).reason, Reason::EngineDown);
    let from_engine = tcp_syn([10, 0, 0, 2], [198, 51, 100, 1], 80);
    assert_eq!(dp.process(&from_engine, 1, 0).reason, Reason::EngineSource);
}
