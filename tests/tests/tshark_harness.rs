//! The judge is only worth something if it can fail: garbage on UDP 2048 must come back
//! from tshark flagged, and fields must be readable.

use std::net::Ipv4Addr;

use netns_tests::pcap::{write_pcap, Datagram};
use netns_tests::tshark;

#[test]
fn tshark_flags_a_truncated_wccp_message() {
    let dir = std::env::temp_dir().join(format!("tshark-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("garbage.pcap");
    // A Here-I-Am header (type 10, version 0x0200) claiming 100 bytes of components it lacks.
    let message = vec![0, 0, 0, 10, 0x02, 0x00, 0, 100, 0, 0];
    let datagram = Datagram::wccp(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        message,
    );
    write_pcap(&path, &[datagram]).unwrap();
    let frames = tshark::decode(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    assert_eq!(frame.value("udp.dstport").unwrap(), "2048");
    assert!(
        frame.malformed || !frame.problems().is_empty(),
        "tshark found nothing wrong with a truncated message: {frame:?}"
    );
}
