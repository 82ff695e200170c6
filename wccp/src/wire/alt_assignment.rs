//! Alternate Assignment (component 13, draft-01 section 5.6.10) and revision 1's Alternate
//! Assignment Map (component 16).
//!
//! Both open with a 2-byte assignment type and a 2-byte length of what follows. Mask
//! assignments travel in the Alternate Assignment (that is how Squid sends them: type 1, one
//! mask set, 64 values).

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::assignment::{emit_routers, parse_routers, AssignmentInfo, HashAssignment};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::{AssignmentKey, RouterAssignmentElement};
use super::mask::{
    alt_sets_len, emit_alt_sets, emit_sets, parse_alt_sets, parse_sets, sets_len, AltMaskValueSet,
    MaskValueSet,
};
use super::web_cache_identity::assignment_type;
use super::Error;

/// What an Alternate Assignment assigns, by its assignment type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AltAssignmentData {
    /// Type 0: engines and hash buckets.
    Hash(HashAssignment),
    /// Type 1: a mask/value set list.
    Mask(Vec<MaskValueSet>),
    /// Type 2 (revision 1): an alternate mask/value set list.
    AltMask(Vec<AltMaskValueSet>),
    /// Another type (above 2): the bytes after the router list.
    Unknown {
        /// The assignment type.
        kind: u16,
        /// The bytes.
        #[serde(with = "super::codec::hex")]
        data: Vec<u8>,
    },
}

impl AltAssignmentData {
    fn kind(&self) -> u16 {
        match self {
            AltAssignmentData::Hash(_) => assignment_type::HASH,
            AltAssignmentData::Mask(_) => assignment_type::MASK,
            AltAssignmentData::AltMask(_) => assignment_type::ALT_MASK,
            AltAssignmentData::Unknown { kind, .. } => *kind,
        }
    }

    fn len(&self) -> usize {
        match self {
            AltAssignmentData::Hash(h) => h.len(),
            AltAssignmentData::Mask(s) => sets_len(s),
            AltAssignmentData::AltMask(s) => alt_sets_len(s),
            AltAssignmentData::Unknown { data, .. } => data.len(),
        }
    }

    fn emit(&self, w: &mut Writer<'_>) {
        match self {
            AltAssignmentData::Hash(h) => h.emit(w),
            AltAssignmentData::Mask(s) => emit_sets(w, s),
            AltAssignmentData::AltMask(s) => emit_alt_sets(w, s),
            AltAssignmentData::Unknown { data, .. } => w.bytes(data),
        }
    }

    fn check(&self, what: &'static str) -> Result<(), Error> {
        match self {
            AltAssignmentData::Unknown { kind, .. } if *kind <= assignment_type::ALT_MASK => {
                Err(Error::BadValue {
                    what,
                    offset: 0,
                    value: u32::from(*kind),
                })
            }
            _ => Ok(()),
        }
    }
}

impl VisitAddresses for AltAssignmentData {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        match self {
            AltAssignmentData::Hash(h) => h.visit_addresses(f),
            AltAssignmentData::Mask(s) => s.visit_addresses(f),
            AltAssignmentData::AltMask(s) => s.visit_addresses(f),
            AltAssignmentData::Unknown { .. } => {}
        }
    }
}

/// The Alternate Assignment component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltAssignment {
    /// The key routers echo in their views.
    pub key: AssignmentKey,
    /// The routers, with the numbers the designated engine last saw from each.
    pub routers: Vec<RouterAssignmentElement>,
    /// The assignment itself.
    pub data: AltAssignmentData,
}

