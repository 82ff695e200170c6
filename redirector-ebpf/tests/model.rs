//! The model against independent references: `wccp::assign` for the draft's hash and
//! mask values, `wccp::wire::decapsulate` for the GRE it writes, checksums computed here
//! for what it rewrites (MSS clamp, ICMP). No kernel needed.

use netns_tests::rng::Rng;
use std::net::Ipv4Addr;

use redirector_ebpf::{
    layout::{
        IFACE_ENGINE_FACING, IFACE_EXCLUDED, PREFIX_REDIRECT, PREFIX_SKIP, SERVICE_LISTS,
        SERVICE_REDIRECT_LIST, STATS_ENGINE_BASE, STATS_ENGINE_RETURNED, STATS_MSS_CLAMPED,
        STATS_PER_SERVICE, STATS_SERVICE_BASE, STATS_SERVICE_SKIPPED,
    },
    model::{fold, hash_key, mask_index, Dataplane, Reason, Verdict},
    table::{
        mask_positions, Assignment, EngineConfig, Method, MssClamp, Prefix, Protocol,
        ServiceConfig, Slot, TableConfig, TableError,
    },
};
use wccp::{
    assign::{bucket_of, flags, Flow, Mask},
    wire::{decapsulate, RedirectLayout},
};

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

/// The Internet checksum of `bytes`, written out here so that the model's own helpers
/// are not checked against themselves.
fn internet_sum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |&b| u32::from(b));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP segment's checksum over the pseudo-header, as the receiver checks it (0 when
/// right).
fn tcp_verify(ip: &[u8]) -> u16 {
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = &ip[ihl..tot];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    internet_sum(&pseudo)
}

/// A SYN-ACK from `sport` with `options`, IP and TCP checksums right.
fn synack(src: [u8; 4], sport: u16, options: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    let len = 20 + 20 + options.len();
    let mut ip = vec![
        0x45, 0, 0, len as u8, 0, 1, 0x40, 0, 64, 6, 0, 0, src[0], src[1], src[2], src[3], 192, 0,
        2, 7,
    ];
    let c = internet_sum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    tcp[12] = (((20 + options.len()) / 4) as u8) << 4;
    tcp[13] = 0x12;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(options);
    ip.extend(tcp);
    let c = tcp_verify(&ip);
    let ihl = 20;
    ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    assert_eq!(tcp_verify(&ip), 0);
    f.extend(ip);
    f
}

fn fresh(config: &TableConfig) -> Dataplane {
    let mut dp = Dataplane::default();
    dp.control.heartbeat_jiffies = u64::MAX / 2;
    dp.install(config.compile().expect("valid"));
    dp
}

#[test]
fn mss_clamp_lowers_synacks_of_gre_services_and_keeps_the_checksum_right() {
    let mut config = one_service_config(Method::Gre);
    config.engines[0].mtu = 1400;
    let table = config.compile().expect("valid");
    assert_eq!(
        table.header.mss_clamp,
        1400 - 40 - 28,
        "auto: engine MTU - 68"
    );
    let mut dp = fresh(&config);
    let server = [198, 51, 100, 1];
    // MSS first (even offset), after a NOP (odd offset), after timestamps.
    for (options, mss_at) in [
        (vec![2, 4, 0x05, 0xb4, 1, 3, 3, 7], 0),
        (vec![1, 2, 4, 0x05, 0xb4, 1, 1, 0], 1),
        (
            vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 2, 4, 0x23, 0x28],
            12,
        ),
    ] {
        let at = 14 + 20 + 20 + mss_at + 2;
        for iface_flags in [0, IFACE_ENGINE_FACING] {
            dp.set_iface_flags(1, iface_flags);
            let frame = synack(server, 443, &options);
            let before = dp.stats[STATS_MSS_CLAMPED].packets;
            let out = dp.process(&frame, 1, 0);
            assert_eq!(out.verdict, Verdict::Pass);
            let mss = u16::from_be_bytes([out.frame[at], out.frame[at + 1]]);
            assert_eq!(mss, 1332, "{options:?} iface {iface_flags}");
            assert_eq!(tcp_verify(&out.frame[14..]), 0, "checksum after clamping");
            assert_eq!(dp.stats[STATS_MSS_CLAMPED].packets, before + 1);
            // Only the MSS and the checksum changed.
            let changed: Vec<usize> = (0..frame.len())
                .filter(|&i| frame[i] != out.frame[i])
                .collect();
            assert!(changed
                .iter()
                .all(|&i| i == at || i == at + 1 || i == 50 || i == 51));
        }
    }
    dp.set_iface_flags(1, 0);
    // Untouched: a smaller MSS, a port the service does not serve, a SYN, no clamp.
    let small = synack(server, 443, &[2, 4, 0x02, 0x18]);
    assert_eq!(dp.process(&small, 1, 0).frame, small);
    let other = synack(server, 8080, &[2, 4, 0x05, 0xb4]);
    assert_eq!(dp.process(&other, 1, 0).frame, other);
    let mut syn = synack(server, 443, &[2, 4, 0x05, 0xb4]);
    syn[14 + 20 + 13] = 0x02;
    assert_eq!(dp.process(&syn, 1, 0).frame, syn);
    config.mss_clamp = MssClamp::Off;
    let frame = synack(server, 443, &[2, 4, 0x05, 0xb4]);
    assert_eq!(fresh(&config).process(&frame, 1, 0).frame, frame);
    config.mss_clamp = MssClamp::Fixed(1000);
    let out = fresh(&config).process(&frame, 1, 0);
    assert_eq!(&out.frame[56..58], &1000u16.to_be_bytes());
    // An L2 service is not clamped: its packets do not grow.
    let l2 = one_service_config(Method::L2);
    assert_eq!(l2.compile().expect("valid").header.mss_clamp, 0);
    assert_eq!(fresh(&l2).process(&frame, 1, 0).frame, frame);
    // On an excluded interface nothing is touched.
    let mut dp = fresh(&one_service_config(Method::Gre));
    dp.set_iface_flags(1, IFACE_EXCLUDED);
    assert_eq!(dp.process(&frame, 1, 0).frame, frame);
}

