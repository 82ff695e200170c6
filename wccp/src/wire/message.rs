//! A whole WCCP message: header and components, parsed and emitted byte-exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::address::{Address, AddressMode, VisitAddresses};
use super::codec::Writer;
use super::component::{component_name, kind, Component, COMPONENT_HEADER_LEN};
use super::header::{MessagePacket, MessageType, Version, HEADER_LEN};
use super::{AddressTable, CapabilitiesInfo, Error, RouterIdentityInfo, SecurityInfo, ServiceInfo};

/// The largest message body: the header's length field is 16 bits.
pub const MAX_MESSAGE_BODY: usize = u16::MAX as usize;

/// A WCCP v2 message: the header's version and type, and the components in wire order.
///
/// Order is kept as received, and unknown components are kept, so that
/// `emit(parse(bytes)) == bytes` for every message `parse` accepts; the header's length is
/// computed on emit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The header's version.
    pub version: Version,
    /// The header's message type.
    pub message_type: MessageType,
    /// The components, in wire order.
    pub components: Vec<Component>,
}

/// For each message type: components the drafts require, and components Wireshark flags when
/// present (its list of "contains ..." expert items, which follows the drafts).
fn rules(t: MessageType) -> (&'static [u16], &'static [u16]) {
    use kind::*;
    match t {
        MessageType::HereIAm => (
            &[SECURITY_INFO, SERVICE_INFO, WC_ID_INFO, WC_VIEW_INFO],
            &[
                ROUTER_ID_INFO,
                RTR_VIEW_INFO,
                REDIRECT_ASSIGNMENT,
                QUERY_INFO,
                ALT_ASSIGNMENT,
                ASSIGN_MAP,
                ALT_ASSIGNMENT_MAP,
            ],
        ),
        MessageType::ISeeYou => (
            &[SECURITY_INFO, SERVICE_INFO, ROUTER_ID_INFO, RTR_VIEW_INFO],
            &[
                WC_ID_INFO,
                WC_VIEW_INFO,
                REDIRECT_ASSIGNMENT,
                QUERY_INFO,
                ALT_ASSIGNMENT_MAP,
            ],
        ),
        MessageType::RedirectAssign => (
            &[SECURITY_INFO, SERVICE_INFO],
            &[
                ROUTER_ID_INFO,
                WC_ID_INFO,
                RTR_VIEW_INFO,
                WC_VIEW_INFO,
                QUERY_INFO,
                CAPABILITIES_INFO,
                COMMAND_EXTENSION,
            ],
        ),
        MessageType::RemovalQuery => (
            &[SECURITY_INFO, SERVICE_INFO, QUERY_INFO],
            &[
                ROUTER_ID_INFO,
                WC_ID_INFO,
                RTR_VIEW_INFO,
                WC_VIEW_INFO,
                REDIRECT_ASSIGNMENT,
                CAPABILITIES_INFO,
                ALT_ASSIGNMENT,
                ASSIGN_MAP,
                COMMAND_EXTENSION,
                ALT_ASSIGNMENT_MAP,
            ],
        ),
    }
}

/// Finds whether a message carries an Address Table, tolerating damage as Wireshark does
/// (the main pass reports it): the table decides how every address field reads, wherever
/// in the message it sits.
fn scan_mode(payload: &[u8]) -> AddressMode {
    let mut at = 0usize;
    while let Some(head) = payload.get(at..at + COMPONENT_HEADER_LEN) {
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let next = at + COMPONENT_HEADER_LEN + len;
        if next > payload.len() {
            break;
        }
        if kind == kind::ADDRESS_TABLE {
            return AddressMode::Indexed;
        }
        at = next;
    }
    AddressMode::Ipv4
}

impl Message {
    /// A message with no components yet.
    pub fn new(version: Version, message_type: MessageType) -> Message {
        Message {
            version,
            message_type,
            components: Vec::new(),
        }
    }

