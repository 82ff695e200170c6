//! Loads `xdp_pass` into the kernel and runs it once with BPF_PROG_TEST_RUN. Needs root
//! (or CAP_BPF + CAP_NET_ADMIN); fails, never skips, when the object was not built.

use aya::programs::{TestRun as _, TestRunOptions};
use redirector_ebpf::EbpfObject;

/// `XDP_PASS` from `enum xdp_action` in <linux/bpf.h>.
const XDP_PASS: u32 = 2;

/// Ethernet + IPv4 + UDP, 46 bytes: 192.0.2.1:40000 -> 198.51.100.1:80, payload "wccp".
const FRAME: [u8; 46] = [
    // Ethernet: destination, source, type IPv4.
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
    // IPv4: version/IHL, TOS, total length 32, id, flags/fragment, TTL 64, UDP, checksum.
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x8e, 0x96,
    // source 192.0.2.1, destination 198.51.100.1.
    0xc0, 0x00, 0x02, 0x01, 0xc6, 0x33, 0x64, 0x01,
    // UDP: source port 40000, destination port 80, length 12, checksum 0 (none).
    0x9c, 0x40, 0x00, 0x50, 0x00, 0x0c, 0x00, 0x00, // Payload.
    b'w', b'c', b'c', b'p',
];

#[test]
fn xdp_pass_returns_pass_and_leaves_frame_unchanged() {
    let mut object = EbpfObject::open("xdp_pass").unwrap_or_else(|e| panic!("{e}"));
    let program = object.xdp("xdp_pass").unwrap_or_else(|e| panic!("{e}"));

    // Room to spare: a program that grew the frame would show as a size difference,
    // not as ENOSPC.
    let mut out = [0u8; FRAME.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&FRAME),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));

    assert_eq!(result.return_value, XDP_PASS, "verdict");
    assert_eq!(
        &out[..result.data_size_out as usize],
        &FRAME[..],
        "output bytes"
    );
}
