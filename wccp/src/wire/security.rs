//! Security Info (component 0) and the MD5 message digest (draft-01 sections 4.7 and 5.6.1).
//!
//! The digest is MD5 over the service group password, zero-padded to 8 bytes, followed by
//! the whole message (header included) with the 16-byte digest field zeroed. The password
//! comes first: the draft's wording, and what Squid's `wccp2_update_md5_security` does. Like
//! Squid, a password longer than 8 bytes is cut to 8 (the draft's maximum).

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody, COMPONENT_HEADER_LEN};
use super::header::MessagePacket;
use super::Error;

/// Security option 0: no authentication.
pub const SECURITY_NONE: u32 = 0;
/// Security option 1: MD5 digest of password and message.
pub const SECURITY_MD5: u32 = 1;
/// Size of the MD5 digest field.
pub const MD5_DIGEST_LEN: usize = 16;
/// Longest password the draft allows; longer ones are cut.
pub const MAX_PASSWORD_LEN: usize = 8;

mod field {
    use crate::wire::codec::Field;

    /// Within the body.
    pub const OPTION: Field = 0..4;
    pub const DIGEST: Field = 4..20;
}

/// The Security Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityInfo {
    /// Option 0: the body is the option alone.
    None,
    /// Option 1: the body carries the digest ([`md5_sign`] fills it in after emitting).
    Md5 {
        /// The digest as on the wire (zeros before signing).
        #[serde(with = "super::codec::hex::array")]
        digest: [u8; MD5_DIGEST_LEN],
    },
}

impl SecurityInfo {
    /// The MD5 form with a zero digest, ready to be signed once emitted.
    pub const fn md5_unsigned() -> SecurityInfo {
        SecurityInfo::Md5 {
            digest: [0; MD5_DIGEST_LEN],
        }
    }

    /// The option number.
    pub const fn option(&self) -> u32 {
        match self {
            SecurityInfo::None => SECURITY_NONE,
            SecurityInfo::Md5 { .. } => SECURITY_MD5,
        }
    }
}

impl ComponentBody for SecurityInfo {
    const KIND: u16 = kind::SECURITY_INFO;
    const NAME: &'static str = "Security Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let offset = r.offset();
        match r.u32("Security Info: option")? {
            SECURITY_NONE => Ok(SecurityInfo::None),
            SECURITY_MD5 => Ok(SecurityInfo::Md5 {
                digest: r.array("Security Info: MD5 digest")?,
            }),
            value => Err(Error::BadValue {
                what: "Security Info: option",
                offset,
                value,
            }),
        }
    }

    fn body_len(&self) -> usize {
        match self {
            SecurityInfo::None => field::OPTION.end,
            SecurityInfo::Md5 { .. } => field::DIGEST.end,
        }
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u32(self.option());
        if let SecurityInfo::Md5 { digest } = self {
            w.bytes(digest);
        }
    }
}

