//! Edge cases of the engine program, each a frame run through `BPF_PROG_TEST_RUN` in a
//! namespace of its own (no sockets there but ours): the verdict, the bytes it writes and
//! the counter it bumps. Root only. The namespace tests (`engine_netns.rs`) show the same
//! code on real interfaces; these cover what is awkward to send there: IP options on
//! both headers, TCP options, GRE flags, lengths that lie.

use std::net::Ipv4Addr;

use anyhow::Result;
use aya::programs::{TestRun as _, TestRunOptions};
use netns_tests::netns::Lab;
use redirector_ebpf::engine_plane::{
    Counter, EngineCounters, EnginePlane, EngineSettings, ReturnRule,
};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const ENGINE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// No listener anywhere has this port.
const PROXY_PORT: u16 = 61999;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const SYN: u8 = 0x02;
const PSH_ACK: u8 = 0x18;

use netns_tests::checksum::internet as checksum;

/// An IPv4 header with `options` (a multiple of 4 bytes) for `payload` bytes.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, options: &[u8], payload: usize) -> Vec<u8> {
    let ihl = 20 + options.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[2..4].copy_from_slice(&((ihl + payload) as u16).to_be_bytes());
    ip[8] = 33;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    ip.extend_from_slice(options);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn tcp_checksum(ip: &[u8]) -> u16 {
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let seg = &ip[ihl..usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    checksum(&pseudo)
}

/// The client's packet: IPv4 with `ip_options`, TCP with 12 bytes of options (NOP, NOP,
/// timestamps), `payload`.
fn client(dst: Ipv4Addr, dport: u16, flags: u8, ip_options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = flags;
    tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    tcp.extend_from_slice(payload);
    let mut pkt = ipv4(CLIENT, dst, 6, ip_options, tcp.len());
    let ihl = pkt.len();
    pkt.extend_from_slice(&tcp);
    let sum = tcp_checksum(&pkt);
    pkt[ihl + 16..ihl + 18].copy_from_slice(&sum.to_be_bytes());
    pkt
}

/// Ethernet (to the all-zero MAC of the namespace's `lo`, where test runs arrive) +
/// outer IPv4 with `outer_options` + `gre` (GRE header and redirect header) + `inner`.
fn frame(outer_src: Ipv4Addr, outer_options: &[u8], gre: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ipv4(
        outer_src,
        ENGINE,
        47,
        outer_options,
        gre.len() + inner.len(),
    ));
    f.extend_from_slice(gre);
    f.extend_from_slice(inner);
    f
}

const WCCP_GRE: [u8; 8] = [0, 0, 0x88, 0x3e, 0x01, 90, 0, 7];
/// Router alert, the usual 4-byte option.
const OPTION: [u8; 4] = [0x94, 0x04, 0, 0];

