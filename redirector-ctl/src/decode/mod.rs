//! `redirector-ctl decode`: every WCCP message in a capture, for troubleshooting a group
//! from a tcpdump taken on a router or an engine.
//!
//! Control messages (UDP 2048) are decoded whole, with their MD5 checked when a password is
//! given; GRE packets of protocol 0x883E show their redirect header and the inner packet's
//! addresses. IPv4 and UDP checksums are judged, since a box that miscomputes them is a
//! common reason for a peer to stay silent.

pub mod capture;

use std::io::Write;
use std::net::Ipv4Addr;

use serde::Serialize;
use wccp::wire::{
    decapsulate, md5_verify, Message, RedirectHeaderRepr, RedirectLayout, SecurityInfo,
};

use capture::{Capture, CaptureError, Content, UdpChecksum};

/// What a decoded frame holds: a control message, a redirected packet, or bytes that
/// claimed to be one of these and are not.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Payload {
    /// A WCCP message on UDP 2048.
    Wccp {
        /// The message as parsed.
        message: Box<Message>,
        /// Outcome of the MD5 check.
        md5: Md5Check,
    },
    /// A GRE packet carrying WCCP-redirected (or returned) traffic.
    Gre {
        /// The redirect header; absent when the inner packet follows GRE directly.
        redirect: Option<RedirectHeaderRepr>,
        /// Source of the inner (original) packet, when it is IPv4.
        inner_src: Option<Ipv4Addr>,
        /// Destination of the inner packet, when it is IPv4.
        inner_dst: Option<Ipv4Addr>,
        /// IP protocol of the inner packet.
        inner_protocol: Option<u8>,
        /// Bytes of the inner packet.
        inner_len: usize,
    },
    /// Bytes on UDP 2048 or in GRE that do not parse.
    Malformed {
        /// `Error::kind()` of the wire codec: a stable name.
        error_kind: &'static str,
        /// The codec's full explanation.
        error: String,
    },
}

/// Whether a message's MD5 digest was checked and how that went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Md5Check {
    /// The message carries no MD5 Security Info.
    NotSigned,
    /// Signed, and no password was given to check it with.
    NotChecked,
    /// The digest matches the given password.
    Valid,
    /// The digest does not match the given password.
    Invalid,
}

/// One frame that carried WCCP, as printed.
#[derive(Debug, Serialize)]
pub struct Record {
    /// Wireshark-style 1-based frame number.
    pub frame: usize,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Outer IPv4 source.
    pub src: Ipv4Addr,
    /// Outer IPv4 destination.
    pub dst: Ipv4Addr,
    /// False when the IPv4 header checksum is wrong.
    pub ip_checksum_ok: bool,
    /// For UDP 2048: what the checksum field says; `None` for GRE.
    pub udp_checksum: Option<UdpChecksum>,
    /// Set when the capture's snap length cut the frame.
    pub cut_short: bool,
    /// What the frame carries.
    #[serde(flatten)]
    pub payload: Payload,
}

impl Record {
    /// Whether anything about this frame deserves an operator's eye.
    pub fn is_bad(&self) -> bool {
        !self.ip_checksum_ok
            || self.udp_checksum == Some(UdpChecksum::Bad)
            || self.cut_short
            || matches!(
                self.payload,
                Payload::Malformed { .. }
                    | Payload::Wccp {
                        md5: Md5Check::Invalid,
                        ..
                    }
            )
    }
}

/// Decodes every WCCP-bearing frame of a capture.
pub fn records(capture: &Capture<'_>, password: Option<&str>) -> Vec<Record> {
    capture
        .frames
        .iter()
        .filter_map(|frame| {
            let datagram = capture::datagram(frame)?;
            let (udp_checksum, payload) = match datagram.content {
                Content::WccpUdp {
                    udp_checksum,
                    payload,
                } => (Some(udp_checksum), wccp_payload(payload, password)),
                Content::Gre { payload } => (None, gre_payload(payload)),
            };
            Some(Record {
                frame: frame.number,
                time: frame.timestamp.as_secs_f64(),
                src: datagram.src,
                dst: datagram.dst,
                ip_checksum_ok: datagram.ip_checksum_ok,
                udp_checksum,
                cut_short: frame.data.len() < frame.original_len as usize,
                payload,
            })
        })
        .collect()
}

fn malformed(error: wccp::wire::Error) -> Payload {
    Payload::Malformed {
        error_kind: error.kind(),
        error: error.to_string(),
    }
}