impl VisitAddresses for SecurityInfo {
    fn visit_addresses(&self, _: &mut dyn FnMut(&'static str, &Address)) {}
}

component_api!(SecurityInfo);

/// Where the digest field of an MD5-secured message sits: the bytes the digest covers and
/// the field's offset within them.
fn locate_digest(message: &[u8]) -> Result<(usize, usize), Error> {
    let packet = MessagePacket::new_checked(message)?;
    for item in packet.components() {
        let (offset, comp) = item?;
        if comp.kind() != kind::SECURITY_INFO {
            continue;
        }
        let body = comp.body();
        let option = body
            .get(field::OPTION)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(Error::Truncated {
                what: "Security Info: option",
                offset: offset + COMPONENT_HEADER_LEN,
                needed: 4,
                available: body.len(),
            })?;
        if option != SECURITY_MD5 {
            return Err(Error::SecurityOptionMismatch {
                expected: SECURITY_MD5,
                found: option,
            });
        }
        if body.len() != field::DIGEST.end {
            return Err(Error::LengthMismatch {
                what: "Security Info",
                offset,
                declared: body.len(),
                actual: field::DIGEST.end,
            });
        }
        return Ok((
            packet.total_len(),
            offset + COMPONENT_HEADER_LEN + field::DIGEST.start,
        ));
    }
    Err(Error::NoSecurity)
}

/// The digest of `message` (its announced length; the digest field counts as zeros) under
/// `password`. Fails unless the message carries an MD5 Security Info component.
pub fn md5_digest(message: &[u8], password: &[u8]) -> Result<[u8; MD5_DIGEST_LEN], Error> {
    let (end, at) = locate_digest(message)?;
    let mut key = [0u8; MAX_PASSWORD_LEN];
    let n = password.len().min(MAX_PASSWORD_LEN);
    key[..n].copy_from_slice(&password[..n]);
    let mut h = Md5::new();
    h.update(key);
    h.update(&message[..at]);
    h.update([0u8; MD5_DIGEST_LEN]);
    h.update(&message[at + MD5_DIGEST_LEN..end]);
    Ok(h.finalize().into())
}

/// Fills in the digest of an emitted message, in place.
pub fn md5_sign(message: &mut [u8], password: &[u8]) -> Result<(), Error> {
    let digest = md5_digest(message, password)?;
    let (_, at) = locate_digest(message)?;
    message[at..at + MD5_DIGEST_LEN].copy_from_slice(&digest);
    Ok(())
}

/// Checks a received message's digest against `password`: `Ok` only when the message carries
/// an MD5 Security Info component whose digest matches.
pub fn md5_verify(message: &[u8], password: &[u8]) -> Result<(), Error> {
    let expected = md5_digest(message, password)?;
    let (_, at) = locate_digest(message)?;
    let got = &message[at..at + MD5_DIGEST_LEN];
    // Constant-time compare: the digest is an authenticator.
    let diff = expected
        .iter()
        .zip(got)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(Error::Md5Mismatch)
    }
}

/// [`md5_verify`] as a yes/no, for callers that only gate on it.
pub fn md5_is_valid(message: &[u8], password: &[u8]) -> bool {
    md5_verify(message, password).is_ok()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;

    static NONE_BYTES: [u8; 8] = [0, 0, 0, 4, 0, 0, 0, 0];
    static MD5_BYTES: [u8; 24] = [
        0, 0, 0, 20, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];

    fn md5_repr() -> SecurityInfo {
        SecurityInfo::Md5 {
            digest: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        }
    }

    #[test]
    fn parse() {
        assert_eq!(
            SecurityInfo::parse(&NONE_BYTES, AddressMode::Ipv4).unwrap(),
            SecurityInfo::None
        );
        assert_eq!(
            SecurityInfo::parse(&MD5_BYTES, AddressMode::Ipv4).unwrap(),
            md5_repr()
        );
    }

    #[test]
    fn emit() {
        let mut buf = [0xa5u8; 24];
        assert_eq!(md5_repr().emit(&mut buf).unwrap(), 24);
        assert_eq!(buf, MD5_BYTES);
        let mut buf = [0xa5u8; 8];
        assert_eq!(SecurityInfo::None.emit(&mut buf).unwrap(), 8);
        assert_eq!(buf, NONE_BYTES);
        assert_eq!(
            SecurityInfo::None.emit(&mut [0u8; 7]).unwrap_err().kind(),
            "buffer_too_small"
        );
    }

    #[test]
    fn bad_option() {
        let mut b = NONE_BYTES;
        b[7] = 2;
        assert_eq!(
            SecurityInfo::parse(&b, AddressMode::Ipv4).unwrap_err(),
            Error::BadValue {
                what: "Security Info: option",
                offset: 4,
                value: 2
            }
        );
    }

    #[test]
    fn md5_truncated_and_too_long() {
        let mut b = MD5_BYTES;
        b[3] = 19;
        let e = SecurityInfo::parse(&b[..23], AddressMode::Ipv4).unwrap_err();
        assert_eq!(e.kind(), "truncated");
        let mut b = NONE_BYTES.to_vec();
        b[3] = 5;
        b.push(0);
        let e = SecurityInfo::parse(&b, AddressMode::Ipv4).unwrap_err();
        assert_eq!(e.kind(), "length_mismatch");
    }
}
