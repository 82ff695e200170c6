//! Web-Cache View Info (component 5, draft-01 section 5.6.6): an engine's view of its
//! service group, sent in every Here-I-Am.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::{emit_addresses, parse_addresses, parse_list, RouterIdElement};
use super::Error;

/// The Web-Cache View Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebCacheViewInfo {
    /// Incremented whenever the view changes.
    pub change_number: u32,
    /// The routers that sent this engine an I-See-You, each with the last receive id: echoing
    /// it is what makes the engine usable to that router.
    pub routers: Vec<RouterIdElement>,
    /// The engines learnt from those I-See-You messages.
    pub caches: Vec<Address>,
}

impl ComponentBody for WebCacheViewInfo {
    const KIND: u16 = kind::WC_VIEW_INFO;
    const NAME: &'static str = "Web-Cache View Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(WebCacheViewInfo {
            change_number: r.u32("Web-Cache View Info: change number")?,
            routers: parse_list(
                r,
                "Web-Cache View Info: routers",
                RouterIdElement::LEN,
                RouterIdElement::parse,
            )?,
            caches: parse_addresses(r, "Web-Cache View Info: web-caches")?,
        })
    }

    fn body_len(&self) -> usize {
        4 + 4 + RouterIdElement::LEN * self.routers.len() + 4 + 4 * self.caches.len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u32(self.change_number);
        w.len32(self.routers.len());
        for r in &self.routers {
            r.emit(w);
        }
        emit_addresses(w, &self.caches);
    }
}

impl VisitAddresses for WebCacheViewInfo {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.routers.visit_addresses(f);
        for a in &self.caches {
            f("Web-Cache View Info: web-caches", a);
        }
    }
}

component_api!(WebCacheViewInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    static BYTES: [u8; 28] = [
        0, 5, 0, 24, // type 5, length 24
        0, 0, 0, 3, // change 3
        0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 9, // one router, receive id 9
        0, 0, 0, 1, 10, 0, 0, 2, // one engine
    ];

    fn repr() -> WebCacheViewInfo {
        WebCacheViewInfo {
            change_number: 3,
            routers: vec![RouterIdElement {
                address: Ipv4Addr::new(10, 0, 0, 1).into(),
                receive_id: 9,
            }],
            caches: vec![Ipv4Addr::new(10, 0, 0, 2).into()],
        }
    }

    #[test]
    fn parse_emit() {
        assert_eq!(
            WebCacheViewInfo::parse(&BYTES, AddressMode::Ipv4).unwrap(),
            repr()
        );
        let mut buf = [0xa5; 28];
        repr().emit(&mut buf).unwrap();
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn empty_view() {
        let v = WebCacheViewInfo {
            change_number: 1,
            routers: vec![],
            caches: vec![],
        };
        let mut buf = [0; 16];
        assert_eq!(v.emit(&mut buf).unwrap(), 16);
        assert_eq!(buf, [0, 5, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(WebCacheViewInfo::parse(&buf, AddressMode::Ipv4).unwrap(), v);
    }

    #[test]
    fn negative() {
        let mut b = BYTES;
        b[11] = 2; // two routers: the second would eat the engine count
        assert_eq!(
            WebCacheViewInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut b = BYTES;
        b[11] = 3;
        assert_eq!(
            WebCacheViewInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
        assert_eq!(
            WebCacheViewInfo::parse(&BYTES[..27], AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
    }
}
