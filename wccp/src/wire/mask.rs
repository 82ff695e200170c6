//! Mask assignment elements: mask/value sets (draft-01 sections 5.7.6 to 5.7.8) and
//! revision 1's alternate mask/value sets (Wireshark's 6.17 to 6.19).
//!
//! A router ANDs a packet's addresses and ports with a set's mask and looks the result up
//! among the set's values; the first match names the engine.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::elements::parse_list;
use super::Error;

/// Mask Element (5.7.7): the packet bits a set looks at; zero bits are "don't care".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MaskElement {
    /// Mask for the source address.
    pub src_addr: u32,
    /// Mask for the destination address.
    pub dst_addr: u32,
    /// Mask for the source port.
    pub src_port: u16,
    /// Mask for the destination port.
    pub dst_port: u16,
}

impl MaskElement {
    /// Bytes on the wire.
    pub const LEN: usize = 12;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(MaskElement {
            src_addr: r.u32("Mask Element: source address mask")?,
            dst_addr: r.u32("Mask Element: destination address mask")?,
            src_port: r.u16("Mask Element: source port mask")?,
            dst_port: r.u16("Mask Element: destination port mask")?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u32(self.src_addr);
        w.u32(self.dst_addr);
        w.u16(self.src_port);
        w.u16(self.dst_port);
    }
}

/// Value Element (5.7.8): one masked value and the engine it goes to.
///
/// Wireshark reads the two address values through the Address Table when the message has
/// one, so they are [`Address`] fields here too; [`Address::to_field`] gives the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueElement {
    /// Source address after masking.
    pub src_addr: Address,
    /// Destination address after masking.
    pub dst_addr: Address,
    /// Source port after masking.
    pub src_port: u16,
    /// Destination port after masking.
    pub dst_port: u16,
    /// The engine that takes matching packets.
    pub cache: Address,
}

impl ValueElement {
    /// Bytes on the wire.
    pub const LEN: usize = 16;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(ValueElement {
            src_addr: r.address("Value Element: source address value")?,
            dst_addr: r.address("Value Element: destination address value")?,
            src_port: r.u16("Value Element: source port value")?,
            dst_port: r.u16("Value Element: destination port value")?,
            cache: r.address("Value Element: web-cache address")?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.address(&self.src_addr);
        w.address(&self.dst_addr);
        w.u16(self.src_port);
        w.u16(self.dst_port);
        w.address(&self.cache);
    }
}

impl VisitAddresses for ValueElement {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("Value Element: source address value", &self.src_addr);
        f("Value Element: destination address value", &self.dst_addr);
        f("Value Element: web-cache address", &self.cache);
    }
}

/// Mask/Value Set Element (5.7.6): a mask and the values matched under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MaskValueSet {
    /// The mask.
    pub mask: MaskElement,
    /// The values, tried in order.
    pub values: Vec<ValueElement>,
}

impl MaskValueSet {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        MaskElement::LEN + 4 + ValueElement::LEN * self.values.len()
    }

    /// True when the set has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(MaskValueSet {
            mask: MaskElement::parse(r)?,
            values: parse_list(
                r,
                "Mask/Value Set Element: value elements",
                ValueElement::LEN,
                ValueElement::parse,
            )?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        self.mask.emit(w);
        w.len32(self.values.len());
        for v in &self.values {
            v.emit(w);
        }
    }
}

impl VisitAddresses for MaskValueSet {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.values.visit_addresses(f);
    }
}

/// Reads a Mask/Value Set List (a 32-bit count, then the sets).
pub(crate) fn parse_sets(r: &mut Reader<'_>) -> Result<Vec<MaskValueSet>, Error> {
    parse_list(
        r,
        "Mask/Value Set List",
        MaskElement::LEN + 4,
        MaskValueSet::parse,
    )
}

/// Bytes a Mask/Value Set List takes.
pub(crate) fn sets_len(sets: &[MaskValueSet]) -> usize {
    4 + sets.iter().map(MaskValueSet::len).sum::<usize>()
}

/// Writes a Mask/Value Set List.
pub(crate) fn emit_sets(w: &mut Writer<'_>, sets: &[MaskValueSet]) {
    w.len32(sets.len());
    for s in sets {
        s.emit(w);
    }
}

/// Web-Cache Value Element (revision 1): an engine and the sequence numbers of the values
/// it takes under an alternate mask.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WebCacheValueElement {
    /// The engine.
    pub cache: Address,
    /// Value sequence numbers.
    pub values: Vec<u32>,
}

impl WebCacheValueElement {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        4 + 4 + 4 * self.values.len()
    }

    /// True when the engine takes no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(WebCacheValueElement {
            cache: r.address("Web-Cache Value Element: address")?,
            values: parse_list(r, "Web-Cache Value Element: values", 4, |r| {
                r.u32("Web-Cache Value Element: value sequence number")
            })?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.address(&self.cache);
        w.len32(self.values.len());
        for v in &self.values {
            w.u32(*v);
        }
    }
}

