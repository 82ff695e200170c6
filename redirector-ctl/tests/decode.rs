//! `redirector-ctl decode` run as an operator runs it, on real Squid captures and on
//! captures built to contain every kind of trouble the command must flag.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use netns_tests::pcap::{write_frames, Datagram, Payload};
use serde_json::Value;
use wccp::wire::{GreRepr, RedirectHeaderRepr, RedirectLayout};

const SQUID_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wccp/tests/fixtures/squid");

fn decode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redirector-ctl"))
        .arg("decode")
        .args(args)
        .output()
        .expect("running redirector-ctl")
}

fn decode_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = decode(&all);
    assert!(
        output.status.success(),
        "decode failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("decode --json prints JSON")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("decode-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(variant: &str) -> (String, Value) {
    let dir = Path::new(SQUID_FIXTURES).join(variant);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (
        dir.join("here-i-am.pcap").to_string_lossy().into_owned(),
        expected,
    )
}

fn service_of(record: &Value) -> &Value {
    record["message"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c.get("Service"))
        .expect("a Here-I-Am has a Service Info")
}

#[test]
fn every_squid_capture_decodes_with_the_values_squid_conf_set() {
    let variants: Vec<String> = std::fs::read_dir(SQUID_FIXTURES)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("expected.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(variants.len() >= 7, "fixtures missing: {variants:?}");
    for variant in variants {
        let (pcap, expected) = fixture(&variant);
        let report = decode_json(&[&pcap]);
        let records = report["records"].as_array().unwrap();
        assert_eq!(
            records.len() as u64,
            expected["messages_in_pcap"].as_u64().unwrap(),
            "{variant}"
        );
        for record in records {
            assert_eq!(record["kind"], "wccp", "{variant}");
            assert_eq!(record["message"]["message_type"], "HereIAm", "{variant}");
            assert_eq!(record["src"], expected["engine_ip"], "{variant}");
            // veth leaves UDP checksums to offload; that must not read as an error.
            assert_eq!(record["udp_checksum"], "offloaded", "{variant}");
            let service = service_of(record);
            assert_eq!(
                service["service_id"], expected["service"]["id"],
                "{variant}"
            );
            assert_eq!(
                service["protocol"], expected["service"]["protocol"],
                "{variant}"
            );
        }
        assert_eq!(report["flagged"], 0, "{variant}");
    }
}

#[test]
fn md5_is_valid_with_squids_password_and_flagged_with_another() {
    let (pcap, expected) = fixture("md5-password");
    let password = expected["security"]["password"].as_str().unwrap();

    let right = decode_json(&[&pcap, "--password", password]);
    for record in right["records"].as_array().unwrap() {
        assert_eq!(record["md5"], "valid");
    }
    assert_eq!(right["flagged"], 0);

    let wrong = decode_json(&[&pcap, "--password", "not-it"]);
    for record in wrong["records"].as_array().unwrap() {
        assert_eq!(record["md5"], "invalid");
    }
    assert_eq!(wrong["flagged"], 2);

    let unchecked = decode_json(&[&pcap]);
    assert_eq!(unchecked["records"][0]["md5"], "not_checked");

    let text = decode(&[&pcap, "--password", "not-it"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("MD5 INVALID"), "{stdout}");
    assert!(stdout.contains("2 WCCP frames, 2 flagged"), "{stdout}");
}

#[test]
fn pcapng_from_tshark_decodes_like_pcap() {
    let dir = scratch("pcapng");
    let (pcap, _) = fixture("dynamic-ports");
    let ng = dir.join("here-i-am.pcapng");
    let status = Command::new("tshark")
        .args(["-r", &pcap, "-F", "pcapng", "-w"])
        .arg(&ng)
        .status()
        .expect("tshark is needed (scripts/setup.sh installs it)");
    assert!(status.success());
    let from_pcap = decode_json(&[&pcap]);
    let from_ng = decode_json(&[ng.to_str().unwrap()]);
    let ng_bytes = std::fs::read(&ng).unwrap();
    // Cut anywhere, the file must give a clean verdict: 0, or 2 with a reason; never a panic.
    let cut = dir.join("cut.pcapng");
    for len in (0..ng_bytes.len()).step_by(7) {
        std::fs::write(&cut, &ng_bytes[..len]).unwrap();
        let output = decode(&[cut.to_str().unwrap()]);
        assert!(
            matches!(output.status.code(), Some(0) | Some(2)),
            "cut at {len}: {:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(from_pcap["records"], from_ng["records"]);
}

#[test]
fn a_file_that_is_not_a_capture_exits_2_with_a_reason() {
    let output = decode(&[concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a pcap or pcapng capture"), "{stderr}");

    let output = decode(&["/nonexistent/capture.pcap"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn a_truncated_capture_prints_whole_frames_then_exits_2() {
    let dir = scratch("truncated");
    let (pcap, _) = fixture("gre-hash");
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = dir.join("cut.pcap");
    // Keep the first frame whole and half of the second.
    std::fs::write(&cut, &bytes[..bytes.len() - 60]).unwrap();
    let output = decode(&[cut.to_str().unwrap()]);
    // Cut anywhere, a clean verdict: 0 (whole records only) or 2 with a reason, never a panic.
    let anywhere = dir.join("anywhere.pcap");
    for len in (0..bytes.len()).step_by(5) {
        std::fs::write(&anywhere, &bytes[..len]).unwrap();
        let code = decode(&[anywhere.to_str().unwrap()]).status.code();
        assert!(matches!(code, Some(0) | Some(2)), "cut at {len}: {code:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.starts_with("#1 "), "{stdout}");
    assert!(!stdout.contains("#2 "), "{stdout}");
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn bad_checksums_malformed_messages_and_gre_redirects_are_shown_and_flagged() {
    let dir = scratch("trouble");
    let (pcap, _) = fixture("gre-hash");
    let good = decode_json(&[&pcap]);
    let engine = Ipv4Addr::new(10, 9, 0, 2);
    let router = Ipv4Addr::new(10, 9, 0, 1);
    // A real Here-I-Am, re-framed with correct checksums.
    let squid_bytes = {
        let raw = std::fs::read(&pcap).unwrap();
        // pcap header (24) + record header (16) + Ethernet (14) + IPv4 (20) + UDP (8).
        let len = u16::from_be_bytes([raw[24 + 16 + 14 + 20 + 4], raw[24 + 16 + 14 + 20 + 5]]);
        raw[24 + 16 + 42..24 + 16 + 42 + len as usize - 8].to_vec()
    };
    let good_frame = Datagram::wccp(engine, router, squid_bytes.clone())
        .frame()
        .unwrap();
    let mut bad_ip = good_frame.clone();
    bad_ip[14 + 10] ^= 0xff; // IPv4 header checksum
    let mut bad_udp = good_frame.clone();
    bad_udp[14 + 20 + 6] ^= 0x55; // UDP checksum
    let malformed = Datagram::wccp(engine, router, squid_bytes[..12].to_vec())
        .frame()
        .unwrap();
    // A redirected packet: GRE 0x883E, redirect header for service 90 bucket 17, inner IPv4.
    let inner = Datagram::wccp(
        Ipv4Addr::new(10, 1, 1, 1),
        Ipv4Addr::new(10, 2, 2, 2),
        vec![1],
    )
    .frame()
    .unwrap()[14..]
        .to_vec();
    let mut gre = vec![0u8; GreRepr::WCCP.buffer_len() + 4];
    let n = GreRepr::WCCP.emit(&mut gre).unwrap();
    let header = RedirectHeaderRepr {
        dynamic: true,
        service_id: 90,
        primary_bucket: 17,
        alt_bucket: 3,
        ..RedirectHeaderRepr::NULL
    };
    header
        .emit(&mut gre[n..], RedirectLayout::default())
        .unwrap();
    gre.extend_from_slice(&inner);
    let gre_frame = Datagram {
        src: router,
        dst: engine,
        payload: Payload::Raw {
            protocol: 47,
            bytes: gre,
        },
    }
    .frame()
    .unwrap();

    let path = dir.join("trouble.pcap");
    write_frames(&path, &[good_frame, bad_ip, bad_udp, malformed, gre_frame]).unwrap();
    let report = decode_json(&[path.to_str().unwrap()]);
    let text = decode(&[path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();

    let records = report["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["udp_checksum"], "ok");
    assert_eq!(records[0]["ip_checksum_ok"], true);
    assert_eq!(
        records[0]["message"]["components"],
        good["records"][0]["message"]["components"]
    );
    assert_eq!(records[1]["ip_checksum_ok"], false);
    assert_eq!(records[2]["udp_checksum"], "bad");
    assert_eq!(records[3]["kind"], "malformed");
    assert_eq!(records[3]["error_kind"], "truncated");
    assert_eq!(records[4]["kind"], "gre");
    assert_eq!(records[4]["redirect"]["service_id"], 90);
    assert_eq!(records[4]["redirect"]["primary_bucket"], 17);
    assert_eq!(records[4]["inner_src"], "10.1.1.1");
    assert_eq!(report["flagged"], 3);

    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("BAD IP CHECKSUM"), "{stdout}");
    assert!(stdout.contains("BAD UDP CHECKSUM"), "{stdout}");
    assert!(stdout.contains("MALFORMED (truncated)"), "{stdout}");
    assert!(
        stdout.contains("GRE redirect: service 90 (dynamic), primary bucket 17"),
        "{stdout}"
    );
}
