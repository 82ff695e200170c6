//! Assignment Info (component 6, draft-01 section 5.6.7): the hash assignment a designated
//! engine hands the routers, and the hash-bucket table shared with the alternate forms.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::{
    emit_addresses, parse_addresses, parse_list, AssignmentKey, RouterAssignmentElement,
};
use super::Error;

/// Number of hash buckets.
pub const BUCKETS: usize = 256;

/// The contents of the 256-entry redirection hash table: per bucket, the index of an engine
/// in the accompanying list, with bit 7 asking for the alternate hash, or 0xFF for none.
///
/// Wireshark and Squid put the index in the low 7 bits and the flag in bit 7 (draft-01's
/// figure could be read the other way round; the implementations agree with each other).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BucketTable(pub Box<[u8; BUCKETS]>);

impl BucketTable {
    /// An entry for a bucket no engine takes.
    pub const UNASSIGNED: u8 = 0xFF;
    /// The flag that sends a bucket's packets through the alternate hash.
    pub const ALTERNATE: u8 = 0x80;

    /// Every bucket unassigned.
    pub fn unassigned() -> BucketTable {
        BucketTable(Box::new([Self::UNASSIGNED; BUCKETS]))
    }

    /// The engine index and alternate flag of `bucket`, or `None` when unassigned.
    pub fn get(&self, bucket: u8) -> Option<(u8, bool)> {
        let v = self.0[usize::from(bucket)];
        if v == Self::UNASSIGNED {
            None
        } else {
            Some((v & !Self::ALTERNATE, v & Self::ALTERNATE != 0))
        }
    }

    /// Assigns `bucket` to engine `index` (0 to 127), or unassigns it.
    pub fn set(&mut self, bucket: u8, entry: Option<(u8, bool)>) {
        self.0[usize::from(bucket)] = match entry {
            None => Self::UNASSIGNED,
            Some((index, alt)) => {
                (index & !Self::ALTERNATE) | if alt { Self::ALTERNATE } else { 0 }
            }
        };
    }
}

impl Default for BucketTable {
    fn default() -> Self {
        BucketTable::unassigned()
    }
}

impl core::fmt::Debug for BucketTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for BucketTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for BucketTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        let a: [u8; BUCKETS] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("expected 256 buckets"))?;
        Ok(BucketTable(Box::new(a)))
    }
}

/// Hash Buckets Assignment Element: the engines' list and the table that indexes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HashAssignment {
    /// The engines; a bucket names one by its position here.
    pub caches: Vec<Address>,
    /// The 256 buckets.
    pub buckets: BucketTable,
}

impl HashAssignment {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        4 + 4 * self.caches.len() + BUCKETS
    }

    /// Always false: the bucket table is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let caches = parse_addresses(r, "Hash Assignment: web-caches")?;
        Ok(HashAssignment {
            caches,
            buckets: BucketTable(Box::new(r.array("Hash Assignment: buckets")?)),
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        emit_addresses(w, &self.caches);
        w.bytes(&self.buckets.0[..]);
    }

    /// The engine that takes `bucket`, and whether the alternate hash applies.
    pub fn cache_for(&self, bucket: u8) -> Option<(&Address, bool)> {
        let (index, alt) = self.buckets.get(bucket)?;
        self.caches.get(usize::from(index)).map(|a| (a, alt))
    }
}

impl VisitAddresses for HashAssignment {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        for a in &self.caches {
            f("Hash Assignment: web-caches", a);
        }
    }
}

/// The Assignment Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentInfo {
    /// The key routers echo in their views.
    pub key: AssignmentKey,
    /// The routers the designated engine reaches, with the numbers it last saw from each.
    pub routers: Vec<RouterAssignmentElement>,
    /// The engines and buckets.
    pub hash: HashAssignment,
}

impl AssignmentInfo {
    /// Bytes the body takes (also the body of an Alternate Assignment Map of hash type).
    pub(crate) fn len(&self) -> usize {
        AssignmentKey::LEN + 4 + RouterAssignmentElement::LEN * self.routers.len() + self.hash.len()
    }

