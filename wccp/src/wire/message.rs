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
/// present (its list of "contains ..." expert items, which follows the drafts save one).
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
        // Wireshark also notes an Assignment Info in an I-See-You, but draft-01 (5.2) lists
        // it there ("Assignment Info or Assignment Map"), so a router may send it.
        MessageType::ISeeYou => (
            &[SECURITY_INFO, SERVICE_INFO, ROUTER_ID_INFO, RTR_VIEW_INFO],
            &[WC_ID_INFO, WC_VIEW_INFO, QUERY_INFO, ALT_ASSIGNMENT_MAP],
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

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::{
        md5_sign, md5_verify, Capability, ForwardingMethods, RouterIdElement, ServiceFlags,
        WebCacheIdentity, WebCacheIdentityInfo, WebCacheViewInfo,
    };

    /// A Here-I-Am as Squid 5.7 sends it in hash mode (dynamic service 90, one router).
    fn here_i_am_bytes() -> Vec<u8> {
        let mut b = vec![
            0, 0, 0, 10, 2, 0, 0, 124, // header: Here-I-Am, v2, 124 bytes
            0, 0, 0, 4, 0, 0, 0, 0, // security none
            0, 1, 0, 24, 1, 90, 240, 6, 0, 0, 0, 0x12, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, // service
            0, 3, 0, 44, 10, 0, 0, 2, 0, 0, 0, 0, // identity, hash form
        ];
        b.extend([0u8; 32]);
        b.extend([0x27, 0x10, 0, 0]); // weight 10000
        b.extend([
            0, 5, 0, 24, 0, 0, 0, 1, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 10, 0, 0,
            2, // view
            0, 8, 0, 8, 0, 1, 0, 4, 0, 0, 0, 1, // capabilities: forwarding GRE
        ]);
        b
    }

    fn here_i_am() -> Message {
        let engine = Address::V4(Ipv4Addr::new(10, 0, 0, 2));
        Message {
            version: Version::V2,
            message_type: MessageType::HereIAm,
            components: vec![
                Component::Security(SecurityInfo::None),
                Component::Service(ServiceInfo::dynamic(
                    90,
                    240,
                    6,
                    ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED,
                    &[80],
                )),
                Component::WebCacheIdentity(WebCacheIdentityInfo {
                    identity: WebCacheIdentity::hash(engine, 10000),
                }),
                Component::WebCacheView(WebCacheViewInfo {
                    change_number: 1,
                    routers: vec![RouterIdElement {
                        address: Ipv4Addr::new(10, 0, 0, 1).into(),
                        receive_id: 0,
                    }],
                    caches: vec![engine],
                }),
                Component::Capabilities(CapabilitiesInfo {
                    capabilities: vec![Capability::ForwardingMethods(ForwardingMethods::GRE)],
                }),
            ],
        }
    }

    #[test]
    fn parse_emit() {
        let b = here_i_am_bytes();
        assert_eq!(b.len(), 132);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m, here_i_am());
        assert_eq!(m.buffer_len(), b.len());
        assert_eq!(m.to_bytes().unwrap(), b);
        assert_eq!(m.address_mode(), AddressMode::Ipv4);
        m.check_components().unwrap();
        m.check_addresses().unwrap();
        assert_eq!(m.unknown_kinds().count(), 0);
        assert_eq!(m.service().unwrap().service_id, 90);
        assert!(m.security().is_some());
    }

    #[test]
    fn header_errors() {
        let b = here_i_am_bytes();
        let mut v = b.clone();
        v[5] = 2;
        assert_eq!(
            Message::parse(&v).unwrap_err(),
            Error::UnknownVersion { version: 0x0202 }
        );
        let mut t = b.clone();
        t[3] = 7;
        assert_eq!(
            Message::parse(&t).unwrap_err(),
            Error::UnknownMessageType { message_type: 7 }
        );
        assert_eq!(Message::parse(&b[..131]).unwrap_err().kind(), "truncated");
        assert_eq!(Message::parse(&b[..5]).unwrap_err().kind(), "truncated");
        let mut long = b.clone();
        long.push(0);
        assert_eq!(
            Message::parse(&long).unwrap_err(),
            Error::LengthMismatch {
                what: "message",
                offset: 0,
                declared: 124,
                actual: 125
            }
        );
        // A length that stops inside a component header.
        let mut cut = b[..130].to_vec();
        cut[7] = 122;
        assert_eq!(Message::parse(&cut).unwrap_err().kind(), "truncated");
    }

    #[test]
    fn component_errors_carry_offsets() {
        let mut b = here_i_am_bytes();
        b[20] = 9; // service type 9
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            Error::BadValue {
                what: "Service Info: service type",
                offset: 20,
                value: 9
            }
        );
    }

    #[test]
    fn duplicate_component_is_refused() {
        let mut b = here_i_am_bytes();
        b.extend([0, 0, 0, 4, 0, 0, 0, 0]);
        b[7] += 8;
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            Error::DuplicateComponent {
                what: "Security Info",
                component: 0,
                offset: 132
            }
        );
        let mut m = here_i_am();
        m.components.push(Component::Security(SecurityInfo::None));
        assert_eq!(m.to_bytes().unwrap_err().kind(), "duplicate_component");
    }

    #[test]
    fn unknown_components_are_kept_in_place() {
        let mut b = here_i_am_bytes();
        let unknown = [0, 99, 0, 3, 1, 2, 3, 0, 99, 0, 0];
        b.splice(16..16, unknown);
        b[7] += unknown.len() as u8;
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.unknown_kinds().collect::<Vec<_>>(), vec![99, 99]);
        assert_eq!(
            m.components[1],
            Component::Unknown {
                kind: 99,
                body: vec![1, 2, 3]
            }
        );
        assert_eq!(m.to_bytes().unwrap(), b);
        let mut bad = m.clone();
        bad.components[1] = Component::Unknown {
            kind: 1,
            body: vec![],
        };
        assert_eq!(bad.to_bytes().unwrap_err().kind(), "bad_value");
    }

    #[test]
    fn required_components() {
        let mut m = here_i_am();
        m.components.remove(3);
        assert_eq!(
            m.check_components().unwrap_err(),
            Error::MissingComponent {
                message: "Here-I-Am",
                what: "Web-Cache View Info",
                component: 5
            }
        );
        let mut m = here_i_am();
        m.components
            .push(Component::RouterQuery(crate::wire::RouterQueryInfo {
                router: RouterIdElement {
                    address: Address::UNSPECIFIED,
                    receive_id: 1,
                },
                sent_to: Address::UNSPECIFIED,
                target: Address::UNSPECIFIED,
            }));
        assert_eq!(
            m.check_components().unwrap_err().kind(),
            "unexpected_component"
        );
        let ra = Message {
            version: Version::V2,
            message_type: MessageType::RedirectAssign,
            components: vec![
                Component::Security(SecurityInfo::None),
                Component::Service(ServiceInfo::web_cache()),
            ],
        };
        assert_eq!(
            ra.check_components().unwrap_err().kind(),
            "missing_component"
        );
    }

    #[test]
    fn address_table_and_forms() {
        let table = AddressTable::V6(vec![
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ]);
        let m = Message {
            version: Version::V2Rev1,
            message_type: MessageType::RemovalQuery,
            components: vec![
                Component::Security(SecurityInfo::None),
                Component::Service(ServiceInfo::web_cache()),
                Component::RouterQuery(crate::wire::RouterQueryInfo {
                    router: RouterIdElement {
                        address: Address::index(1),
                        receive_id: 4,
                    },
                    sent_to: Address::index(1),
                    target: Address::index(2),
                }),
                Component::AddressTable(table),
            ],
        };
        let b = m.to_bytes().unwrap();
        let p = Message::parse(&b).unwrap();
        assert_eq!(p, m);
        assert_eq!(p.address_mode(), AddressMode::Indexed);
        assert_eq!(
            p.resolve(&Address::index(2)).unwrap(),
            "2001:db8::2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            p.resolve(&Address::index(0)).unwrap(),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
        assert_eq!(
            p.resolve(&Address::index(3)).unwrap_err(),
            Error::AddressIndex {
                index: 3,
                table_len: 2
            }
        );
        p.check_addresses().unwrap();
        p.check_components().unwrap();

        let mut mixed = m.clone();
        if let Component::RouterQuery(q) = &mut mixed.components[2] {
            q.target = Address::UNSPECIFIED;
        }
        assert_eq!(
            mixed.to_bytes().unwrap_err(),
            Error::AddressFormMismatch {
                what: "Router Query Info: target",
                expected: "an address-table index",
                found: "an IPv4 address"
            }
        );
        let mut no_table = m.clone();
        no_table.components.pop();
        assert_eq!(
            no_table.to_bytes().unwrap_err().kind(),
            "address_form_mismatch"
        );
        assert_eq!(
            no_table.resolve(&Address::index(1)).unwrap_err().kind(),
            "address_index"
        );
    }

    #[test]
    fn md5_sign_and_verify() {
        let mut m = here_i_am();
        m.components[0] = Component::Security(SecurityInfo::md5_unsigned());
        let signed = m.to_bytes_signed(b"secret").unwrap();
        md5_verify(&signed, b"secret").unwrap();
        assert!(crate::wire::md5_is_valid(&signed, b"secret"));
        assert_eq!(
            md5_verify(&signed, b"Secret").unwrap_err(),
            Error::Md5Mismatch
        );
        assert_eq!(md5_verify(&signed, b"").unwrap_err(), Error::Md5Mismatch);
        // Passwords are cut to 8 bytes, as Squid cuts them.
        let long = m.to_bytes_signed(b"12345678").unwrap();
        md5_verify(&long, b"123456789").unwrap();
        // Every byte counts, the header's included.
        for i in 0..signed.len() {
            let mut t = signed.clone();
            t[i] ^= 0x01;
            assert!(md5_verify(&t, b"secret").is_err(), "byte {i}");
        }
        // The digest is MD5(password padded to 8 || message with the digest zeroed).
        let mut zeroed = signed.clone();
        zeroed[16..32].fill(0);
        let mut h = <md5::Md5 as md5::Digest>::new();
        md5::Digest::update(&mut h, b"secret\0\0");
        md5::Digest::update(&mut h, &zeroed);
        let want: [u8; 16] = md5::Digest::finalize(h).into();
        assert_eq!(&signed[16..32], &want);
        // The parsed message carries the digest, and re-emitting keeps it.
        let p = Message::parse(&signed).unwrap();
        assert_eq!(p.to_bytes().unwrap(), signed);
    }

    #[test]
    fn md5_needs_md5_security() {
        let mut plain = here_i_am_bytes();
        assert_eq!(
            md5_sign(&mut plain, b"x").unwrap_err(),
            Error::SecurityOptionMismatch {
                expected: 1,
                found: 0
            }
        );
        let mut m = here_i_am();
        m.components.remove(0);
        let mut b = m.to_bytes().unwrap();
        assert_eq!(md5_sign(&mut b, b"x").unwrap_err(), Error::NoSecurity);
        assert_eq!(md5_verify(&b[..4], b"x").unwrap_err().kind(), "truncated");
    }

    #[test]
    fn json() {
        let j = serde_json::to_value(here_i_am()).unwrap();
        assert_eq!(j["message_type"], "HereIAm");
        assert_eq!(
            j["components"][2]["WebCacheIdentity"]["identity"]["address"],
            "10.0.0.2"
        );
        let back: Message = serde_json::from_value(j).unwrap();
        assert_eq!(back, here_i_am());
    }
}