impl VisitAddresses for WebCacheValueElement {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("Web-Cache Value Element: address", &self.cache);
    }
}

/// Alternate Mask/Value Set Element (revision 1): a mask and, per engine, the values it
/// takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct AltMaskValueSet {
    /// The mask.
    pub mask: MaskElement,
    /// The engines and their values.
    pub caches: Vec<WebCacheValueElement>,
}

impl AltMaskValueSet {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        MaskElement::LEN + 4 + self.caches.iter().map(|c| c.len()).sum::<usize>()
    }

    /// True when no engine is listed.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(AltMaskValueSet {
            mask: MaskElement::parse(r)?,
            caches: parse_list(
                r,
                "Alternate Mask/Value Set Element: web-cache value elements",
                8,
                WebCacheValueElement::parse,
            )?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        self.mask.emit(w);
        w.len32(self.caches.len());
        for c in &self.caches {
            c.emit(w);
        }
    }
}

impl VisitAddresses for AltMaskValueSet {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        self.caches.visit_addresses(f);
    }
}

/// Reads an Alternate Mask/Value Set List.
pub(crate) fn parse_alt_sets(r: &mut Reader<'_>) -> Result<Vec<AltMaskValueSet>, Error> {
    parse_list(
        r,
        "Alternate Mask/Value Set List",
        MaskElement::LEN + 4,
        AltMaskValueSet::parse,
    )
}

/// Bytes an Alternate Mask/Value Set List takes.
pub(crate) fn alt_sets_len(sets: &[AltMaskValueSet]) -> usize {
    4 + sets.iter().map(AltMaskValueSet::len).sum::<usize>()
}

/// Writes an Alternate Mask/Value Set List.
pub(crate) fn emit_alt_sets(w: &mut Writer<'_>, sets: &[AltMaskValueSet]) {
    w.len32(sets.len());
    for s in sets {
        s.emit(w);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    /// Squid's mask set: source mask 0x1741, one value.
    static SET: [u8; 36] = [
        0, 0, 0, 1, // one set
        0, 0, 0x17, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, // mask
        0, 0, 0, 1, // one value
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2, // value 1 -> 10.0.0.2
    ];

    fn sets() -> Vec<MaskValueSet> {
        vec![MaskValueSet {
            mask: MaskElement {
                src_addr: 0x1741,
                ..Default::default()
            },
            values: vec![ValueElement {
                src_addr: Ipv4Addr::from(1).into(),
                dst_addr: Address::UNSPECIFIED,
                src_port: 0,
                dst_port: 0,
                cache: Ipv4Addr::new(10, 0, 0, 2).into(),
            }],
        }]
    }

    #[test]
    fn set_list() {
        let mut r = Reader::new(&SET, 0, AddressMode::Ipv4);
        assert_eq!(parse_sets(&mut r).unwrap(), sets());
        assert!(r.is_empty());
        let mut buf = [0u8; 36];
        assert_eq!(sets_len(&sets()), 36);
        let mut w = Writer::new(&mut buf);
        emit_sets(&mut w, &sets());
        assert_eq!(buf, SET);
    }

    #[test]
    fn set_list_negative() {
        let mut b = SET;
        b[3] = 2;
        let mut r = Reader::new(&b, 0, AddressMode::Ipv4);
        assert_eq!(parse_sets(&mut r).unwrap_err().kind(), "truncated");
        let mut b = SET;
        b[3] = 3;
        let mut r = Reader::new(&b, 0, AddressMode::Ipv4);
        assert_eq!(parse_sets(&mut r).unwrap_err().kind(), "count_too_large");
        let mut b = SET;
        b[19] = 2;
        let mut r = Reader::new(&b, 0, AddressMode::Ipv4);
        assert_eq!(
            parse_sets(&mut r).unwrap_err(),
            Error::CountTooLarge {
                what: "Mask/Value Set Element: value elements",
                offset: 16,
                count: 2,
                available: 16
            }
        );
    }

    #[test]
    fn alt_set_list() {
        let b: [u8; 32] = [
            0, 0, 0, 1, // one set
            0, 0, 0, 0, 0, 0, 0x17, 0x41, 0, 0, 0, 0, // dst mask
            0, 0, 0, 1, // one engine
            10, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7, // engine takes value 7
        ];
        let mut r = Reader::new(&b, 0, AddressMode::Ipv4);
        let s = parse_alt_sets(&mut r).unwrap();
        assert_eq!(s[0].mask.dst_addr, 0x1741);
        assert_eq!(s[0].caches[0].values, vec![7]);
        assert_eq!(alt_sets_len(&s), 32);
        let mut out = [0u8; 32];
        emit_alt_sets(&mut Writer::new(&mut out), &s);
        assert_eq!(out, b);
    }
}
