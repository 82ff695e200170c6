//! Router Query Info (component 7, draft-01 section 5.6.8): the body of a Removal-Query,
//! which a router unicasts to an engine it has not heard from for 2.5 x HERE_I_AM_T.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::elements::RouterIdElement;
use super::Error;

/// The Router Query Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterQueryInfo {
    /// The querying router and the receive id it expects.
    pub router: RouterIdElement,
    /// Where the engine sent its last Here-I-Am.
    pub sent_to: Address,
    /// The engine being queried.
    pub target: Address,
}

/// Body size of a Router Query Info component.
pub const ROUTER_QUERY_LEN: usize = 16;

impl ComponentBody for RouterQueryInfo {
    const KIND: u16 = kind::QUERY_INFO;
    const NAME: &'static str = "Router Query Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(RouterQueryInfo {
            router: RouterIdElement::parse(r)?,
            sent_to: r.address("Router Query Info: sent to")?,
            target: r.address("Router Query Info: target")?,
        })
    }

    fn body_len(&self) -> usize {
        ROUTER_QUERY_LEN
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        self.router.emit(w);
        w.address(&self.sent_to);
        w.address(&self.target);
    }
}

impl VisitAddresses for RouterQueryInfo {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.router.visit_addresses(f);
        f("Router Query Info: sent to", &self.sent_to);
        f("Router Query Info: target", &self.target);
    }
}

component_api!(RouterQueryInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    static BYTES: [u8; 20] = [
        0, 7, 0, 16, 10, 0, 0, 1, 0, 0, 0, 5, 10, 0, 0, 1, 10, 0, 0, 2,
    ];

    fn repr() -> RouterQueryInfo {
        RouterQueryInfo {
            router: RouterIdElement {
                address: Ipv4Addr::new(10, 0, 0, 1).into(),
                receive_id: 5,
            },
            sent_to: Ipv4Addr::new(10, 0, 0, 1).into(),
            target: Ipv4Addr::new(10, 0, 0, 2).into(),
        }
    }

    #[test]
    fn parse_emit() {
        assert_eq!(
            RouterQueryInfo::parse(&BYTES, AddressMode::Ipv4).unwrap(),
            repr()
        );
        let mut buf = [0; 20];
        repr().emit(&mut buf).unwrap();
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn negative() {
        let mut b = BYTES.to_vec();
        b[3] = 12;
        b.truncate(16);
        assert_eq!(
            RouterQueryInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut b = BYTES.to_vec();
        b[0] = 1;
        assert_eq!(
            RouterQueryInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        assert_eq!(
            RouterQueryInfo::parse(&BYTES[..19], AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
    }
}
