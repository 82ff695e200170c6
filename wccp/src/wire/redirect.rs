//! The 4-byte WCCP redirect header that follows the GRE header of a redirected packet
//! (draft-01 section 4.12.1).
//!
//! Byte 0 carries the flags, then the service id, the alternate bucket and the primary
//! bucket. Two bit layouts exist for the flags:
//!
//! - [`RedirectLayout::Wireshark`]: D (dynamic service) = 0x01, A (alternate bucket used) =
//!   0x02, U (header present, contents to be ignored) = 0x04. This is what Wireshark's GRE
//!   dissector reads and keeps the first nibble 0, which Linux's GRE receive path and
//!   Wireshark need to tell the header from an IPv4 header. The default.
//! - [`RedirectLayout::Draft01`]: draft-01's figure read most-significant bit first, D =
//!   0x80, A = 0x40, no U bit. With A set and D clear the first nibble is 4 and receivers
//!   take the header for IPv4, so this form is for reading old peers, not for sending.
//!
//! A returned packet with no redirect header gets a null one ([`RedirectHeaderRepr::NULL`]).

use serde::{Deserialize, Serialize};

use super::Error;

mod field {
    pub const FLAGS: usize = 0;
    pub const SERVICE_ID: usize = 1;
    pub const ALT_BUCKET: usize = 2;
    pub const PRIMARY_BUCKET: usize = 3;
}

/// Size of the redirect header.
pub const REDIRECT_HEADER_LEN: usize = 4;

/// Which bits of byte 0 carry the flags; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RedirectLayout {
    /// D = 0x01, A = 0x02, U = 0x04 (Wireshark, revision 1 peers).
    #[default]
    Wireshark,
    /// D = 0x80, A = 0x40 (draft-01's figure, most-significant bit first).
    Draft01,
}

impl RedirectLayout {
    const fn bits(self) -> (u8, u8, u8) {
        match self {
            RedirectLayout::Wireshark => (0x01, 0x02, 0x04),
            RedirectLayout::Draft01 => (0x80, 0x40, 0),
        }
    }
}

/// A zero-copy view of a redirect header.
#[derive(Debug, Clone)]
pub struct RedirectHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RedirectHeader<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        RedirectHeader { buffer }
    }

    /// Wraps a buffer of at least 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < REDIRECT_HEADER_LEN {
            Err(Error::Truncated {
                what: "WCCP redirect header",
                offset: 0,
                needed: REDIRECT_HEADER_LEN,
                available: len,
            })
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Byte 0, the flags.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The service id.
    pub fn service_id(&self) -> u8 {
        self.buffer.as_ref()[field::SERVICE_ID]
    }

    /// The alternate bucket.
    pub fn alt_bucket(&self) -> u8 {
        self.buffer.as_ref()[field::ALT_BUCKET]
    }

    /// The primary bucket.
    pub fn primary_bucket(&self) -> u8 {
        self.buffer.as_ref()[field::PRIMARY_BUCKET]
    }

    /// What follows the header (the original packet).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[REDIRECT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RedirectHeader<T> {
    /// Sets byte 0.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the service id.
    pub fn set_service_id(&mut self, v: u8) {
        self.buffer.as_mut()[field::SERVICE_ID] = v;
    }

    /// Sets the alternate bucket.
    pub fn set_alt_bucket(&mut self, v: u8) {
        self.buffer.as_mut()[field::ALT_BUCKET] = v;
    }

    /// Sets the primary bucket.
    pub fn set_primary_bucket(&mut self, v: u8) {
        self.buffer.as_mut()[field::PRIMARY_BUCKET] = v;
    }
}

/// A redirect header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RedirectHeaderRepr {
    /// D: the service is dynamic (else well known).
    pub dynamic: bool,
    /// A: the packet went by its alternate bucket.
    pub alt_bucket_used: bool,
    /// U: the header is present but its contents mean nothing (Wireshark layout only).
    pub ignore: bool,
    /// The service group.
    pub service_id: u8,
    /// Alternate bucket (hash assignment only).
    pub alt_bucket: u8,
    /// Primary bucket (hash assignment only).
    pub primary_bucket: u8,
}

impl RedirectHeaderRepr {
    /// All zeros: what an engine returning a packet that had no redirect header puts in.
    pub const NULL: RedirectHeaderRepr = RedirectHeaderRepr {
        dynamic: false,
        alt_bucket_used: false,
        ignore: false,
        service_id: 0,
        alt_bucket: 0,
        primary_bucket: 0,
    };

