//! Reading capture files (pcap and pcapng, as tcpdump and tshark write them) into frames,
//! and finding in each frame the IPv4 datagram that may carry WCCP.
//!
//! A capture that ends in the middle of a record is reported as truncated after the frames
//! that were whole, so an operator still sees everything the file holds.

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::{Ipv4Header, LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

/// Why a file could not be read as a capture; each maps to exit code 2 in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The first bytes are not a pcap or pcapng magic number.
    #[error("not a pcap or pcapng capture (unknown magic number)")]
    NotACapture,
    /// The file ends inside a header or a record.
    #[error("capture is truncated: it ends inside record {record} (after {whole} whole frames)")]
    Truncated {
        /// 1-based number of the record that is cut short.
        record: usize,
        /// Frames read whole before it.
        whole: usize,
    },
    /// A header or record has a value the format does not allow.
    #[error("capture is corrupt at record {record}: {reason}")]
    Corrupt {
        /// 1-based number of the record.
        record: usize,
        /// What the format reader objected to.
        reason: String,
    },
}

/// One captured frame with what the capture says about its link layer.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// 1-based position in the file, as Wireshark numbers frames.
    pub number: usize,
    /// Capture timestamp since the Unix epoch.
    pub timestamp: Duration,
    /// Link type, to know where the IP header starts.
    pub link: DataLink,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: Cow<'a, [u8]>,
    /// Length on the wire; larger than `data` when the snap length cut the frame.
    pub original_len: u32,
}

/// The frames of a capture, and the error that stopped reading early, if any.
#[derive(Debug)]
pub struct Capture<'a> {
    /// Every whole frame, in file order.
    pub frames: Vec<Frame<'a>>,
    /// Set when the file is cut short or corrupt after `frames`.
    pub error: Option<CaptureError>,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every frame of a pcap or pcapng file held in memory.
pub fn read(bytes: &[u8]) -> Result<Capture<'_>, CaptureError> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or(CaptureError::NotACapture)?;
    if PCAP_MAGICS.contains(&magic) {
        read_pcap(bytes)
    } else if magic == PCAPNG_MAGIC {
        read_pcapng(bytes)
    } else {
        Err(CaptureError::NotACapture)
    }
}

fn record_error(error: PcapError, record: usize, whole: usize) -> CaptureError {
    match error {
        PcapError::IncompleteBuffer => CaptureError::Truncated { record, whole },
        other => CaptureError::Corrupt {
            record,
            reason: other.to_string(),
        },
    }
}

fn read_pcap(bytes: &[u8]) -> Result<Capture<'_>, CaptureError> {
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| match e {
        PcapError::IncompleteBuffer => CaptureError::Truncated {
            record: 0,
            whole: 0,
        },
        other => CaptureError::Corrupt {
            record: 0,
            reason: other.to_string(),
        },
    })?;
    let link = parser.header().datalink;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        match parser.next_packet(rest) {
            Ok((next, packet)) => {
                frames.push(Frame {
                    number: frames.len() + 1,
                    timestamp: packet.timestamp,
                    link,
                    original_len: packet.orig_len,
                    data: packet.data,
                });
                rest = next;
            }
            Err(e) => {
                let whole = frames.len();
                return Ok(Capture {
                    frames,
                    error: Some(record_error(e, whole + 1, whole)),
                });
            }
        }
    }
    Ok(Capture {
        frames,
        error: None,
    })
}

fn read_pcapng(bytes: &[u8]) -> Result<Capture<'_>, CaptureError> {
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| record_error(e, 0, 0))?;
    let mut frames = Vec::new();
    let mut record = 1;
    while !rest.is_empty() {
        record += 1;
        let (next, block) = match parser.next_block(rest) {
            Ok(ok) => ok,
            Err(e) => {
                let whole = frames.len();
                return Ok(Capture {
                    frames,
                    error: Some(record_error(e, record, whole)),
                });
            }
        };
        rest = next;
        let (link, timestamp, original_len, data) = match block {
            Block::EnhancedPacket(packet) => {
                let Some(interface) = parser.packet_interface(&packet) else {
                    return Ok(Capture {
                        error: Some(CaptureError::Corrupt {
                            record,
                            reason: format!(
                                "packet names unknown interface {}",
                                packet.interface_id
                            ),
                        }),
                        frames,
                    });
                };
                (
                    interface.linktype,
                    pcapng_timestamp(packet.timestamp, interface),
                    packet.original_len,
                    packet.data,
                )
            }
            Block::SimplePacket(packet) => match parser.interfaces().first() {
                Some(interface) => (
                    interface.linktype,
                    Duration::ZERO,
                    packet.original_len,
                    packet.data,
                ),
                None => continue,
            },
            _ => continue,
        };
        frames.push(Frame {
            number: frames.len() + 1,
            timestamp,
            link,
            data,
            original_len,
        });
    }
    Ok(Capture {
        frames,
        error: None,
    })
}

