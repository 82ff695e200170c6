//! The bench-only builds that `cargo xtask bench dataplane` times: they must take the
//! redirect path on every repetition of a test run and leave the frame as it came, or
//! their figures would time some other path. `redirect_bench` is the redirect program
//! with an undo at the end; `redirect_floor` is that with classification replaced by a
//! fixed decision (bucket 0 of the best service), whose output is still a correct GRE
//! encapsulation to that bucket's engine.

use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions};
use redirector_ebpf::{
    layout::{STATS_ENGINE_BASE, STATS_ENGINE_REDIRECTED},
    model::Reason,
    table::{Assignment, EngineConfig, Method, Protocol, ServiceConfig, Slot, TableConfig},
    Redirector,
};

const XDP_TX: u32 = 3;
const REPEAT: u32 = 7;
const ENGINE_MAC: [u8; 6] = [2, 0xee, 0, 0, 0, 2];

/// One TCP service on port 80 hashed by source address, bucket b on engine b % 2.
fn config() -> TableConfig {
    let buckets = (0..256)
        .map(|b| Slot {
            engine: Some((b % 2) as u8),
            ..Slot::default()
        })
        .collect();
    let engine = |i: u8| EngineConfig {
        addr: Ipv4Addr::new(10, 2, 0, 2 + i),
        router_addr: Ipv4Addr::new(10, 2, 0, 1),
        dst_mac: ENGINE_MAC,
        src_mac: [2, 0xaa, 0, 0, 0, 1],
        ifindex: 0,
        mtu: 1500,
        method: Method::Gre,
        usable: true,
        ..EngineConfig::default()
    };
    TableConfig {
        services: vec![ServiceConfig {
            id: 90,
            dynamic: true,
            protocol: Protocol::Tcp,
            priority: 1,
            flags: wccp::assign::flags::SRC_IP_HASH | wccp::assign::flags::PORTS_DEFINED,
            ports: vec![80],
            assignment: Assignment::Hash(buckets),
            ..ServiceConfig::default()
        }],
        engines: vec![engine(0), engine(1)],
        ..TableConfig::default()
    }
}

/// A 64-byte TCP ACK to port 80 from `src` (IP checksum left zero: nobody checks it).
fn frame(src: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&[10, 9, 0, 1]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    f
}

fn load(object: &str) -> Redirector {
    let mut r = Redirector::load_object(object).unwrap_or_else(|e| panic!("{object}: {e}"));
    r.heartbeat(Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("{e}"));
    r.install(&config().compile().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    r
}

/// Runs `frame` `repeat` times; returns the output frame and how many runs the program
/// counted as GRE redirects.
fn run(r: &mut Redirector, frame: &[u8], repeat: u32) -> (Vec<u8>, u64) {
    let before = r.stats().unwrap_or_else(|e| panic!("{e}"))[Reason::RedirectGre as usize].packets;
    let mut out = vec![0u8; frame.len() + 64];
    let result = r
        .program()
        .unwrap_or_else(|e| panic!("{e}"))
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    assert_eq!(result.return_value, XDP_TX, "verdict");
    out.truncate(result.data_size_out as usize);
    let after = r.stats().unwrap_or_else(|e| panic!("{e}"))[Reason::RedirectGre as usize].packets;
    (out, after - before)
}

#[test]
fn bench_build_redirects_every_repetition_and_restores_the_frame() {
    let mut real = load("redirect");
    let mut bench = load("redirect_bench");
    for src in [Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 7, 200)] {
        let input = frame(src);
        // The real program's single run encapsulates (28 bytes more, GRE to the engine).
        let (gre, redirected) = run(&mut real, &input, 1);
        assert_eq!(redirected, 1);
        assert_eq!(gre.len(), input.len() + 28);
        assert_eq!(&gre[..6], &ENGINE_MAC);
        assert_eq!(&gre[42..], &input[14..], "inner packet");
        // The bench build does the same on every repetition and undoes it.
        let (out, redirected) = run(&mut bench, &input, REPEAT);
        assert_eq!(redirected, u64::from(REPEAT), "every repetition redirected");
        assert_eq!(out, input, "frame put back as it came");
    }
}

#[test]
fn floor_build_redirects_to_bucket_zero_without_classifying() {
    let mut real = load("redirect");
    let mut floor = load("redirect_floor");
    // The engine the real program picks for a source: the outer destination address.
    let on_engine = |real: &mut Redirector, src: Ipv4Addr| {
        let (gre, _) = run(real, &frame(src), 1);
        Ipv4Addr::new(gre[30], gre[31], gre[32], gre[33])
    };
    let sources: Vec<Ipv4Addr> = (0..8).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    let destinations: Vec<Ipv4Addr> = sources.iter().map(|&s| on_engine(&mut real, s)).collect();
    assert!(
        destinations.iter().any(|d| *d != destinations[0]),
        "the real program spreads these sources over both engines: {destinations:?}"
    );
    for src in sources {
        let input = frame(src);
        let (out, redirected) = run(&mut floor, &input, REPEAT);
        assert_eq!(redirected, u64::from(REPEAT), "every repetition redirected");
        assert_eq!(out, input, "frame put back as it came");
    }
    // Bucket 0 is engine 0's: every run of the floor build counts for it, whatever the
    // source.
    let stats = floor.stats().unwrap_or_else(|e| panic!("{e}"));
    let engine0 = STATS_ENGINE_BASE + STATS_ENGINE_REDIRECTED;
    assert_eq!(
        stats[engine0].packets,
        u64::from(REPEAT) * 8,
        "the floor build sends everything to bucket 0's engine, whatever the packet"
    );
}