    /// Parses a message that fills `bytes` exactly (a UDP payload).
    ///
    /// Unknown component types are kept ([`Message::unknown_kinds`] lists them for a
    /// counter); a known component that is malformed, or repeated, fails the whole message.
    /// Required components are not checked here ([`Message::check_components`] does), so
    /// that a decoder can still show an incomplete message.
    pub fn parse(bytes: &[u8]) -> Result<Message, Error> {
        let packet = MessagePacket::new_checked(bytes)?;
        let version = Version::from_u16(packet.version()).ok_or(Error::UnknownVersion {
            version: packet.version(),
        })?;
        let message_type =
            MessageType::from_u32(packet.message_type()).ok_or(Error::UnknownMessageType {
                message_type: packet.message_type(),
            })?;
        if bytes.len() != packet.total_len() {
            return Err(Error::LengthMismatch {
                what: "message",
                offset: 0,
                declared: usize::from(packet.length()),
                actual: bytes.len() - HEADER_LEN,
            });
        }
        let mode = scan_mode(packet.payload());
        let mut components = Vec::new();
        let mut seen: u32 = 0;
        for item in packet.components() {
            let (offset, comp) = item?;
            let k = comp.kind();
            if kind::is_known(k) {
                let bit = 1u32 << k;
                if seen & bit != 0 {
                    return Err(Error::DuplicateComponent {
                        what: component_name(k),
                        component: k,
                        offset,
                    });
                }
                seen |= bit;
            }
            components.push(Component::parse_kind(
                k,
                comp.body(),
                offset + COMPONENT_HEADER_LEN,
                mode,
            )?);
        }
        Ok(Message {
            version,
            message_type,
            components,
        })
    }