/// pcap-file 2 hands over the raw 64-bit pcapng timestamp as nanoseconds, whatever the
/// interface's resolution; apply `if_tsresol` (default: microseconds) here.
fn pcapng_timestamp(
    raw: Duration,
    interface: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock<'_>,
) -> Duration {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    let ticks = u64::try_from(raw.as_nanos()).unwrap_or(u64::MAX);
    let resolution = interface
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    let per_second: u64 = if resolution & 0x80 == 0 {
        10u64.checked_pow(u32::from(resolution)).unwrap_or(0)
    } else {
        1u64.checked_shl(u32::from(resolution & 0x7f)).unwrap_or(0)
    };
    if per_second == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(ticks % per_second) * 1_000_000_000 / u128::from(per_second);
    Duration::new(ticks / per_second, nanos as u32)
}

/// An IPv4 datagram found in a frame, with its checksums judged.
#[derive(Debug, Clone)]
pub struct Datagram<'a> {
    /// Outer IPv4 source.
    pub src: Ipv4Addr,
    /// Outer IPv4 destination.
    pub dst: Ipv4Addr,
    /// False when the IPv4 header checksum is wrong.
    pub ip_checksum_ok: bool,
    /// What the IPv4 header carries.
    pub content: Content<'a>,
}

/// The part of a datagram that WCCP tools care about.
#[derive(Debug, Clone)]
pub enum Content<'a> {
    /// UDP with port 2048 at either end: a WCCP control message.
    WccpUdp {
        /// What the UDP checksum field says.
        udp_checksum: UdpChecksum,
        /// The UDP payload: the WCCP message.
        payload: &'a [u8],
    },
    /// IP protocol 47: GRE, possibly WCCP-redirected traffic.
    Gre {
        /// Bytes after the IPv4 header: GRE header onward.
        payload: &'a [u8],
    },
}

/// IP protocol number of GRE.
const IPPROTO_GRE: u8 = 47;
/// The UDP port of WCCPv2 control messages.
const WCCP_PORT: u16 = 2048;

/// Finds a WCCP message or GRE packet in a frame; `None` for anything else (ARP, TCP, IPv6,
/// fragments other than the first, frames cut before the IP payload).
pub fn datagram<'a>(frame: &'a Frame<'_>) -> Option<Datagram<'a>> {
    let data: &'a [u8] = &frame.data;
    let packet = match frame.link {
        DataLink::ETHERNET => LaxSlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => {
            let sll = etherparse::LinuxSllSlice::from_slice(data).ok()?;
            let payload = sll.payload();
            let etherparse::LinuxSllProtocolType::EtherType(ether_type) = payload.protocol_type
            else {
                return None;
            };
            let mut packet = LaxSlicedPacket::from_ether_type(ether_type, payload.payload);
            packet.link = Some(LinkSlice::LinuxSll(sll));
            packet
        }
        DataLink::RAW | DataLink::IPV4 => LaxSlicedPacket::from_ip(data).ok()?,
        _ => return None,
    };
    let Some(LaxNetSlice::Ipv4(ipv4)) = &packet.net else {
        return None;
    };
    let header = ipv4.header();
    let ip_checksum_ok = header_checksum_ok(ipv4);
    let src = header.source_addr();
    let dst = header.destination_addr();
    if ipv4.payload().fragmented && header.fragments_offset().value() != 0 {
        return None;
    }
    let content = match (&packet.transport, header.protocol().0) {
        (Some(TransportSlice::Udp(udp)), _)
            if udp.source_port() == WCCP_PORT || udp.destination_port() == WCCP_PORT =>
        {
            let payload = udp.payload();
            Content::WccpUdp {
                udp_checksum: judge_udp_checksum(&header.to_header(), udp),
                payload,
            }
        }
        (_, IPPROTO_GRE) => Content::Gre {
            payload: ipv4.payload().payload,
        },
        _ => return None,
    };
    Some(Datagram {
        src,
        dst,
        ip_checksum_ok,
        content,
    })
}

fn header_checksum_ok(ipv4: &etherparse::LaxIpv4Slice<'_>) -> bool {
    let header: Ipv4Header = ipv4.header().to_header();
    header.calc_header_checksum() == header.header_checksum
}

/// The state of a UDP checksum as captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpChecksum {
    /// Zero: the sender chose not to checksum (allowed for UDP over IPv4).
    Absent,
    /// Correct.
    Ok,
    /// The field holds only the pseudo-header sum: the sender's NIC (or veth) was to finish
    /// it, and the capture was taken before it did. Normal on the sending host and on veth.
    Offloaded,
    /// Wrong: a receiver will drop this datagram.
    Bad,
}

fn judge_udp_checksum(ip: &Ipv4Header, udp: &etherparse::UdpSlice<'_>) -> UdpChecksum {
    let sent = udp.checksum();
    if sent == 0 {
        return UdpChecksum::Absent;
    }
    let payload = udp.payload();
    match udp.to_header().calc_checksum_ipv4(ip, payload) {
        Ok(correct) if correct == sent => return UdpChecksum::Ok,
        Err(_) => return UdpChecksum::Bad,
        Ok(_) => {}
    }
    // The partial sum a sender leaves for offload: source, destination, protocol and UDP
    // length, folded, not inverted.
    let mut sum: u32 = 0;
    for pair in ip.source.chunks(2).chain(ip.destination.chunks(2)) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum += u32::from(etherparse::ip_number::UDP.0);
    sum += u32::from(udp.length());
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if sum as u16 == sent {
        UdpChecksum::Offloaded
    } else {
        UdpChecksum::Bad
    }
}
