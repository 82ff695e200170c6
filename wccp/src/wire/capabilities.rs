//! Capabilities Info (component 8, draft-01 section 5.6.9): the forwarding, assignment and
//! return methods a router offers (as bit masks) or an engine picks, and revision 1's timer
//! capabilities.
//!
//! A router advertises every method it supports: Squid leaves the group for good when a
//! router's mask lacks its configured method (see ground-notes).
//!
//! The transmit_t (4) and timer_scale (5) values sit in the element's 4-byte value like
//! every other capability. Wireshark 4.0 reads them from the element's type and length
//! fields instead (a dissector bug), so its display of those two is wrong, not our bytes.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{wire_flags, Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::Error;

/// Capability element types.
pub mod capability_type {
    /// 1: forwarding methods.
    pub const FORWARDING_METHOD: u16 = 1;
    /// 2: assignment methods.
    pub const ASSIGNMENT_METHOD: u16 = 2;
    /// 3: packet return methods.
    pub const PACKET_RETURN_METHOD: u16 = 3;
    /// 4: message interval (revision 1).
    pub const TRANSMIT_T: u16 = 4;
    /// 5: timeout scales (revision 1).
    pub const TIMER_SCALE: u16 = 5;
}

wire_flags! {
    /// How a router may send redirected packets to an engine.
    pub struct ForwardingMethods(u32) {
        /// GRE with the WCCP redirect header (the default).
        const GRE = 0x1, "gre";
        /// Layer-2 destination rewrite.
        const L2 = 0x2, "l2";
    }
}

wire_flags! {
    /// How the designated engine may distribute traffic.
    pub struct AssignmentMethods(u32) {
        /// 256 hash buckets (the default).
        const HASH = 0x1, "hash";
        /// Mask/value sets.
        const MASK = 0x2, "mask";
    }
}

wire_flags! {
    /// How an engine may return packets it declines.
    pub struct ReturnMethods(u32) {
        /// GRE back to the router (the default).
        const GRE = 0x1, "gre";
        /// Layer-2 rewrite.
        const L2 = 0x2, "l2";
    }
}

/// Message interval limits in milliseconds (type 4); an upper limit of 0 means the lower
/// limit is the one value accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransmitT {
    /// Upper limit, or 0 for a single value.
    pub upper_ms: u16,
    /// Lower limit, or the value.
    pub lower_ms: u16,
}

/// Timeout scale limits (type 5): with both upper limits 0, the lower ones are the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerScale {
    /// Timeout scale upper limit, or 0.
    pub timeout_upper: u8,
    /// Timeout scale lower limit, or the value.
    pub timeout_lower: u8,
    /// Redirect-assign timer scale upper limit, or 0.
    pub ra_upper: u8,
    /// Redirect-assign timer scale lower limit, or the value.
    pub ra_lower: u8,
}

/// One capability element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Type 1.
    ForwardingMethods(ForwardingMethods),
    /// Type 2.
    AssignmentMethods(AssignmentMethods),
    /// Type 3.
    ReturnMethods(ReturnMethods),
    /// Type 4.
    TransmitT(TransmitT),
    /// Type 5.
    TimerScale(TimerScale),
    /// Any other type (above 5), kept as bytes.
    Other {
        /// The type.
        kind: u16,
        /// The value.
        #[serde(with = "super::codec::hex")]
        value: Vec<u8>,
    },
}

impl Capability {
    /// The element type.
    pub fn kind(&self) -> u16 {
        match self {
            Capability::ForwardingMethods(_) => capability_type::FORWARDING_METHOD,
            Capability::AssignmentMethods(_) => capability_type::ASSIGNMENT_METHOD,
            Capability::ReturnMethods(_) => capability_type::PACKET_RETURN_METHOD,
            Capability::TransmitT(_) => capability_type::TRANSMIT_T,
            Capability::TimerScale(_) => capability_type::TIMER_SCALE,
            Capability::Other { kind, .. } => *kind,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            Capability::Other { value, .. } => value.len(),
            _ => 4,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let start = r.offset();
        let kind = r.u16("Capability Element: type")?;
        let len = usize::from(r.u16("Capability Element: length")?);
        let mut v = r.sub(len, "Capability Element: value")?;
        let c = match kind {
            1..=5 => {
                if len != 4 {
                    return Err(Error::LengthMismatch {
                        what: "Capability Element",
                        offset: start,
                        declared: len,
                        actual: 4,
                    });
                }
                match kind {
                    capability_type::FORWARDING_METHOD => {
                        Capability::ForwardingMethods(ForwardingMethods(v.u32("value")?))
                    }
                    capability_type::ASSIGNMENT_METHOD => {
                        Capability::AssignmentMethods(AssignmentMethods(v.u32("value")?))
                    }
                    capability_type::PACKET_RETURN_METHOD => {
                        Capability::ReturnMethods(ReturnMethods(v.u32("value")?))
                    }
                    capability_type::TRANSMIT_T => Capability::TransmitT(TransmitT {
                        upper_ms: v.u16("Transmit_t upper limit")?,
                        lower_ms: v.u16("Transmit_t lower limit")?,
                    }),
                    _ => Capability::TimerScale(TimerScale {
                        timeout_upper: v.u8("Timer scale: timeout upper")?,
                        timeout_lower: v.u8("Timer scale: timeout lower")?,
                        ra_upper: v.u8("Timer scale: RA upper")?,
                        ra_lower: v.u8("Timer scale: RA lower")?,
                    }),
                }
            }
            other => Capability::Other {
                kind: other,
                value: v.rest().to_vec(),
            },
        };
        Ok(c)
    }

    fn emit(&self, w: &mut Writer<'_>) {
        w.u16(self.kind());
        w.len16(self.value_len());
        match self {
            Capability::ForwardingMethods(m) => w.u32(m.bits()),
            Capability::AssignmentMethods(m) => w.u32(m.bits()),
            Capability::ReturnMethods(m) => w.u32(m.bits()),
            Capability::TransmitT(t) => {
                w.u16(t.upper_ms);
                w.u16(t.lower_ms);
            }
            Capability::TimerScale(t) => {
                w.u8(t.timeout_upper);
                w.u8(t.timeout_lower);
                w.u8(t.ra_upper);
                w.u8(t.ra_lower);
            }
            Capability::Other { value, .. } => w.bytes(value),
        }
    }
}

/// The Capabilities Info component: a list of elements, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapabilitiesInfo {
    /// The elements.
    pub capabilities: Vec<Capability>,
}

