//! Real Here-I-Am messages from Squid (captured by scripts/capture-squid-fixtures.sh into
//! wccp/tests/fixtures/squid/<variant>/) must parse, re-emit byte for byte, carry the values
//! the variant's expected.json states, and (for the MD5 variant) verify with its password.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wccp::wire::*;

/// UDP payloads of a classic little-endian Ethernet pcap.
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    assert!(pcap.len() >= 24, "pcap header");
    assert_eq!(
        &pcap[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "classic little-endian pcap"
    );
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[ihl..total];
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push(udp[8..len].to_vec());
    }
    out
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/squid");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("here-i-am.pcap").exists() && p.join("expected.json").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn squid_here_i_am_messages() {
    let dirs = fixtures();
    if dirs.is_empty() {
        eprintln!("no Squid fixtures under tests/fixtures/squid: nothing to check");
        return;
    }
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected: Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let payloads = udp_payloads(&std::fs::read(dir.join("here-i-am.pcap")).unwrap());
        assert!(!payloads.is_empty(), "{name}: no UDP payloads");
        for bytes in payloads {
            let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                m.to_bytes().unwrap(),
                bytes,
                "{name}: re-emitted bytes differ"
            );
            m.check_components().unwrap();
            m.check_addresses().unwrap();
            assert_eq!(m.message_type, MessageType::HereIAm);
            assert_eq!(m.version, Version::V2);
            assert_eq!(m.unknown_kinds().count(), 0);
            assert_eq!(
                bytes.len() - HEADER_LEN,
                expected["message_length"].as_u64().unwrap() as usize
            );

            let svc = m.service().unwrap();
            let e = &expected["service"];
            assert_eq!(
                u64::from(svc.service_type.to_u8()),
                e["type_value"].as_u64().unwrap()
            );
            assert_eq!(u64::from(svc.service_id), e["id"].as_u64().unwrap());
            assert_eq!(u64::from(svc.priority), e["priority"].as_u64().unwrap());
            assert_eq!(u64::from(svc.protocol), e["protocol"].as_u64().unwrap());
            assert_eq!(
                u64::from(svc.flags.bits()),
                e["flags_value"].as_u64().unwrap()
            );
            let names: Vec<Value> = svc.flags.names().into_iter().map(Value::from).collect();
            assert_eq!(&Value::from(names), &e["flags"], "{name}: flag names");
            let ports: Vec<u64> = svc.active_ports().map(u64::from).collect();
            let want: Vec<u64> = e["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
            assert_eq!(ports, want, "{name}: ports");

            let id = m
                .components
                .iter()
                .find_map(|c| match c {
                    Component::WebCacheIdentity(w) => Some(&w.identity),
                    _ => None,
                })
                .unwrap();
            let e = &expected["web_cache"];
            let engine: Ipv4Addr = e["ip"].as_str().unwrap().parse().unwrap();
            assert_eq!(id.address, Address::V4(engine));
            assert_eq!(
                u64::from(id.flags.bits() | (id.assignment.type_bits() << 1)),
                e["identity_flags"].as_u64().unwrap()
            );
            match (&id.assignment, e["assignment_data"].as_str().unwrap()) {
                (AssignmentData::Hash(h), "hash") => {
                    assert_eq!(u64::from(h.weight), e["weight"].as_u64().unwrap());
                    assert_eq!(
                        u64::from(h.buckets.count()),
                        e["buckets_assigned"].as_u64().unwrap()
                    );
                }
                (AssignmentData::Mask(mk), "mask") => {
                    assert_eq!(mk.sets.len() as u64, e["mask_elements"].as_u64().unwrap());
                    let src = e["mask"]["src_ip"].as_str().unwrap();
                    assert_eq!(format!("0x{:08x}", mk.sets[0].mask.src_addr), src);
                }
                (a, want) => panic!("{name}: assignment data {a:?}, expected {want}"),
            }

            let caps = m.capabilities().unwrap();
            let e = &expected["capabilities"];
            assert_eq!(
                u64::from(caps.forwarding().unwrap().bits()),
                e["forwarding_method"].as_u64().unwrap()
            );
            assert_eq!(
                u64::from(caps.assignment().unwrap().bits()),
                e["assignment_method"].as_u64().unwrap()
            );
            assert_eq!(
                u64::from(caps.return_methods().unwrap().bits()),
                e["return_method"].as_u64().unwrap()
            );

            match expected["security"]["password"].as_str() {
                Some(pw) => {
                    md5_verify(&bytes, pw.as_bytes())
                        .unwrap_or_else(|e| panic!("{name}: Squid's digest: {e}"));
                    assert_eq!(
                        md5_verify(&bytes, b"wrong").unwrap_err(),
                        Error::Md5Mismatch
                    );
                    // Our own signature over the re-emitted message is Squid's.
                    let mut ours = m.to_bytes().unwrap();
                    ours[16..32].fill(0);
                    md5_sign(&mut ours, pw.as_bytes()).unwrap();
                    assert_eq!(ours, bytes);
                }
                None => assert_eq!(m.security(), Some(&SecurityInfo::None)),
            }
        }
    }
}