    /// Bytes [`Message::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self
                .components
                .iter()
                .map(Component::buffer_len)
                .sum::<usize>()
    }

    /// How this message's address fields read: indexes when it carries an Address Table.
    pub fn address_mode(&self) -> AddressMode {
        if self.address_table().is_some() {
            AddressMode::Indexed
        } else {
            AddressMode::Ipv4
        }
    }

    /// Refuses a message whose bytes would not parse back to it: a component too long for
    /// its length field, a repeated component, an address in the wrong form for the message.
    pub fn check(&self) -> Result<(), Error> {
        let mut seen: u32 = 0;
        for c in &self.components {
            c.check()?;
            let k = c.kind();
            if kind::is_known(k) {
                let bit = 1u32 << k;
                if seen & bit != 0 {
                    return Err(Error::DuplicateComponent {
                        what: component_name(k),
                        component: k,
                        offset: 0,
                    });
                }
                seen |= bit;
            }
        }
        let body = self.buffer_len() - HEADER_LEN;
        if body > MAX_MESSAGE_BODY {
            return Err(Error::TooLong {
                what: "message",
                len: body,
                max: MAX_MESSAGE_BODY,
            });
        }
        let expected = self.address_mode();
        let mut bad = None;
        self.visit_addresses(&mut |what, a| {
            if bad.is_none() && a.mode() != expected {
                bad = Some(Error::AddressFormMismatch {
                    what,
                    expected: Address::form_name(expected),
                    found: Address::form_name(a.mode()),
                });
            }
        });
        bad.map_or(Ok(()), Err)
    }

    /// Writes the message at the start of `buf`, returning the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let total = self.buffer_len();
        if buf.len() < total {
            return Err(Error::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        }
        let mut w = Writer::new(&mut buf[..total]);
        w.u32(self.message_type.to_u32());
        w.u16(self.version.to_u16());
        w.len16(total - HEADER_LEN);
        for c in &self.components {
            c.emit_into(&mut w);
        }
        debug_assert_eq!(w.position(), total);
        Ok(total)
    }

    /// The message as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut buf)?;
        Ok(buf)
    }

    /// The message as a new buffer with its MD5 digest filled in (the Security Info component
    /// must be the MD5 form; its digest field is overwritten).
    pub fn to_bytes_signed(&self, password: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = self.to_bytes()?;
        super::security::md5_sign(&mut buf, password)?;
        Ok(buf)
    }

    /// Checks the components against the drafts' list for this message type: each required
    /// one present, none that Wireshark reports as out of place.
    pub fn check_components(&self) -> Result<(), Error> {
        let (required, forbidden) = rules(self.message_type);
        let has = |k: u16| self.components.iter().any(|c| c.kind() == k);
        if let Some(&k) = required.iter().find(|&&k| !has(k)) {
            return Err(Error::MissingComponent {
                message: self.message_type.name(),
                what: component_name(k),
                component: k,
            });
        }
        if self.message_type == MessageType::RedirectAssign
            && ![
                kind::REDIRECT_ASSIGNMENT,
                kind::ALT_ASSIGNMENT,
                kind::ASSIGN_MAP,
                kind::ALT_ASSIGNMENT_MAP,
            ]
            .iter()
            .any(|&k| has(k))
        {
            return Err(Error::MissingComponent {
                message: self.message_type.name(),
                what: component_name(kind::REDIRECT_ASSIGNMENT),
                component: kind::REDIRECT_ASSIGNMENT,
            });
        }
        if let Some(&k) = forbidden.iter().find(|&&k| has(k)) {
            return Err(Error::UnexpectedComponent {
                message: self.message_type.name(),
                what: component_name(k),
                component: k,
            });
        }
        Ok(())
    }

    /// Types of the components kept as [`Component::Unknown`], for a counter.
    pub fn unknown_kinds(&self) -> impl Iterator<Item = u16> + '_ {
        self.components.iter().filter_map(|c| match c {
            Component::Unknown { kind, .. } => Some(*kind),
            _ => None,
        })
    }

    /// The first component of type `kind`.
    pub fn component(&self, kind: u16) -> Option<&Component> {
        self.components.iter().find(|c| c.kind() == kind)
    }

    /// The Security Info component.
    pub fn security(&self) -> Option<&SecurityInfo> {
        self.components.iter().find_map(|c| match c {
            Component::Security(v) => Some(v),
            _ => None,
        })
    }

    /// The Service Info component.
    pub fn service(&self) -> Option<&ServiceInfo> {
        self.components.iter().find_map(|c| match c {
            Component::Service(v) => Some(v),
            _ => None,
        })
    }

    /// The Router Identity Info component.
    pub fn router_identity(&self) -> Option<&RouterIdentityInfo> {
        self.components.iter().find_map(|c| match c {
            Component::RouterIdentity(v) => Some(v),
            _ => None,
        })
    }

    /// The Capabilities Info component.
    pub fn capabilities(&self) -> Option<&CapabilitiesInfo> {
        self.components.iter().find_map(|c| match c {
            Component::Capabilities(v) => Some(v),
            _ => None,
        })
    }

    /// The Address Table component (revision 1).
    pub fn address_table(&self) -> Option<&AddressTable> {
        self.components.iter().find_map(|c| match c {
            Component::AddressTable(v) => Some(v),
            _ => None,
        })
    }

    /// The host an address field names: itself for an IPv4 field; for an index, the table's
    /// entry (index 0 is the unspecified address of the table's family).
    pub fn resolve(&self, address: &Address) -> Result<IpAddr, Error> {
        match (address, self.address_table()) {
            (Address::V4(a), _) => Ok(IpAddr::V4(*a)),
            (Address::Index { index }, Some(table)) => {
                if *index == 0 {
                    return Ok(match table {
                        AddressTable::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        AddressTable::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    });
                }
                table.get(*index).ok_or(Error::AddressIndex {
                    index: u32::from(*index),
                    table_len: table.len(),
                })
            }
            (Address::Index { index }, None) => Err(Error::AddressIndex {
                index: u32::from(*index),
                table_len: 0,
            }),
        }
    }

    /// Checks that every address index falls inside the Address Table.
    pub fn check_addresses(&self) -> Result<(), Error> {
        let mut bad = None;
        self.visit_addresses(&mut |_, a| {
            if bad.is_none() {
                if let Err(e) = self.resolve(a) {
                    bad = Some(e);
                }
            }
        });
        bad.map_or(Ok(()), Err)
    }
}

impl VisitAddresses for Message {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.components.visit_addresses(f);
    }
}
