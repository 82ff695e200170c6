//! Router Identity Info (component 2, draft-01 section 5.6.3): who sent an I-See-You and to
//! which engines it is addressed.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::{emit_addresses, parse_addresses, RouterIdElement};
use super::Error;

/// The Router Identity Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterIdentityInfo {
    /// The router's address and receive id.
    pub router: RouterIdElement,
    /// The address the engine sent its Here-I-Am to (the group address when multicast).
    pub sent_to: Address,
    /// The engines this message is for; an engine not listed discards it.
    pub received_from: Vec<Address>,
}

impl ComponentBody for RouterIdentityInfo {
    const KIND: u16 = kind::ROUTER_ID_INFO;
    const NAME: &'static str = "Router Identity Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(RouterIdentityInfo {
            router: RouterIdElement::parse(r)?,
            sent_to: r.address("Router Identity Info: sent to")?,
            received_from: parse_addresses(r, "Router Identity Info: received from")?,
        })
    }

    fn body_len(&self) -> usize {
        RouterIdElement::LEN + 4 + 4 + 4 * self.received_from.len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        self.router.emit(w);
        w.address(&self.sent_to);
        emit_addresses(w, &self.received_from);
    }
}

impl VisitAddresses for RouterIdentityInfo {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.router.visit_addresses(f);
        f("Router Identity Info: sent to", &self.sent_to);
        for a in &self.received_from {
            f("Router Identity Info: received from", a);
        }
    }
}

component_api!(RouterIdentityInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    static BYTES: [u8; 28] = [
        0, 2, 0, 24, // type 2, length 24
        10, 0, 0, 1, 0, 0, 0, 7, // router 10.0.0.1, receive id 7
        10, 0, 0, 1, // sent to
        0, 0, 0, 2, 10, 0, 0, 2, 10, 0, 0, 3, // two engines
    ];

    fn repr() -> RouterIdentityInfo {
        RouterIdentityInfo {
            router: RouterIdElement {
                address: Ipv4Addr::new(10, 0, 0, 1).into(),
                receive_id: 7,
            },
            sent_to: Ipv4Addr::new(10, 0, 0, 1).into(),
            received_from: vec![
                Ipv4Addr::new(10, 0, 0, 2).into(),
                Ipv4Addr::new(10, 0, 0, 3).into(),
            ],
        }
    }

    #[test]
    fn parse() {
        assert_eq!(
            RouterIdentityInfo::parse(&BYTES, AddressMode::Ipv4).unwrap(),
            repr()
        );
    }

    #[test]
    fn emit() {
        let mut buf = [0xa5; 28];
        assert_eq!(repr().emit(&mut buf).unwrap(), 28);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn indexed_form() {
        let mut b = BYTES;
        b[4..8].copy_from_slice(&[0, 0, 0, 1]);
        b[12..16].copy_from_slice(&[0, 0, 0, 1]);
        b[20..24].copy_from_slice(&[0, 0, 0, 2]);
        b[24..28].copy_from_slice(&[0, 0, 0, 3]);
        let r = RouterIdentityInfo::parse(&b, AddressMode::Indexed).unwrap();
        assert_eq!(r.router.address, Address::index(1));
        assert_eq!(r.received_from, vec![Address::index(2), Address::index(3)]);
        b[24] = 1;
        assert_eq!(
            RouterIdentityInfo::parse(&b, AddressMode::Indexed).unwrap_err(),
            Error::BadValue {
                what: "Router Identity Info: received from",
                offset: 24,
                value: 0x0100_0003
            }
        );
    }

    #[test]
    fn overflowing_count() {
        let mut b = BYTES;
        b[16..20].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let e = RouterIdentityInfo::parse(&b, AddressMode::Ipv4).unwrap_err();
        assert_eq!(
            e,
            Error::CountTooLarge {
                what: "Router Identity Info: received from",
                offset: 16,
                count: u32::MAX,
                available: 8
            }
        );
        b[16..20].copy_from_slice(&[0, 0, 0, 3]);
        assert_eq!(
            RouterIdentityInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
        b[16..20].copy_from_slice(&[0, 0, 0, 1]);
        assert_eq!(
            RouterIdentityInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "length_mismatch"
        );
    }
}