#[test]
fn df_packets_too_big_for_gre_get_icmp_fragmentation_needed() {
    let mut config = one_service_config(Method::Gre);
    config.engines[0].mtu = 1000;
    let mut dp = fresh(&config);
    let mut frame = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 80);
    frame[14 + 20 + 13] = 0x10; // ACK
    frame.extend(vec![0xab; 1000 - 40]);
    let tot = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&tot.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = internet_sum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());

    let out = dp.process(&frame, 1, 0);
    assert_eq!((out.verdict, out.reason), (Verdict::Tx, Reason::TooBigDf));
    let o = &out.frame;
    assert_eq!(&o[0..6], &frame[6..12], "back to the sender's MAC");
    assert_eq!(&o[6..12], &frame[0..6]);
    assert_eq!(&o[12..14], &[0x08, 0x00]);
    let ip = &o[14..34];
    assert_eq!(internet_sum(ip), 0, "IP checksum");
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &[10, 0, 0, 1], "from the router's address");
    assert_eq!(&ip[16..20], &[192, 0, 2, 7], "to the sender");
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        o.len() - 14
    );
    let icmp = &o[34..];
    assert_eq!(internet_sum(icmp), 0, "ICMP checksum");
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1000 - 28);
    assert_eq!(
        &icmp[8..],
        &frame[14..14 + 28],
        "IP header + 8 bytes quoted"
    );
    assert_eq!(dp.conns.len(), 0, "nothing remembered");

    // Without DF: forwarded as it came.
    frame[20] = 0;
    let out = dp.process(&frame, 1, 0);
    assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::TooBig));
    assert_eq!(out.frame, frame);
}

#[test]
fn redirect_and_skip_lists_decide_on_source_or_destination() {
    let p = |s: &str| -> Prefix { s.parse().expect("prefix") };
    assert_eq!(p("10.1.2.3"), Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 32));
    assert!("10.0.0.0/33".parse::<Prefix>().is_err());
    assert!("10.0.0/8".parse::<Prefix>().is_err());
    assert!(p("10.9.9.9/8").contains(Ipv4Addr::new(10, 200, 0, 1)));
    assert!(p("0.0.0.0/0").contains(Ipv4Addr::new(203, 0, 113, 1)));

    let mut config = one_service_config(Method::Gre);
    config.services[0].redirect_list = vec![p("10.0.0.0/8"), p("198.51.100.0/24")];
    config.services[0].skip_list = vec![p("10.1.0.0/16"), p("10.1.2.0/24")];
    let table = config.compile().expect("valid");
    // Each prefix carries the kinds of the listed prefixes around it.
    let kinds = |a: [u8; 4]| table.prefix_kinds(0, u32::from(Ipv4Addr::from(a)));
    assert_eq!(kinds([10, 9, 0, 1]), PREFIX_REDIRECT);
    assert_eq!(kinds([10, 1, 7, 1]), PREFIX_REDIRECT | PREFIX_SKIP);
    assert_eq!(kinds([10, 1, 2, 1]), PREFIX_REDIRECT | PREFIX_SKIP);
    assert_eq!(kinds([192, 0, 2, 1]), 0);
    assert_eq!(table.prefixes.len(), 4);

    let mut dp = fresh(&config);
    let cases = [
        ([10, 9, 0, 1], [203, 0, 113, 1], Reason::RedirectGre), // source listed
        ([192, 0, 2, 1], [198, 51, 100, 1], Reason::RedirectGre), // destination listed
        ([192, 0, 2, 1], [203, 0, 113, 1], Reason::NotListed),
        ([10, 1, 7, 1], [198, 51, 100, 1], Reason::ListSkip), // skip wins
        ([192, 0, 2, 1], [10, 1, 2, 3], Reason::ListSkip),    // on either side
    ];
    for (src, dst, reason) in cases {
        let out = dp.process(&tcp_syn(src, dst, 80), 1, 0);
        assert_eq!(out.reason, reason, "{src:?} -> {dst:?}");
    }
    let skipped = STATS_SERVICE_BASE + 90 * STATS_PER_SERVICE + STATS_SERVICE_SKIPPED;
    assert_eq!(dp.stats[skipped].packets, 3);

    // A skip list alone redirects everything else.
    config.services[0].redirect_list.clear();
    let mut dp = fresh(&config);
    let out = dp.process(&tcp_syn([192, 0, 2, 1], [203, 0, 113, 1], 80), 1, 0);
    assert_eq!(out.reason, Reason::RedirectGre);
    let out = dp.process(&tcp_syn([10, 1, 0, 1], [203, 0, 113, 1], 80), 1, 0);
    assert_eq!(out.reason, Reason::ListSkip);

    // Services without lists pay no lookup (no option bit).
    let plain = one_service_config(Method::Gre).compile().expect("valid");
    assert_eq!(
        plain.services[0].options & (SERVICE_LISTS | SERVICE_REDIRECT_LIST),
        0
    );
    assert!(plain.prefixes.is_empty());
    config.services[0].skip_list = vec![Prefix::new(Ipv4Addr::UNSPECIFIED, 40)];
    assert!(matches!(
        config.compile(),
        Err(TableError::BadPrefix(90, _))
    ));
}