impl CapabilitiesInfo {
    /// What a router supporting every method advertises (GRE|L2, hash|mask, GRE|L2): an
    /// engine picks from it, and Squid gives up on a router that lacks its method.
    pub fn all_methods() -> CapabilitiesInfo {
        CapabilitiesInfo {
            capabilities: vec![
                Capability::ForwardingMethods(ForwardingMethods::GRE | ForwardingMethods::L2),
                Capability::AssignmentMethods(AssignmentMethods::HASH | AssignmentMethods::MASK),
                Capability::ReturnMethods(ReturnMethods::GRE | ReturnMethods::L2),
            ],
        }
    }

    /// The forwarding methods element, if present.
    pub fn forwarding(&self) -> Option<ForwardingMethods> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::ForwardingMethods(m) => Some(*m),
            _ => None,
        })
    }

    /// The assignment methods element, if present.
    pub fn assignment(&self) -> Option<AssignmentMethods> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::AssignmentMethods(m) => Some(*m),
            _ => None,
        })
    }

    /// The return methods element, if present.
    pub fn return_methods(&self) -> Option<ReturnMethods> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::ReturnMethods(m) => Some(*m),
            _ => None,
        })
    }
}

impl ComponentBody for CapabilitiesInfo {
    const KIND: u16 = kind::CAPABILITIES_INFO;
    const NAME: &'static str = "Capabilities Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            capabilities.push(Capability::parse(r)?);
        }
        Ok(CapabilitiesInfo { capabilities })
    }

    fn body_len(&self) -> usize {
        self.capabilities.iter().map(|c| 4 + c.value_len()).sum()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        for c in &self.capabilities {
            c.emit(w);
        }
    }

    fn check(&self) -> Result<(), Error> {
        match self
            .capabilities
            .iter()
            .find(|c| matches!(c, Capability::Other { kind: 1..=5, .. }))
        {
            Some(c) => Err(Error::BadValue {
                what: "Capability Element: other type",
                offset: 0,
                value: u32::from(c.kind()),
            }),
            None => Ok(()),
        }
    }
}

impl VisitAddresses for CapabilitiesInfo {
    fn visit_addresses(&self, _: &mut dyn FnMut(&'static str, &Address)) {}
}

component_api!(CapabilitiesInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;

    static BYTES: [u8; 28] = [
        0, 8, 0, 24, // type 8, length 24
        0, 1, 0, 4, 0, 0, 0, 3, // forwarding GRE|L2
        0, 2, 0, 4, 0, 0, 0, 3, // assignment hash|mask
        0, 3, 0, 4, 0, 0, 0, 3, // return GRE|L2
    ];

    #[test]
    fn parse_emit() {
        let c = CapabilitiesInfo::parse(&BYTES, AddressMode::Ipv4).unwrap();
        assert_eq!(c, CapabilitiesInfo::all_methods());
        assert_eq!(c.forwarding().unwrap().names(), vec!["gre", "l2"]);
        let mut out = [0; 28];
        CapabilitiesInfo::all_methods().emit(&mut out).unwrap();
        assert_eq!(out, BYTES);
    }

    #[test]
    fn timers_and_other() {
        let c = CapabilitiesInfo {
            capabilities: vec![
                Capability::TransmitT(TransmitT {
                    upper_ms: 0,
                    lower_ms: 500,
                }),
                Capability::TimerScale(TimerScale {
                    timeout_upper: 0,
                    timeout_lower: 2,
                    ra_upper: 0,
                    ra_lower: 3,
                }),
                Capability::Other {
                    kind: 9,
                    value: vec![1, 2, 3],
                },
            ],
        };
        let mut out = vec![0; c.buffer_len()];
        c.emit(&mut out).unwrap();
        assert_eq!(
            out,
            [0, 8, 0, 23, 0, 4, 0, 4, 0, 0, 1, 0xf4, 0, 5, 0, 4, 0, 2, 0, 3, 0, 9, 0, 3, 1, 2, 3]
        );
        assert_eq!(CapabilitiesInfo::parse(&out, AddressMode::Ipv4).unwrap(), c);
    }

    #[test]
    fn negative() {
        let mut b = BYTES;
        b[7] = 3; // forwarding with a 3-byte value
        assert_eq!(
            CapabilitiesInfo::parse(&b, AddressMode::Ipv4).unwrap_err(),
            Error::LengthMismatch {
                what: "Capability Element",
                offset: 4,
                declared: 3,
                actual: 4
            }
        );
        let mut b = BYTES;
        b[27 - 4] = 9; // last value length 9
        assert_eq!(
            CapabilitiesInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let b = [0, 8, 0, 2, 0, 1];
        assert_eq!(
            CapabilitiesInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let bad = CapabilitiesInfo {
            capabilities: vec![Capability::Other {
                kind: 2,
                value: vec![],
            }],
        };
        assert_eq!(bad.emit(&mut [0; 16]).unwrap_err().kind(), "bad_value");
    }
}