    /// Reads a header in `layout`; bits the layout does not define must be zero.
    pub fn parse<T: AsRef<[u8]>>(
        p: &RedirectHeader<T>,
        layout: RedirectLayout,
    ) -> Result<RedirectHeaderRepr, Error> {
        p.check_len()?;
        let (d, a, u) = layout.bits();
        let f = p.flags();
        if f & !(d | a | u) != 0 {
            return Err(Error::BadValue {
                what: "WCCP redirect header: reserved flags",
                offset: field::FLAGS,
                value: u32::from(f),
            });
        }
        Ok(RedirectHeaderRepr {
            dynamic: f & d != 0,
            alt_bucket_used: f & a != 0,
            ignore: u != 0 && f & u != 0,
            service_id: p.service_id(),
            alt_bucket: p.alt_bucket(),
            primary_bucket: p.primary_bucket(),
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        REDIRECT_HEADER_LEN
    }

    /// Writes the header in `layout` at the start of `buf`; the draft-01 layout has no U
    /// bit, so `ignore` is refused there.
    pub fn emit(&self, buf: &mut [u8], layout: RedirectLayout) -> Result<usize, Error> {
        if buf.len() < REDIRECT_HEADER_LEN {
            return Err(Error::BufferTooSmall {
                needed: REDIRECT_HEADER_LEN,
                available: buf.len(),
            });
        }
        let (d, a, u) = layout.bits();
        if self.ignore && u == 0 {
            return Err(Error::BadValue {
                what: "WCCP redirect header: U flag in the draft-01 layout",
                offset: field::FLAGS,
                value: 1,
            });
        }
        let mut flags = 0;
        if self.dynamic {
            flags |= d;
        }
        if self.alt_bucket_used {
            flags |= a;
        }
        if self.ignore {
            flags |= u;
        }
        let mut p = RedirectHeader::new_unchecked(&mut buf[..REDIRECT_HEADER_LEN]);
        p.set_flags(flags);
        p.set_service_id(self.service_id);
        p.set_alt_bucket(self.alt_bucket);
        p.set_primary_bucket(self.primary_bucket);
        Ok(REDIRECT_HEADER_LEN)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static BYTES: [u8; 4] = [0x03, 90, 17, 200];

    fn repr() -> RedirectHeaderRepr {
        RedirectHeaderRepr {
            dynamic: true,
            alt_bucket_used: true,
            ignore: false,
            service_id: 90,
            alt_bucket: 17,
            primary_bucket: 200,
        }
    }

    #[test]
    fn deconstruct() {
        let p = RedirectHeader::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.flags(), 3);
        assert_eq!(p.service_id(), 90);
        assert_eq!(p.alt_bucket(), 17);
        assert_eq!(p.primary_bucket(), 200);
        assert_eq!(
            RedirectHeaderRepr::parse(&p, RedirectLayout::Wireshark).unwrap(),
            repr()
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5; 4];
        repr().emit(&mut buf, RedirectLayout::Wireshark).unwrap();
        assert_eq!(buf, BYTES);
        repr().emit(&mut buf, RedirectLayout::Draft01).unwrap();
        assert_eq!(buf, [0xc0, 90, 17, 200]);
        let p = RedirectHeader::new_checked(&buf[..]).unwrap();
        assert_eq!(
            RedirectHeaderRepr::parse(&p, RedirectLayout::Draft01).unwrap(),
            repr()
        );
        RedirectHeaderRepr::NULL
            .emit(&mut buf, RedirectLayout::Wireshark)
            .unwrap();
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn negative() {
        assert_eq!(
            RedirectHeader::new_checked(&BYTES[..3]).unwrap_err().kind(),
            "truncated"
        );
        let b = [0x08, 0, 0, 0];
        let p = RedirectHeader::new_checked(&b[..]).unwrap();
        assert_eq!(
            RedirectHeaderRepr::parse(&p, RedirectLayout::Wireshark)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        let p = RedirectHeader::new_checked(&BYTES[..]).unwrap();
        assert_eq!(
            RedirectHeaderRepr::parse(&p, RedirectLayout::Draft01)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        let ign = RedirectHeaderRepr {
            ignore: true,
            ..RedirectHeaderRepr::NULL
        };
        assert_eq!(
            ign.emit(&mut [0; 4], RedirectLayout::Draft01)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        assert_eq!(
            repr()
                .emit(&mut [0; 3], RedirectLayout::Wireshark)
                .unwrap_err()
                .kind(),
            "buffer_too_small"
        );
    }
}