#[test]
fn l2_return_by_engine_mac_is_forwarded_and_counted() {
    let mut config = one_service_config(Method::L2);
    config.engines[0].return_method = Method::L2;
    let engine_mac = config.engines[0].dst_mac;
    let returned = STATS_ENGINE_BASE + STATS_ENGINE_RETURNED;
    for iface_flags in [0, IFACE_ENGINE_FACING] {
        let mut dp = fresh(&config);
        dp.set_iface_flags(1, iface_flags);
        let mut frame = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 80);
        frame[6..12].copy_from_slice(&engine_mac);
        let out = dp.process(&frame, 1, 0);
        assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::ReturnL2));
        assert_eq!(out.frame, frame);
        assert_eq!(dp.stats[returned].packets, 1);
        assert!(dp.conns.is_empty(), "never redirected again");
    }
    let mut dp = fresh(&config);
    // The engine's own connection is not a return.
    let mut own = tcp_syn([10, 0, 0, 2], [198, 51, 100, 1], 80);
    own[6..12].copy_from_slice(&engine_mac);
    assert_eq!(dp.process(&own, 1, 0).reason, Reason::EngineSource);
    // A MAC that shares the engine's last two bytes passes the filter, not the lookup.
    let mut near = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 80);
    near[6..12].copy_from_slice(&[2, 9, 9, 9, 0, 2]);
    assert_eq!(dp.process(&near, 1, 0).reason, Reason::RedirectL2);
    // An engine that returns in GRE is not recognised by MAC.
    let gre_return = one_service_config(Method::L2);
    let mut dp = fresh(&gre_return);
    let mut frame = tcp_syn([192, 0, 2, 7], [198, 51, 100, 1], 80);
    frame[6..12].copy_from_slice(&engine_mac);
    assert_eq!(dp.process(&frame, 1, 0).reason, Reason::RedirectL2);
}

#[test]
fn table_compiler_refuses_what_the_data_plane_cannot_do() {
    let mut config = one_service_config(Method::Gre);
    config.engines[0].mtu = 95;
    assert_eq!(
        config.compile(),
        Err(TableError::EngineMtu(Ipv4Addr::new(10, 0, 0, 2), 95))
    );
    config.engines[0].mtu = 96;
    assert!(config.compile().is_ok());
    for bad in [0, 4095] {
        config.engines[0].vlan = Some(bad);
        assert_eq!(
            config.compile(),
            Err(TableError::EngineVlan(Ipv4Addr::new(10, 0, 0, 2), bad))
        );
    }
    config.engines[0].vlan = Some(4094);
    assert!(config.compile().is_ok());
    config.engines[0].vlan = None;
    let mut twin = config.engines[0];
    twin.addr = Ipv4Addr::new(10, 0, 0, 3);
    config.engines.push(twin);
    config.engines[0].return_method = Method::L2;
    config.engines[1].return_method = Method::L2;
    assert!(matches!(
        config.compile(),
        Err(TableError::DuplicateEngineMac(..))
    ));
    // Auto clamp: the smallest GRE engine MTU, 1500 when unset.
    let mut config = one_service_config(Method::Gre);
    config.engines[0].mtu = 0;
    assert_eq!(config.compile().expect("valid").header.mss_clamp, 1432);
}
