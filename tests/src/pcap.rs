//! Writing capture files, so that tools which only read the wire (tshark, `redirector-ctl
//! decode`) can be fed exactly the bytes our code emits.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use etherparse::{IpNumber, PacketBuilder};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// The UDP port WCCPv2 runs on; both ends use it.
pub const WCCP_PORT: u16 = 2048;

/// One IPv4 datagram to frame: addresses and the IP payload's protocol and bytes.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Source address of the outer IPv4 header.
    pub src: Ipv4Addr,
    /// Destination address of the outer IPv4 header.
    pub dst: Ipv4Addr,
    /// What the IPv4 header carries.
    pub payload: Payload,
}

/// The IPv4 payload: a WCCP message in UDP, or raw bytes under another protocol (GRE).
#[derive(Debug, Clone)]
pub enum Payload {
    /// UDP from port 2048 to port 2048 with these bytes.
    WccpUdp(Vec<u8>),
    /// Any IP protocol (47 for GRE) with these bytes right after the IPv4 header.
    Raw {
        /// IP protocol number.
        protocol: u8,
        /// Bytes after the IPv4 header.
        bytes: Vec<u8>,
    },
}

impl Datagram {
    /// A WCCP message sent from `src` to `dst` on UDP 2048.
    pub fn wccp(src: Ipv4Addr, dst: Ipv4Addr, message: Vec<u8>) -> Self {
        Datagram {
            src,
            dst,
            payload: Payload::WccpUdp(message),
        }
    }

    /// The whole Ethernet II frame, with checksums computed as a real sender would.
    pub fn frame(&self) -> Result<Vec<u8>> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
            self.src.octets(),
            self.dst.octets(),
            64,
        );
        let mut out = Vec::new();
        match &self.payload {
            Payload::WccpUdp(bytes) => builder
                .udp(WCCP_PORT, WCCP_PORT)
                .write(&mut out, bytes)
                .context("building a UDP frame")?,
            Payload::Raw { protocol, bytes } => builder
                .write(&mut out, IpNumber(*protocol), bytes)
                .context("building an IPv4 frame")?,
        }
        Ok(out)
    }
}

/// Writes `datagrams` as an Ethernet pcap file, one frame a millisecond apart.
pub fn write_pcap(path: &Path, datagrams: &[Datagram]) -> Result<()> {
    let frames = datagrams
        .iter()
        .map(Datagram::frame)
        .collect::<Result<Vec<_>>>()?;
    write_frames(path, &frames)
}

/// Writes whole Ethernet frames as given, for tests that need bytes no honest sender
/// makes (bad checksums, truncated headers).
pub fn write_frames(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut writer = PcapWriter::with_header(file, header).context("writing pcap header")?;
    for (i, frame) in frames.iter().enumerate() {
        let ts = std::time::Duration::from_millis(1_700_000_000_000 + i as u64);
        writer
            .write_packet(&PcapPacket::new(ts, frame.len() as u32, frame))
            .context("writing pcap packet")?;
    }
    Ok(())
}

/// An IPv4 TCP SYN (no link header): the packet a router redirects, for tests that wrap it.
pub fn tcp_syn_packet(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .tcp(src_port, dst_port, 1, 8192)
        .syn()
        .write(&mut out, &[])
        .expect("writing to a Vec cannot fail");
    out
}