/// Verdict, output bytes, and the counters that moved (name, packets).
type Outcome = (u32, Vec<u8>, Vec<(&'static str, u64)>);

struct Runner {
    plane: EnginePlane,
    before: EngineCounters,
}

impl Runner {
    /// Runs `input`; returns the verdict, the output bytes and the counters that moved.
    fn run(&mut self, input: &[u8]) -> Result<Outcome> {
        let mut out = vec![0u8; input.len() + 256];
        let result = self.plane.program()?.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        out.truncate(result.data_size_out as usize);
        let after = self.plane.counters()?;
        let moved = Counter::ALL
            .iter()
            .map(|c| (c.name(), after.packets(*c) - self.before.packets(*c)))
            .filter(|(_, n)| *n != 0)
            .collect();
        self.before = after;
        Ok((result.return_value, out, moved))
    }
}

#[test]
fn edge_cases_in_test_runs() -> Result<()> {
    let lab = Lab::new("engrun")?;
    let host = lab.host("engine")?;
    let mut plane = EnginePlane::load()?;
    plane.configure(&EngineSettings {
        addr: Some(ENGINE),
        ..EngineSettings::default()
    })?;
    plane.add_router(ROUTER)?;
    plane.set_service_port(80, PROXY_PORT)?;
    plane.add_rule(&ReturnRule {
        port: Some(80),
        rewrite_dst: Some(Ipv4Addr::new(10, 9, 0, 200)),
        ..ReturnRule::returning(Ipv4Addr::new(10, 9, 5, 0), 24)
    })?;
    let before = plane.counters()?;
    let mut r = Runner { plane, before };

    host.in_ns(|| -> Result<()> {
        // Options everywhere: a segment without a socket is returned with the outer
        // addresses swapped, a fresh TTL, a valid checksum, the rest byte for byte.
        let inner = client(SERVER, 80, PSH_ACK, &OPTION, b"data");
        let input = frame(ROUTER, &OPTION, &WCCP_GRE, &inner);
        let (verdict, out, moved) = r.run(&input)?;
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(moved, [("return_no_socket", 1)]);
        assert_eq!(out.len(), input.len());
        assert_eq!(out[..6], input[6..12], "MACs swapped");
        assert_eq!(out[6..12], input[..6]);
        assert_eq!(out[14 + 12..14 + 16], ENGINE.octets());
        assert_eq!(out[14 + 16..14 + 20], ROUTER.octets());
        assert_eq!(out[14 + 8], 64, "TTL");
        assert_eq!(
            checksum(&out[14..14 + 24]),
            0,
            "outer checksum over 24 bytes"
        );
        assert_eq!(
            out[14 + 24..],
            input[14 + 24..],
            "GRE, redirect header, inner"
        );

        // The rewrite rule finds the inner addresses behind both sets of options.
        let inner = client(Ipv4Addr::new(10, 9, 5, 9), 80, SYN, &OPTION, b"");
        let input = frame(ROUTER, &OPTION, &WCCP_GRE, &inner);
        let (verdict, out, moved) = r.run(&input)?;
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(moved, [("return_rule", 1), ("rewritten", 1)]);
        let got = &out[14 + 24 + 8..];
        assert_eq!(got[16..20], [10, 9, 0, 200]);
        assert_eq!(checksum(&got[..24]), 0, "inner IP checksum");
        assert_eq!(tcp_checksum(got), 0, "TCP checksum");

        // A SYN with no listener on the proxy port goes back rather than into a void.
        let inner = client(SERVER, 80, SYN, &[], b"");
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &inner))?;
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(moved, [("return_no_listener", 1)]);

        // Not a service port, not TCP, a fragment: returned as not served.
        let inner = client(SERVER, 443, SYN, &[], b"");
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &inner))?;
        assert_eq!(
            (verdict, moved),
            (TC_ACT_REDIRECT, vec![("return_not_served", 1)])
        );
        let mut udp = ipv4(CLIENT, SERVER, 17, &[], 8);
        udp.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &udp))?;
        assert_eq!(
            (verdict, moved),
            (TC_ACT_REDIRECT, vec![("return_not_served", 1)])
        );
        let mut fragment = client(SERVER, 80, PSH_ACK, &[], b"x");
        fragment[6] = 0x20; // MF
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &fragment))?;
        assert_eq!(
            (verdict, moved),
            (TC_ACT_REDIRECT, vec![("return_not_served", 1)])
        );

        // Headers that cannot be trusted are dropped.
        let inner = client(SERVER, 80, PSH_ACK, &[], b"");
        let mut checksummed = WCCP_GRE;
        checksummed[0] = 0x80;
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &checksummed, &inner))?;
        assert_eq!((verdict, moved), (TC_ACT_SHOT, vec![("bad_header", 1)]));
        let mut long = inner.clone();
        long[2..4].copy_from_slice(&500u16.to_be_bytes());
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &long))?;
        assert_eq!((verdict, moved), (TC_ACT_SHOT, vec![("bad_inner", 1)]));
        let mut short_doff = inner.clone();
        short_doff[20 + 12] = 4 << 4;
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &short_doff))?;
        assert_eq!((verdict, moved), (TC_ACT_SHOT, vec![("bad_inner", 1)]));

        // Not ours: passed untouched. GRE of another protocol, WCCP GRE to another
        // address, plain TCP (L2 forwarding is off), ARP.
        let mut other_gre = WCCP_GRE;
        other_gre[2..4].copy_from_slice(&[0x08, 0x00]);
        let input = frame(ROUTER, &[], &other_gre, &inner);
        let (verdict, out, moved) = r.run(&input)?;
        assert_eq!((verdict, moved), (TC_ACT_OK, vec![("not_redirected", 1)]));
        assert_eq!(out, input);
        let mut elsewhere = frame(ROUTER, &[], &WCCP_GRE, &inner);
        elsewhere[14 + 16..14 + 20].copy_from_slice(&[10, 2, 0, 3]);
        let (verdict, _, moved) = r.run(&elsewhere)?;
        assert_eq!((verdict, moved), (TC_ACT_OK, vec![("not_redirected", 1)]));
        let mut plain = input[..14].to_vec();
        plain.extend_from_slice(&inner);
        let (verdict, _, moved) = r.run(&plain)?;
        assert_eq!((verdict, moved), (TC_ACT_OK, vec![("not_redirected", 1)]));
        let mut arp = input[..12].to_vec();
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        let (verdict, _, moved) = r.run(&arp)?;
        assert_eq!((verdict, moved), (TC_ACT_OK, vec![("not_ipv4", 1)]));
        Ok(())
    })??;

    // Disabled: everything passes.
    r.plane.set_enabled(false)?;
    host.in_ns(|| -> Result<()> {
        let inner = client(SERVER, 80, PSH_ACK, &[], b"");
        let (verdict, _, moved) = r.run(&frame(ROUTER, &[], &WCCP_GRE, &inner))?;
        assert_eq!((verdict, moved), (TC_ACT_OK, vec![("disabled", 1)]));
        Ok(())
    })??;
    lab.teardown()
}
