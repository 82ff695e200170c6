//! Squid as the engine: each captured Squid Here-I-Am (tests/fixtures/squid/<variant>) is fed
//! to a router configured like the capture's; the router must answer with an I-See-You
//! that tshark decodes cleanly, addressed to Squid, signed with the variant's password, and
//! advertising every method it supports (GRE|L2, hash|mask, GRE|L2): Squid leaves a router
//! for good when the advertisement lacks its configured method (ground-notes).
//!
//! tshark is required (scripts/setup.sh installs it).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netns_tests::pcap::{Datagram, Payload};
use serde_json::Value;
use wccp::proto::ServiceId;
use wccp::router::{Action, Router, RouterConfig, ServiceConfig};
use wccp::time::Instant;
use wccp::wire::{md5_verify, Capability, Message, MessageType};

/// UDP payloads of a classic little-endian Ethernet pcap (the fixtures' format).
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let udp = &ip[ihl..];
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push(udp[8..len].to_vec());
    }
    out
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/squid");
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("here-i-am.pcap").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn squid_here_i_am_gets_a_clean_i_see_you() {
    let dirs = fixtures();
    assert!(!dirs.is_empty(), "no Squid fixtures");
    let mut frames = Vec::new();
    let mut names = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected: Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let engine: Ipv4Addr = expected["engine_ip"].as_str().unwrap().parse().unwrap();
        let router_ip: Ipv4Addr = expected["router_ip"].as_str().unwrap().parse().unwrap();
        let password = expected["security"]["password"]
            .as_str()
            .map(|p| p.as_bytes().to_vec());
        let payloads = udp_payloads(&std::fs::read(dir.join("here-i-am.pcap")).unwrap());
        let hia = Message::parse(&payloads[0]).unwrap();
        let id = ServiceId::of(hia.service().unwrap());
        let mut svc = ServiceConfig::new(id, None);
        svc.password = password.clone();
        let mut router = Router::new(RouterConfig {
            router_id: router_ip,
            services: vec![svc],
            jitter_seed: 1,
        });
        let actions = router.handle_message(engine, &payloads[0], Instant::from_secs(1));
        let sends: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(sends.len(), 1, "{name}: {actions:#?}");
        let isy = sends[0];
        assert_eq!(isy.to, engine, "{name}");
        assert_eq!(isy.message.message_type, MessageType::ISeeYou);
        if let Some(p) = &password {
            md5_verify(&isy.bytes, p).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let caps = isy.message.capabilities().unwrap();
        assert!(
            caps.capabilities
                .iter()
                .all(|c| !matches!(c, Capability::TransmitT(_) | Capability::TimerScale(_))),
            "{name}: Squid offered no timers, none are sent back"
        );
        frames.push(
            Datagram {
                src: router_ip,
                dst: engine,
                payload: Payload::WccpUdp(isy.bytes.clone()),
            }
            .frame()
            .unwrap(),
        );
        names.push(name);
    }
    let decoded = netns_tests::tshark::decode_frames(&frames).unwrap();
    assert_eq!(decoded.len(), frames.len());
    for (f, name) in decoded.iter().zip(&names) {
        f.assert_clean(&[]);
        assert_eq!(f.one("wccp.message"), "11", "{name}");
        assert_eq!(
            f.one("wccp.router_identity.router_ip.ipv4"),
            "10.250.0.1",
            "{name}"
        );
        assert_eq!(
            f.one("wccp.router_identity.received_from_ip.ipv4"),
            "10.250.0.2",
            "{name}"
        );
        assert_eq!(f.one("wccp.router_identity.receive_id"), "1", "{name}");
        for flag in [
            "wccp.capability_info.forwarding_method_flag.gre",
            "wccp.capability_info.forwarding_method_flag.l2",
            "wccp.capability_info.assignment_method_flag.hash",
            "wccp.capability_info.assignment_method_flag.mask",
            "wccp.capability_info.return_method_flag.l2",
        ] {
            assert_eq!(f.one(flag), "1", "{name}: {flag}");
        }
    }
}
