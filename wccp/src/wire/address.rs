//! The two ways a WCCP element names a host.
//!
//! Every address field on the wire is 32 bits. In v2 it holds an IPv4 address. Revision 1
//! added the Address Table component (type 17) so that IPv6 fits the same layouts: when a
//! message carries a table, every address field holds a 1-based index into it (16 reserved
//! bits, then a 16-bit index; index 0 means "no address"). Wireshark decides the form by the
//! presence of the table, whatever the header's version says, and so do we.
//!
//! A representation keeps the form it was read in ([`Address::V4`] or [`Address::Index`]);
//! [`super::Message::resolve`] turns an index into the table's address, because only the
//! whole message knows the table.

use core::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Error;

/// How the address fields of one message are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AddressMode {
    /// No Address Table: fields are IPv4 addresses (v2, and v2rev1 without a table).
    #[default]
    Ipv4,
    /// The message has an Address Table: fields are indexes into it.
    Indexed,
}

/// One address field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Address {
    /// An IPv4 address, in a message without an Address Table.
    V4(Ipv4Addr),
    /// A 1-based index into the message's Address Table (0: no address).
    Index {
        /// The index.
        index: u16,
    },
}

impl Address {
    /// The unspecified IPv4 address, which fields such as "Sent To" use when there is none.
    pub const UNSPECIFIED: Address = Address::V4(Ipv4Addr::UNSPECIFIED);

    /// An index into the Address Table.
    pub const fn index(index: u16) -> Address {
        Address::Index { index }
    }

    /// The IPv4 address, when this field holds one.
    pub const fn ipv4(&self) -> Option<Ipv4Addr> {
        match self {
            Address::V4(a) => Some(*a),
            Address::Index { .. } => None,
        }
    }

    /// The form this field is in.
    pub const fn mode(&self) -> AddressMode {
        match self {
            Address::V4(_) => AddressMode::Ipv4,
            Address::Index { .. } => AddressMode::Indexed,
        }
    }

    /// The 32-bit wire value (mask/value sets use it as a number).
    pub fn to_field(&self) -> u32 {
        match self {
            Address::V4(a) => u32::from(*a),
            Address::Index { index } => u32::from(*index),
        }
    }

    /// Reads a wire value in `mode`; an index with its reserved high half set is refused, as
    /// Wireshark refuses it.
    pub(crate) fn from_field(
        raw: u32,
        mode: AddressMode,
        what: &'static str,
        offset: usize,
    ) -> Result<Address, Error> {
        match mode {
            AddressMode::Ipv4 => Ok(Address::V4(Ipv4Addr::from(raw))),
            AddressMode::Indexed => {
                u16::try_from(raw)
                    .map(Address::index)
                    .map_err(|_| Error::BadValue {
                        what,
                        offset,
                        value: raw,
                    })
            }
        }
    }

    pub(crate) fn form_name(mode: AddressMode) -> &'static str {
        match mode {
            AddressMode::Ipv4 => "an IPv4 address",
            AddressMode::Indexed => "an address-table index",
        }
    }
}

impl From<Ipv4Addr> for Address {
    fn from(a: Ipv4Addr) -> Self {
        Address::V4(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::V4(a) => a.fmt(f),
            Address::Index { index } => write!(f, "#{index}"),
        }
    }
}

/// Something that holds address fields, so a message can check that they all use one form
/// and resolve them against its table.
pub(crate) trait VisitAddresses {
    /// Calls `f` with every address field, in wire order, and the part holding it.
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address));
}

impl<T: VisitAddresses> VisitAddresses for Vec<T> {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        for item in self {
            item.visit_addresses(f);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn index_with_reserved_bits_is_refused() {
        let e = Address::from_field(0x0001_0002, AddressMode::Indexed, "x", 7).unwrap_err();
        assert_eq!(e.kind(), "bad_value");
        assert_eq!(
            Address::from_field(2, AddressMode::Indexed, "x", 7).unwrap(),
            Address::index(2)
        );
    }

    #[test]
    fn json_forms() {
        let v4 = Address::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(serde_json::to_string(&v4).unwrap(), "\"10.0.0.1\"");
        let ix = Address::index(3);
        assert_eq!(serde_json::to_string(&ix).unwrap(), "{\"index\":3}");
        let back: Address = serde_json::from_str("{\"index\":3}").unwrap();
        assert_eq!(back, ix);
        let back: Address = serde_json::from_str("\"10.0.0.1\"").unwrap();
        assert_eq!(back, v4);
    }
}