fn wccp_payload(bytes: &[u8], password: Option<&str>) -> Payload {
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        Err(error) => return malformed(error),
    };
    let md5 = match (message.security(), password) {
        (Some(SecurityInfo::Md5 { .. }), Some(password)) => {
            match md5_verify(bytes, password.as_bytes()) {
                Ok(()) => Md5Check::Valid,
                Err(_) => Md5Check::Invalid,
            }
        }
        (Some(SecurityInfo::Md5 { .. }), None) => Md5Check::NotChecked,
        _ => Md5Check::NotSigned,
    };
    Payload::Wccp {
        message: Box::new(message),
        md5,
    }
}

fn gre_payload(bytes: &[u8]) -> Payload {
    match decapsulate(bytes, RedirectLayout::default()) {
        Ok(d) => {
            let inner = etherparse::Ipv4HeaderSlice::from_slice(d.inner).ok();
            Payload::Gre {
                redirect: d.redirect,
                inner_src: inner.as_ref().map(|h| h.source_addr()),
                inner_dst: inner.as_ref().map(|h| h.destination_addr()),
                inner_protocol: inner.as_ref().map(|h| h.protocol().0),
                inner_len: d.inner.len(),
            }
        }
        Err(error) => malformed(error),
    }
}

/// The whole decode as one JSON document: stable field names, for scripts.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Every WCCP-bearing frame.
    pub records: &'a [Record],
    /// How many records [`Record::is_bad`] flags.
    pub flagged: usize,
    /// Why reading stopped early, when it did.
    pub capture_error: Option<String>,
}

/// Writes records in the readable form: one header line per frame, one line per component.
pub fn write_text(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    for record in records {
        let mut flags = Vec::new();
        if !record.ip_checksum_ok {
            flags.push("BAD IP CHECKSUM");
        }
        if record.udp_checksum == Some(UdpChecksum::Bad) {
            flags.push("BAD UDP CHECKSUM");
        }
        if record.cut_short {
            flags.push("CUT SHORT BY SNAPLEN");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", flags.join(", "))
        };
        match &record.payload {
            Payload::Wccp { message, md5 } => {
                writeln!(
                    out,
                    "#{} {:.6} {} -> {} WCCP {:?} version {:?}, MD5 {}{flags}",
                    record.frame,
                    record.time,
                    record.src,
                    record.dst,
                    message.message_type,
                    message.version,
                    match md5 {
                        Md5Check::NotSigned => "none",
                        Md5Check::NotChecked => "present (not checked: no --password)",
                        Md5Check::Valid => "valid",
                        Md5Check::Invalid => "INVALID for the given password",
                    },
                )?;
                for component in &message.components {
                    let body = serde_json::to_value(component)
                        .ok()
                        .and_then(|v| v.as_object().and_then(|o| o.values().next().cloned()))
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    writeln!(out, "    {}: {body}", component.name())?;
                }
            }
            Payload::Gre {
                redirect,
                inner_src,
                inner_dst,
                inner_protocol,
                inner_len,
            } => {
                let header = match redirect {
                    Some(r) => format!(
                        "service {} ({}), primary bucket {}, alternate bucket {}{}",
                        r.service_id,
                        if r.dynamic { "dynamic" } else { "well-known" },
                        r.primary_bucket,
                        r.alt_bucket,
                        if r.alt_bucket_used {
                            ", alternate used"
                        } else {
                            ""
                        }
                    ),
                    None => "no redirect header".to_string(),
                };
                let inner = match (inner_src, inner_dst, inner_protocol) {
                    (Some(s), Some(d), Some(p)) => format!("{s} -> {d} proto {p}"),
                    _ => "not IPv4".to_string(),
                };
                writeln!(
                    out,
                    "#{} {:.6} {} -> {} GRE redirect: {header}; inner {inner}, {inner_len} bytes{flags}",
                    record.frame, record.time, record.src, record.dst,
                )?;
            }
            Payload::Malformed { error_kind, error } => writeln!(
                out,
                "#{} {:.6} {} -> {} MALFORMED ({error_kind}): {error}{flags}",
                record.frame, record.time, record.src, record.dst,
            )?,
        }
    }
    let flagged = records.iter().filter(|r| r.is_bad()).count();
    writeln!(out, "{} WCCP frames, {flagged} flagged", records.len())
}

/// Reads a capture, keeping the typed error for the exit code.
pub fn read_capture(bytes: &[u8]) -> Result<Capture<'_>, CaptureError> {
    capture::read(bytes)
}
