//! Assignment Map (component 14, draft-01 section 5.6.11): the mask/value sets a router has
//! applied, which it may report in its I-See-You.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::mask::{emit_sets, parse_sets, sets_len, MaskValueSet};
use super::Error;

/// The Assignment Map component.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AssignmentMap {
    /// The mask/value sets.
    pub sets: Vec<MaskValueSet>,
}

impl ComponentBody for AssignmentMap {
    const KIND: u16 = kind::ASSIGN_MAP;
    const NAME: &'static str = "Assignment Map";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(AssignmentMap {
            sets: parse_sets(r)?,
        })
    }

    fn body_len(&self) -> usize {
        sets_len(&self.sets)
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        emit_sets(w, &self.sets);
    }
}

impl VisitAddresses for AssignmentMap {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.sets.visit_addresses(f);
    }
}

component_api!(AssignmentMap);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::mask::MaskElement;
    use crate::wire::AddressMode;

    #[test]
    fn parse_emit() {
        let b = [
            0, 14, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x17, 0x41, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let m = AssignmentMap {
            sets: vec![MaskValueSet {
                mask: MaskElement {
                    dst_addr: 0x1741,
                    ..Default::default()
                },
                values: vec![],
            }],
        };
        assert_eq!(AssignmentMap::parse(&b, AddressMode::Ipv4).unwrap(), m);
        let mut out = [0; 24];
        m.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let mut bad = b;
        bad[7] = 2;
        assert_eq!(
            AssignmentMap::parse(&bad, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "count_too_large"
        );
    }
}
