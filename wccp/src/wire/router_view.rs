//! Router View Info (component 4, draft-01 section 5.6.5): a router's view of its service
//! group, sent in every I-See-You.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::{emit_addresses, parse_addresses, parse_list, AssignmentKey};
use super::web_cache_identity::WebCacheIdentity;
use super::Error;

/// The Router View Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterViewInfo {
    /// Incremented whenever the group's membership changes.
    pub member_change: u32,
    /// The key of the last assignment received, so the designated engine sees it applied.
    pub key: AssignmentKey,
    /// Routers in the group, as engines reported them.
    pub routers: Vec<Address>,
    /// The usable engines.
    pub caches: Vec<WebCacheIdentity>,
}

impl ComponentBody for RouterViewInfo {
    const KIND: u16 = kind::RTR_VIEW_INFO;
    const NAME: &'static str = "Router View Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(RouterViewInfo {
            member_change: r.u32("Router View Info: member change number")?,
            key: AssignmentKey::parse(r)?,
            routers: parse_addresses(r, "Router View Info: routers")?,
            caches: parse_list(
                r,
                "Router View Info: web-caches",
                8,
                WebCacheIdentity::parse,
            )?,
        })
    }

    fn body_len(&self) -> usize {
        4 + AssignmentKey::LEN
            + 4
            + 4 * self.routers.len()
            + 4
            + self.caches.iter().map(WebCacheIdentity::len).sum::<usize>()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u32(self.member_change);
        self.key.emit(w);
        emit_addresses(w, &self.routers);
        w.len32(self.caches.len());
        for c in &self.caches {
            c.emit(w);
        }
    }

    fn check(&self) -> Result<(), Error> {
        self.caches.iter().try_for_each(WebCacheIdentity::check)
    }
}

impl VisitAddresses for RouterViewInfo {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.key.visit_addresses(f);
        for a in &self.routers {
            f("Router View Info: routers", a);
        }
        self.caches.visit_addresses(f);
    }
}

component_api!(RouterViewInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::web_cache_identity::{AssignmentData, IdentityFlags};
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    fn bytes() -> Vec<u8> {
        let mut b = vec![
            0, 4, 0, 76, // type 4, length 76
            0, 0, 0, 2, // member change 2
            10, 0, 0, 2, 0, 0, 0, 1, // key
            0, 0, 0, 1, 10, 0, 0, 1, // one router
            0, 0, 0, 2, // two engines
            10, 0, 0, 2, 0, 0, 0, 0, // hash form, no buckets
        ];
        b.extend([0u8; 32]);
        b.extend([0, 1, 0, 0]);
        b.extend([10, 0, 0, 3, 0, 0, 0, 4]); // not present
        b
    }

    fn repr() -> RouterViewInfo {
        RouterViewInfo {
            member_change: 2,
            key: AssignmentKey {
                address: Ipv4Addr::new(10, 0, 0, 2).into(),
                change_number: 1,
            },
            routers: vec![Ipv4Addr::new(10, 0, 0, 1).into()],
            caches: vec![
                WebCacheIdentity::hash(Ipv4Addr::new(10, 0, 0, 2).into(), 1),
                WebCacheIdentity {
                    address: Ipv4Addr::new(10, 0, 0, 3).into(),
                    hash_revision: 0,
                    flags: IdentityFlags::empty(),
                    assignment: AssignmentData::NotPresent,
                },
            ],
        }
    }

    #[test]
    fn parse_emit() {
        let b = bytes();
        assert_eq!(
            RouterViewInfo::parse(&b, AddressMode::Ipv4).unwrap(),
            repr()
        );
        let mut out = vec![0; b.len()];
        repr().emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn negative() {
        let mut b = bytes();
        b[27] = 11; // 11 engines of at least 8 bytes cannot fit in 52
        assert_eq!(
            RouterViewInfo::parse(&b, AddressMode::Ipv4).unwrap_err(),
            Error::CountTooLarge {
                what: "Router View Info: web-caches",
                offset: 24,
                count: 11,
                available: 52
            }
        );
        let mut b = bytes();
        b[27] = 3;
        assert_eq!(
            RouterViewInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut b = bytes();
        b.truncate(20);
        b[3] = 16;
        assert_eq!(
            RouterViewInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
    }
}
