//! Fuzzes `wccp::wire` parsing: whatever parses must re-emit to the same bytes, and nothing
//! may panic. Also exercises MD5 signing and verification, the component and message views,
//! and the GRE and redirect header parsers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wccp::wire::*;

fn messages(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        let out = m.to_bytes().expect("a parsed message re-emits");
        assert_eq!(out, data, "emit(parse(bytes)) != bytes");
        let _ = m.check_components();
        let _ = m.check_addresses();
        for c in &m.components {
            assert!(c.buffer_len() >= COMPONENT_HEADER_LEN, "{}", c.name());
        }
        let json = serde_json::to_vec(&m).expect("JSON");
        let back: Message = serde_json::from_slice(&json).expect("JSON back");
        assert_eq!(back, m, "JSON round trip");
    }
    if let Ok(p) = MessagePacket::new_checked(data) {
        let _ = (p.message_type(), p.version(), p.payload().len());
        for item in p.components() {
            let Ok((_, c)) = item else { break };
            let _ = (c.kind(), c.body().len());
        }
    }
}

fn components(data: &[u8]) {
    for mode in [AddressMode::Ipv4, AddressMode::Indexed] {
        if let Ok(c) = Component::parse(data, mode) {
            let mut out = vec![0u8; c.buffer_len()];
            let n = c.emit(&mut out).expect("a parsed component re-emits");
            assert_eq!(&out[..n], data, "component emit(parse(bytes)) != bytes");
        }
    }
}

fn md5(data: &[u8]) {
    let _ = md5_verify(data, b"fuzzpass");
    let mut copy = data.to_vec();
    if md5_sign(&mut copy, b"fuzzpass").is_ok() {
        assert!(
            md5_verify(&copy, b"fuzzpass").is_ok(),
            "signed message fails to verify"
        );
        assert_eq!(
            md5_verify(&copy, b"fuzzpasz"),
            Err(Error::Md5Mismatch),
            "wrong password verifies"
        );
    }
}

fn encapsulation(data: &[u8]) {
    if let Ok(p) = GrePacket::new_checked(data) {
        if let Ok(g) = GreRepr::parse(&p) {
            let mut out = vec![0u8; g.buffer_len()];
            g.emit(&mut out).expect("GRE emits");
            assert_eq!(&out[..], &data[..g.buffer_len()], "GRE re-emit");
        }
    }
    for layout in [RedirectLayout::Wireshark, RedirectLayout::Draft01] {
        if let Ok(p) = RedirectHeader::new_checked(data) {
            if let Ok(r) = RedirectHeaderRepr::parse(&p, layout) {
                let mut out = [0u8; REDIRECT_HEADER_LEN];
                r.emit(&mut out, layout).expect("redirect header emits");
                assert_eq!(&out[..], &data[..REDIRECT_HEADER_LEN], "redirect re-emit");
            }
        }
        if let Ok(d) = decapsulate(data, layout) {
            let head = data.len() - d.inner.len();
            let mut out = vec![0u8; head];
            let n = d.gre.emit(&mut out).expect("GRE emits");
            if let Some(r) = d.redirect {
                r.emit(&mut out[n..], layout).expect("redirect emits");
            }
            assert_eq!(&out[..], &data[..head], "decapsulated headers re-emit");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    messages(data);
    components(data);
    md5(data);
    encapsulation(data);
});
