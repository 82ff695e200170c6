//! Checked reading and exact writing, shared by every component.
//!
//! Parsing goes through [`Reader`], which never indexes without checking the length first and
//! never multiplies an attacker's count without `checked_mul`; that is how the codec keeps its
//! promise never to panic on input. Emitting goes through [`Writer`] into a buffer sized by
//! the representation's own `buffer_len`, so its indexing can only fail on a bug of ours.

use super::address::{Address, AddressMode};
use super::Error;

/// A byte range within a fixed-layout header (smoltcp's `field::Field`).
pub type Field = core::ops::Range<usize>;

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` from the start of the caller's buffer, for error context.
    base: usize,
    /// How 32-bit address fields are to be read.
    pub(crate) mode: AddressMode,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize, mode: AddressMode) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            mode,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let available = self.remaining();
        if n > available {
            return Err(Error::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                available,
            });
        }
        let start = self.pos;
        self.pos += n;
        self.buf.get(start..self.pos).ok_or(Error::Truncated {
            what,
            offset: self.base.saturating_add(start),
            needed: n,
            available,
        })
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A 32-bit address field, read in the message's address form.
    pub(crate) fn address(&mut self, what: &'static str) -> Result<Address, Error> {
        let offset = self.offset();
        let raw = self.u32(what)?;
        Address::from_field(raw, self.mode, what, offset)
    }

    /// A 32-bit element count, checked against the bytes left: each element takes at least
    /// `min_len` bytes, so a larger count is a lie we refuse before allocating for it.
    pub(crate) fn count(&mut self, what: &'static str, min_len: usize) -> Result<usize, Error> {
        let offset = self.offset();
        let count = self.u32(what)?;
        let available = self.remaining();
        let fits = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(min_len.max(1)))
            .is_some_and(|need| need <= available);
        if !fits {
            return Err(Error::CountTooLarge {
                what,
                offset,
                count,
                available,
            });
        }
        // `fits` proved the conversion works.
        Ok(count as usize)
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Error> {
        let base = self.offset();
        let bytes = self.take(n, what)?;
        Ok(Reader::new(bytes, base, self.mode))
    }

    /// The rest of the bytes.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.get(start..).unwrap_or_default()
    }

    /// Fails unless every byte was used: a length field that leaves bytes over disagrees with
    /// the contents it announced.
    pub(crate) fn finish(&self, what: &'static str, start: usize) -> Result<(), Error> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                offset: start,
                declared: self.buf.len(),
                actual: self.pos,
            })
        }
    }
}

/// A cursor over a buffer sized by `buffer_len()`.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    /// A length or count that the caller has checked fits (component bodies are at most
    /// 65535 bytes, so every inner length and count does).
    pub(crate) fn len16(&mut self, v: usize) {
        self.u16(u16::try_from(v).unwrap_or(u16::MAX));
    }

    pub(crate) fn len32(&mut self, v: usize) {
        self.u32(u32::try_from(v).unwrap_or(u32::MAX));
    }

    pub(crate) fn address(&mut self, a: &Address) {
        self.u32(a.to_field());
    }
}

/// Serde helpers that show raw bytes as lowercase hex, which is how people compare them with
/// a capture.
pub(crate) mod hex {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) || !s.is_ascii() {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).ok_or_else(|| D::Error::custom("expected an even number of hex digits"))
    }

    /// The same for fixed-size arrays (the MD5 digest).
    pub(crate) mod array {
        use super::*;

        pub(crate) fn serialize<S: Serializer, const N: usize>(
            bytes: &[u8; N],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            super::serialize(bytes, s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<[u8; N], D::Error> {
            let v = super::deserialize(d)?;
            v.try_into()
                .map_err(|_| D::Error::custom(format!("expected {N} bytes")))
        }
    }
}

/// Defines a bit-set newtype over a wire integer: named constants, unknown bits kept (so
/// that re-emitting reproduces them), `Debug` and JSON that show the names.
macro_rules! wire_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($ty:ty) {
            $(
                $(#[$fmeta:meta])*
                const $flag:ident = $value:expr, $label:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $ty);

        impl $name {
            $(
                $(#[$fmeta])*
                pub const $flag: Self = Self($value);
            )*

            const LABELS: &'static [(&'static str, $ty)] = &[$(($label, $value)),*];

            /// No bit set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The raw wire value.
            pub const fn bits(self) -> $ty {
                self.0
            }

            /// True when every bit of `other` is set here.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// True when any bit of `other` is set here.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Bits set in either.
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// Bits no constant names (reserved by the drafts).
            pub const fn unknown_bits(self) -> $ty {
                let mut known: $ty = 0;
                $( known |= $value; )*
                self.0 & !known
            }

            /// The names of the set bits that have one, in bit order.
            pub fn names(self) -> Vec<&'static str> {
                Self::LABELS
                    .iter()
                    .filter(|(_, v)| self.0 & *v == *v && *v != 0)
                    .map(|(n, _)| *n)
                    .collect()
            }
        }

        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                *self = self.union(rhs);
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}({:#x}", stringify!($name), self.0)?;
                for n in self.names() {
                    write!(f, " {n}")?;
                }
                write!(f, ")")
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(stringify!($name), 2)?;
                st.serialize_field("bits", &self.0)?;
                st.serialize_field("names", &self.names())?;
                st.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                #[serde(untagged)]
                enum Form {
                    Bits($ty),
                    Object { bits: $ty },
                }
                Ok(match Form::deserialize(d)? {
                    Form::Bits(b) | Form::Object { bits: b } => Self(b),
                })
            }
        }
    };
}

pub(crate) use wire_flags;
