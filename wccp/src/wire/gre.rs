//! The GRE header that carries redirected packets (draft-01 section 4.12.1; RFC 2784 with the
//! RFC 2890 key and sequence extensions).
//!
//! WCCP uses the plain 4-byte form: flags and version zero, protocol 0x883E. Routers and
//! engines of other makes may add a checksum, key or sequence number, so those parse too;
//! the deprecated routing fields and any version but 0 are refused.

use serde::{Deserialize, Serialize};

use super::redirect::{RedirectHeader, RedirectHeaderRepr, RedirectLayout};
use super::Error;

/// GRE protocol type of WCCP-redirected packets.
pub const PROTOCOL_WCCP: u16 = 0x883E;

/// IP protocol number of GRE.
pub const IP_PROTOCOL_GRE: u8 = 47;

mod field {
    use crate::wire::codec::Field;

    pub const FLAGS: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
}

/// Checksum present.
const FLAG_C: u16 = 0x8000;
/// Key present.
const FLAG_K: u16 = 0x2000;
/// Sequence number present.
const FLAG_S: u16 = 0x1000;
/// Every other bit of the first word: routing, strict route, recursion, reserved, version.
const FLAGS_REFUSED: u16 = !(FLAG_C | FLAG_K | FLAG_S);

/// Size of the plain header WCCP uses.
pub const GRE_HEADER_LEN: usize = 4;

