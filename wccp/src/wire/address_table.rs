//! Address Table (component 17, revision 1): the addresses that every address field of the
//! message indexes, which is how revision 1 carries IPv6 in 32-bit fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::Error;

/// Address family numbers of the table.
pub mod family {
    /// IPv4, 4-byte addresses.
    pub const IPV4: u16 = 1;
    /// IPv6, 16-byte addresses.
    pub const IPV6: u16 = 2;
}

/// The Address Table component: one family, its addresses in index order (index 1 first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressTable {
    /// Family 1.
    V4(Vec<Ipv4Addr>),
    /// Family 2.
    V6(Vec<Ipv6Addr>),
}

impl AddressTable {
    /// Entries in the table.
    pub fn len(&self) -> usize {
        match self {
            AddressTable::V4(v) => v.len(),
            AddressTable::V6(v) => v.len(),
        }
    }

    /// True when the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address at 1-based `index` (0 and indexes past the end have none).
    pub fn get(&self, index: u16) -> Option<IpAddr> {
        let i = usize::from(index).checked_sub(1)?;
        match self {
            AddressTable::V4(v) => v.get(i).map(|a| IpAddr::V4(*a)),
            AddressTable::V6(v) => v.get(i).map(|a| IpAddr::V6(*a)),
        }
    }

    /// The 1-based index of `addr`, for building messages.
    pub fn index_of(&self, addr: IpAddr) -> Option<Address> {
        let pos = match (self, addr) {
            (AddressTable::V4(v), IpAddr::V4(a)) => v.iter().position(|x| *x == a),
            (AddressTable::V6(v), IpAddr::V6(a)) => v.iter().position(|x| *x == a),
            _ => None,
        }?;
        u16::try_from(pos + 1).ok().map(Address::index)
    }

    fn family(&self) -> u16 {
        match self {
            AddressTable::V4(_) => family::IPV4,
            AddressTable::V6(_) => family::IPV6,
        }
    }

    fn address_len(&self) -> usize {
        match self {
            AddressTable::V4(_) => 4,
            AddressTable::V6(_) => 16,
        }
    }
}

impl ComponentBody for AddressTable {
    const KIND: u16 = kind::ADDRESS_TABLE;
    const NAME: &'static str = "Address Table";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let at = r.offset();
        let fam = r.u16("Address Table: family")?;
        let len_at = r.offset();
        let alen = r.u16("Address Table: address length")?;
        let expected = match fam {
            family::IPV4 => 4,
            family::IPV6 => 16,
            other => {
                return Err(Error::BadValue {
                    what: "Address Table: family",
                    offset: at,
                    value: u32::from(other),
                })
            }
        };
        if alen != expected {
            return Err(Error::BadValue {
                what: "Address Table: address length",
                offset: len_at,
                value: u32::from(alen),
            });
        }
        let n = r.count("Address Table: addresses", usize::from(alen))?;
        Ok(if fam == family::IPV4 {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Ipv4Addr::from(r.array::<4>("Address Table: address")?));
            }
            AddressTable::V4(v)
        } else {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Ipv6Addr::from(r.array::<16>("Address Table: address")?));
            }
            AddressTable::V6(v)
        })
    }

    fn body_len(&self) -> usize {
        8 + self.address_len() * self.len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u16(self.family());
        w.len16(self.address_len());
        w.len32(self.len());
        match self {
            AddressTable::V4(v) => v.iter().for_each(|a| w.bytes(&a.octets())),
            AddressTable::V6(v) => v.iter().for_each(|a| w.bytes(&a.octets())),
        }
    }
}

impl VisitAddresses for AddressTable {
    fn visit_addresses(&self, _: &mut dyn FnMut(&'static str, &Address)) {}
}

component_api!(AddressTable);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;

    fn bytes() -> Vec<u8> {
        let mut b = vec![0, 17, 0, 40, 0, 2, 0, 16, 0, 0, 0, 2];
        b.extend(0u8..32);
        b
    }

    #[test]
    fn parse_emit() {
        let b = bytes();
        let t = AddressTable::parse(&b, AddressMode::Ipv4).unwrap();
        let AddressTable::V6(v) = &t else { panic!() };
        assert_eq!(v[1].octets()[0], 16);
        assert_eq!(
            t.get(1),
            Some(IpAddr::V6("1:203:405:607:809:a0b:c0d:e0f".parse().unwrap()))
        );
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(3), None);
        assert_eq!(t.index_of(t.get(2).unwrap()), Some(Address::index(2)));
        let mut out = vec![0; b.len()];
        t.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn negative() {
        let mut b = bytes();
        b[5] = 3;
        assert_eq!(
            AddressTable::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        let mut b = bytes();
        b[7] = 4;
        assert_eq!(
            AddressTable::parse(&b, AddressMode::Ipv4).unwrap_err(),
            Error::BadValue {
                what: "Address Table: address length",
                offset: 6,
                value: 4
            }
        );
        let mut b = bytes();
        b[11] = 3;
        assert_eq!(
            AddressTable::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
        let mut b = bytes();
        b[11] = 1;
        assert_eq!(
            AddressTable::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "length_mismatch"
        );
    }
}