impl ComponentBody for AltAssignment {
    const KIND: u16 = kind::ALT_ASSIGNMENT;
    const NAME: &'static str = "Alternate Assignment";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let start = r.offset();
        let t = r.u16("Alternate Assignment: assignment type")?;
        let len = usize::from(r.u16("Alternate Assignment: assignment length")?);
        let mut b = r.sub(len, "Alternate Assignment: assignment body")?;
        let key = AssignmentKey::parse(&mut b)?;
        let routers = parse_routers(&mut b)?;
        let data = match t {
            assignment_type::HASH => AltAssignmentData::Hash(HashAssignment::parse(&mut b)?),
            assignment_type::MASK => AltAssignmentData::Mask(parse_sets(&mut b)?),
            assignment_type::ALT_MASK => AltAssignmentData::AltMask(parse_alt_sets(&mut b)?),
            other => AltAssignmentData::Unknown {
                kind: other,
                data: b.rest().to_vec(),
            },
        };
        b.finish("Alternate Assignment: assignment body", start)?;
        Ok(AltAssignment { key, routers, data })
    }

    fn body_len(&self) -> usize {
        4 + AssignmentKey::LEN
            + 4
            + RouterAssignmentElement::LEN * self.routers.len()
            + self.data.len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u16(self.data.kind());
        w.len16(self.body_len() - 4);
        self.key.emit(w);
        emit_routers(w, &self.routers);
        self.data.emit(w);
    }

    fn check(&self) -> Result<(), Error> {
        self.data
            .check("Alternate Assignment: unknown assignment type")
    }
}

impl VisitAddresses for AltAssignment {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.key.visit_addresses(f);
        self.routers.visit_addresses(f);
        self.data.visit_addresses(f);
    }
}

component_api!(AltAssignment);

/// The Alternate Assignment Map component (revision 1), by assignment type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AltAssignmentMap {
    /// Type 0: an Assignment Info body (key, routers, engines, buckets).
    Hash(AssignmentInfo),
    /// Type 1: a mask/value set list.
    Mask(Vec<MaskValueSet>),
    /// Type 2: an alternate mask/value set list.
    AltMask(Vec<AltMaskValueSet>),
    /// Another type (above 2), kept as bytes.
    Unknown {
        /// The assignment type.
        kind: u16,
        /// The bytes.
        #[serde(with = "super::codec::hex")]
        data: Vec<u8>,
    },
}

impl AltAssignmentMap {
    fn kind(&self) -> u16 {
        match self {
            AltAssignmentMap::Hash(_) => assignment_type::HASH,
            AltAssignmentMap::Mask(_) => assignment_type::MASK,
            AltAssignmentMap::AltMask(_) => assignment_type::ALT_MASK,
            AltAssignmentMap::Unknown { kind, .. } => *kind,
        }
    }
}

impl ComponentBody for AltAssignmentMap {
    const KIND: u16 = kind::ALT_ASSIGNMENT_MAP;
    const NAME: &'static str = "Alternate Assignment Map";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let start = r.offset();
        let t = r.u16("Alternate Assignment Map: assignment type")?;
        let len = usize::from(r.u16("Alternate Assignment Map: assignment length")?);
        let mut b = r.sub(len, "Alternate Assignment Map: assignment body")?;
        let v = match t {
            assignment_type::HASH => AltAssignmentMap::Hash(AssignmentInfo::parse_inner(&mut b)?),
            assignment_type::MASK => AltAssignmentMap::Mask(parse_sets(&mut b)?),
            assignment_type::ALT_MASK => AltAssignmentMap::AltMask(parse_alt_sets(&mut b)?),
            other => AltAssignmentMap::Unknown {
                kind: other,
                data: b.rest().to_vec(),
            },
        };
        b.finish("Alternate Assignment Map: assignment body", start)?;
        Ok(v)
    }

    fn body_len(&self) -> usize {
        4 + match self {
            AltAssignmentMap::Hash(a) => a.len(),
            AltAssignmentMap::Mask(s) => sets_len(s),
            AltAssignmentMap::AltMask(s) => alt_sets_len(s),
            AltAssignmentMap::Unknown { data, .. } => data.len(),
        }
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u16(self.kind());
        w.len16(self.body_len() - 4);
        match self {
            AltAssignmentMap::Hash(a) => a.emit_inner(w),
            AltAssignmentMap::Mask(s) => emit_sets(w, s),
            AltAssignmentMap::AltMask(s) => emit_alt_sets(w, s),
            AltAssignmentMap::Unknown { data, .. } => w.bytes(data),
        }
    }

    fn check(&self) -> Result<(), Error> {
        match self {
            AltAssignmentMap::Unknown { kind, .. } if *kind <= assignment_type::ALT_MASK => {
                Err(Error::BadValue {
                    what: "Alternate Assignment Map: unknown assignment type",
                    offset: 0,
                    value: u32::from(*kind),
                })
            }
            _ => Ok(()),
        }
    }
}