/// A zero-copy view of a GRE header and its payload.
#[derive(Debug, Clone)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Wraps a buffer after [`GrePacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header its flags announce.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < GRE_HEADER_LEN {
            return Err(Error::Truncated {
                what: "GRE header",
                offset: 0,
                needed: GRE_HEADER_LEN,
                available: len,
            });
        }
        if len < self.header_len() {
            return Err(Error::Truncated {
                what: "GRE header",
                offset: 0,
                needed: self.header_len(),
                available: len,
            });
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first word: flags and version.
    pub fn flags_version(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The protocol type of the payload.
    pub fn protocol(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header size the flags announce.
    pub fn header_len(&self) -> usize {
        let f = self.flags_version();
        GRE_HEADER_LEN
            + [FLAG_C, FLAG_K, FLAG_S]
                .iter()
                .filter(|bit| f & **bit != 0)
                .count()
                * 4
    }

    fn word(&self, index: usize) -> u32 {
        let b = &self.buffer.as_ref()[GRE_HEADER_LEN + 4 * index..GRE_HEADER_LEN + 4 * index + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The checksum and the reserved field after it, when the C flag is set.
    pub fn checksum_word(&self) -> Option<u32> {
        (self.flags_version() & FLAG_C != 0).then(|| self.word(0))
    }

    /// The key, when the K flag is set.
    pub fn key(&self) -> Option<u32> {
        let f = self.flags_version();
        (f & FLAG_K != 0).then(|| self.word(usize::from(f & FLAG_C != 0)))
    }

    /// The sequence number, when the S flag is set.
    pub fn sequence(&self) -> Option<u32> {
        let f = self.flags_version();
        (f & FLAG_S != 0)
            .then(|| self.word(usize::from(f & FLAG_C != 0) + usize::from(f & FLAG_K != 0)))
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the flags and version word.
    pub fn set_flags_version(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the protocol type.
    pub fn set_protocol(&mut self, v: u16) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&v.to_be_bytes());
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// A GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GreRepr {
    /// Checksum field (the reserved half after it must be zero); not verified here.
    pub checksum: Option<u16>,
    /// Key.
    pub key: Option<u32>,
    /// Sequence number.
    pub sequence: Option<u32>,
    /// Payload protocol type.
    pub protocol: u16,
}

impl GreRepr {
    /// The header WCCP puts in front of a redirected packet.
    pub const WCCP: GreRepr = GreRepr {
        checksum: None,
        key: None,
        sequence: None,
        protocol: PROTOCOL_WCCP,
    };

    /// Reads a header, refusing version, routing and reserved bits.
    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>) -> Result<GreRepr, Error> {
        p.check_len()?;
        let f = p.flags_version();
        if f & FLAGS_REFUSED != 0 {
            return Err(Error::BadValue {
                what: "GRE flags and version",
                offset: 0,
                value: u32::from(f),
            });
        }
        let checksum = match p.checksum_word() {
            Some(w) if w & 0xffff != 0 => {
                return Err(Error::BadValue {
                    what: "GRE reserved1",
                    offset: 6,
                    value: w & 0xffff,
                })
            }
            Some(w) => Some((w >> 16) as u16),
            None => None,
        };
        Ok(GreRepr {
            checksum,
            key: p.key(),
            sequence: p.sequence(),
            protocol: p.protocol(),
        })
    }

    /// Bytes the header takes.
    pub fn buffer_len(&self) -> usize {
        GRE_HEADER_LEN
            + 4 * (usize::from(self.checksum.is_some())
                + usize::from(self.key.is_some())
                + usize::from(self.sequence.is_some()))
    }

    /// Writes the header at the start of `buf`, returning the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = self.buffer_len();
        if buf.len() < n {
            return Err(Error::BufferTooSmall {
                needed: n,
                available: buf.len(),
            });
        }
        let mut flags = 0;
        let mut words = Vec::with_capacity(3);
        if let Some(c) = self.checksum {
            flags |= FLAG_C;
            words.push(u32::from(c) << 16);
        }
        if let Some(k) = self.key {
            flags |= FLAG_K;
            words.push(k);
        }
        if let Some(s) = self.sequence {
            flags |= FLAG_S;
            words.push(s);
        }
        let mut p = GrePacket::new_unchecked(&mut buf[..n]);
        p.set_flags_version(flags);
        p.set_protocol(self.protocol);
        for (i, w) in words.iter().enumerate() {
            let at = GRE_HEADER_LEN + 4 * i;
            buf[at..at + 4].copy_from_slice(&w.to_be_bytes());
        }
        Ok(n)
    }
}

/// A WCCP GRE packet taken apart: the GRE header, the redirect header when there is one,
/// and the original IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    /// The GRE header.
    pub gre: GreRepr,
    /// The redirect header, absent when the payload starts straight with IPv4 or IPv6.
    pub redirect: Option<RedirectHeaderRepr>,
    /// The original packet.
    pub inner: &'a [u8],
}

/// Takes apart a GRE packet of protocol 0x883E.
///
/// Whether a redirect header is there is decided as Wireshark and Linux decide it: a payload
/// whose first nibble is an IP version (4 or 6) has none; anything else starts with one.
pub fn decapsulate(bytes: &[u8], layout: RedirectLayout) -> Result<Decapsulated<'_>, Error> {
    let p = GrePacket::new_checked(bytes)?;
    let gre = GreRepr::parse(&p)?;
    if gre.protocol != PROTOCOL_WCCP {
        return Err(Error::BadValue {
            what: "GRE protocol",
            offset: 2,
            value: u32::from(gre.protocol),
        });
    }
    let payload = bytes.get(p.header_len()..).unwrap_or_default();
    let starts_ip = payload.first().is_some_and(|b| matches!(b >> 4, 4 | 6));
    if starts_ip {
        return Ok(Decapsulated {
            gre,
            redirect: None,
            inner: payload,
        });
    }
    let rh = RedirectHeader::new_checked(payload).map_err(|e| e.at(gre.buffer_len()))?;
    let redirect = RedirectHeaderRepr::parse(&rh, layout).map_err(|e| e.at(gre.buffer_len()))?;
    Ok(Decapsulated {
        gre,
        redirect: Some(redirect),
        inner: &payload[super::redirect::REDIRECT_HEADER_LEN..],
    })
}

#[cfg(test)]
mod test {
    use super::*;

    static PLAIN: [u8; 4] = [0, 0, 0x88, 0x3e];

    #[test]
    fn deconstruct_construct() {
        let p = GrePacket::new_checked(&PLAIN[..]).unwrap();
        assert_eq!(p.flags_version(), 0);
        assert_eq!(p.protocol(), PROTOCOL_WCCP);
        assert_eq!(p.header_len(), 4);
        assert_eq!(GreRepr::parse(&p).unwrap(), GreRepr::WCCP);
        let mut buf = [0xa5; 4];
        assert_eq!(GreRepr::WCCP.emit(&mut buf).unwrap(), 4);
        assert_eq!(buf, PLAIN);
    }

    #[test]
    fn optional_fields() {
        let r = GreRepr {
            checksum: Some(0x1234),
            key: Some(7),
            sequence: Some(9),
            protocol: PROTOCOL_WCCP,
        };
        let mut buf = [0; 16];
        assert_eq!(r.emit(&mut buf).unwrap(), 16);
        assert_eq!(
            buf,
            [0xb0, 0, 0x88, 0x3e, 0x12, 0x34, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9]
        );
        let p = GrePacket::new_checked(&buf[..]).unwrap();
        assert_eq!(GreRepr::parse(&p).unwrap(), r);
        assert_eq!(
            GrePacket::new_checked(&buf[..15]).unwrap_err().kind(),
            "truncated"
        );
    }

    #[test]
    fn refused_bits() {
        for f in [0x4000u16, 0x0800, 0x0100, 0x0001, 0x0008] {
            let mut b = [0u8; 8];
            b[..2].copy_from_slice(&f.to_be_bytes());
            let p = GrePacket::new_unchecked(&b[..]);
            assert_eq!(
                GreRepr::parse(&p).unwrap_err().kind(),
                "bad_value",
                "{f:#x}"
            );
        }
        let b = [0x80, 0, 0x88, 0x3e, 0, 0, 0, 1];
        let p = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(GreRepr::parse(&p).unwrap_err().kind(), "bad_value");
    }

    #[test]
    fn decapsulate_both_ways() {
        let inner = [0x45u8, 0, 0, 20];
        let mut with = PLAIN.to_vec();
        with.extend([0, 5, 0, 17]);
        with.extend(inner);
        let d = decapsulate(&with, RedirectLayout::Wireshark).unwrap();
        let rh = d.redirect.unwrap();
        assert_eq!(rh.service_id, 5);
        assert_eq!(rh.primary_bucket, 17);
        assert_eq!(d.inner, inner);

        let mut without = PLAIN.to_vec();
        without.extend(inner);
        let d = decapsulate(&without, RedirectLayout::Wireshark).unwrap();
        assert_eq!(d.redirect, None);
        assert_eq!(d.inner, inner);

        let mut other = without.clone();
        other[2] = 0x08;
        other[3] = 0x00;
        assert_eq!(
            decapsulate(&other, RedirectLayout::Wireshark)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        let short = [0, 0, 0x88, 0x3e, 0, 5];
        assert_eq!(
            decapsulate(&short, RedirectLayout::Wireshark).unwrap_err(),
            Error::Truncated {
                what: "WCCP redirect header",
                offset: 4,
                needed: 4,
                available: 2
            }
        );
    }
}