    pub(crate) fn parse_inner(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(AssignmentInfo {
            key: AssignmentKey::parse(r)?,
            routers: parse_routers(r)?,
            hash: HashAssignment::parse(r)?,
        })
    }

    pub(crate) fn emit_inner(&self, w: &mut Writer<'_>) {
        self.key.emit(w);
        emit_routers(w, &self.routers);
        self.hash.emit(w);
    }
}

/// Reads the counted list of Router Assignment Elements.
pub(crate) fn parse_routers(r: &mut Reader<'_>) -> Result<Vec<RouterAssignmentElement>, Error> {
    parse_list(
        r,
        "Router Assignment Elements",
        RouterAssignmentElement::LEN,
        RouterAssignmentElement::parse,
    )
}

/// Writes the counted list of Router Assignment Elements.
pub(crate) fn emit_routers(w: &mut Writer<'_>, routers: &[RouterAssignmentElement]) {
    w.len32(routers.len());
    for r in routers {
        r.emit(w);
    }
}

impl ComponentBody for AssignmentInfo {
    const KIND: u16 = kind::REDIRECT_ASSIGNMENT;
    const NAME: &'static str = "Assignment Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Self::parse_inner(r)
    }

    fn body_len(&self) -> usize {
        self.len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        self.emit_inner(w)
    }
}

impl VisitAddresses for AssignmentInfo {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.key.visit_addresses(f);
        self.routers.visit_addresses(f);
        self.hash.visit_addresses(f);
    }
}

component_api!(AssignmentInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    fn bytes() -> Vec<u8> {
        let mut b = vec![
            0, 6, 1, 36, // type 6, length 292
            10, 0, 0, 2, 0, 0, 0, 1, // key
            0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 2, // one router
            0, 0, 0, 2, 10, 0, 0, 2, 10, 0, 0, 3, // two engines
        ];
        b.extend((0..=255u16).map(|i| match i {
            255 => 0xff,
            254 => 0x81,
            i => (i % 2) as u8,
        }));
        b
    }

    fn repr() -> AssignmentInfo {
        let mut buckets = BucketTable::unassigned();
        for i in 0..=253u8 {
            buckets.set(i, Some((i % 2, false)));
        }
        buckets.set(254, Some((1, true)));
        AssignmentInfo {
            key: AssignmentKey {
                address: Ipv4Addr::new(10, 0, 0, 2).into(),
                change_number: 1,
            },
            routers: vec![RouterAssignmentElement {
                address: Ipv4Addr::new(10, 0, 0, 1).into(),
                receive_id: 7,
                change_number: 2,
            }],
            hash: HashAssignment {
                caches: vec![
                    Ipv4Addr::new(10, 0, 0, 2).into(),
                    Ipv4Addr::new(10, 0, 0, 3).into(),
                ],
                buckets,
            },
        }
    }

    #[test]
    fn parse_emit() {
        let b = bytes();
        let p = AssignmentInfo::parse(&b, AddressMode::Ipv4).unwrap();
        assert_eq!(p, repr());
        assert_eq!(p.hash.buckets.get(255), None);
        assert_eq!(
            p.hash.cache_for(254),
            Some((&Address::V4(Ipv4Addr::new(10, 0, 0, 3)), true))
        );
        let mut out = vec![0; b.len()];
        repr().emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn negative() {
        let b = bytes();
        let mut short = b[..b.len() - 1].to_vec();
        short[3] -= 1;
        assert_eq!(
            AssignmentInfo::parse(&short, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut b2 = b.clone();
        b2[15] = 100;
        assert_eq!(
            AssignmentInfo::parse(&b2, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
        let mut b3 = b;
        b3[31] = 0x50;
        assert_eq!(
            AssignmentInfo::parse(&b3, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
    }

    #[test]
    fn json_has_256_buckets() {
        let j = serde_json::to_value(repr()).unwrap();
        assert_eq!(j["hash"]["buckets"].as_array().unwrap().len(), 256);
        let back: AssignmentInfo = serde_json::from_value(j).unwrap();
        assert_eq!(back, repr());
    }
}