impl VisitAddresses for AltAssignmentMap {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        match self {
            AltAssignmentMap::Hash(a) => a.visit_addresses(f),
            AltAssignmentMap::Mask(s) => s.visit_addresses(f),
            AltAssignmentMap::AltMask(s) => s.visit_addresses(f),
            AltAssignmentMap::Unknown { .. } => {}
        }
    }
}

component_api!(AltAssignmentMap);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::mask::{MaskElement, ValueElement};
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    /// Squid's mask-mode Redirect-Assign body, cut to two values.
    fn squid_bytes() -> Vec<u8> {
        let mut b = vec![
            0, 13, 0, 80, // type 13, length 80
            0, 1, 0, 76, // mask assignment, 76 bytes
            10, 0, 0, 2, 0, 0, 0, 1, // key
            0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 1, // one router
            0, 0, 0, 1, // one set
            0, 0, 0x17, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, // source mask
            0, 0, 0, 2, // two values
        ];
        for v in [0u8, 1] {
            b.extend([0, 0, 0, v, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        }
        b
    }

    fn squid_repr() -> AltAssignment {
        AltAssignment {
            key: AssignmentKey {
                address: Ipv4Addr::new(10, 0, 0, 2).into(),
                change_number: 1,
            },
            routers: vec![RouterAssignmentElement {
                address: Ipv4Addr::new(10, 0, 0, 1).into(),
                receive_id: 3,
                change_number: 1,
            }],
            data: AltAssignmentData::Mask(vec![MaskValueSet {
                mask: MaskElement {
                    src_addr: 0x1741,
                    ..Default::default()
                },
                values: (0..2)
                    .map(|v| ValueElement {
                        src_addr: Ipv4Addr::from(v).into(),
                        dst_addr: Address::UNSPECIFIED,
                        src_port: 0,
                        dst_port: 0,
                        cache: Ipv4Addr::new(10, 0, 0, 2).into(),
                    })
                    .collect(),
            }]),
        }
    }

    #[test]
    fn squid_mask_assignment() {
        let b = squid_bytes();
        assert_eq!(
            AltAssignment::parse(&b, AddressMode::Ipv4).unwrap(),
            squid_repr()
        );
        let mut out = vec![0; b.len()];
        squid_repr().emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn assignment_length_must_agree() {
        let mut b = squid_bytes();
        b[7] = 72;
        assert_eq!(
            AltAssignment::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
        let mut b = squid_bytes();
        b[7] = 80;
        assert_eq!(
            AltAssignment::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut b = squid_bytes();
        b[3] = 84;
        b.extend([0, 0, 0, 0]);
        assert_eq!(
            AltAssignment::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "length_mismatch"
        );
    }

    #[test]
    fn other_forms_round_trip() {
        let hash = AltAssignment {
            data: AltAssignmentData::Hash(HashAssignment {
                caches: vec![Ipv4Addr::new(10, 0, 0, 2).into()],
                buckets: Default::default(),
            }),
            ..squid_repr()
        };
        let unknown = AltAssignment {
            data: AltAssignmentData::Unknown {
                kind: 7,
                data: vec![1, 2, 3],
            },
            ..squid_repr()
        };
        for c in [hash, unknown] {
            let mut out = vec![0; c.buffer_len()];
            c.emit(&mut out).unwrap();
            assert_eq!(AltAssignment::parse(&out, AddressMode::Ipv4).unwrap(), c);
        }
        let bad = AltAssignment {
            data: AltAssignmentData::Unknown {
                kind: 1,
                data: vec![],
            },
            ..squid_repr()
        };
        assert_eq!(bad.emit(&mut [0; 64]).unwrap_err().kind(), "bad_value");
    }

    #[test]
    fn alt_assignment_map() {
        let m = AltAssignmentMap::AltMask(vec![]);
        let mut out = vec![0; m.buffer_len()];
        m.emit(&mut out).unwrap();
        assert_eq!(out, [0, 16, 0, 8, 0, 2, 0, 4, 0, 0, 0, 0]);
        assert_eq!(AltAssignmentMap::parse(&out, AddressMode::Ipv4).unwrap(), m);
        let mut short = out.clone();
        short[7] = 8;
        assert_eq!(
            AltAssignmentMap::parse(&short, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
    }
}
