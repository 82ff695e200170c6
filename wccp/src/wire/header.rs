//! The 8-byte WCCP message header (draft-01 section 5.5) and the zero-copy message view.

use serde::{Deserialize, Serialize};

use super::component::ComponentPacket;
use super::Error;

mod field {
    use crate::wire::codec::Field;

    pub const TYPE: Field = 0..4;
    pub const VERSION: Field = 4..6;
    pub const LENGTH: Field = 6..8;
}

/// Size of the message header.
pub const HEADER_LEN: usize = 8;

/// The protocol revision in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    /// 0x0200: draft-wilson-wrec-wccp-v2.
    V2,
    /// 0x0201: v2 revision 1 (draft-mclaggan-wccp-v2rev1), which adds the Address Table,
    /// IPv6 and the alternate assignment forms.
    V2Rev1,
}

impl Version {
    /// The header value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Version::V2 => 0x0200,
            Version::V2Rev1 => 0x0201,
        }
    }

    /// The version for a header value, if it is one we speak.
    pub const fn from_u16(v: u16) -> Option<Version> {
        match v {
            0x0200 => Some(Version::V2),
            0x0201 => Some(Version::V2Rev1),
            _ => None,
        }
    }
}

/// The four WCCP v2 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    /// 10: an engine announces itself and its view to a router.
    HereIAm,
    /// 11: a router answers with its view of the service group.
    ISeeYou,
    /// 12: the designated engine hands the routers the assignment.
    RedirectAssign,
    /// 13: a router asks an engine that went quiet whether it is still there.
    RemovalQuery,
}

impl MessageType {
    /// The header value.
    pub const fn to_u32(self) -> u32 {
        match self {
            MessageType::HereIAm => 10,
            MessageType::ISeeYou => 11,
            MessageType::RedirectAssign => 12,
            MessageType::RemovalQuery => 13,
        }
    }

    /// The message type for a header value, if it is a v2 message.
    pub const fn from_u32(v: u32) -> Option<MessageType> {
        match v {
            10 => Some(MessageType::HereIAm),
            11 => Some(MessageType::ISeeYou),
            12 => Some(MessageType::RedirectAssign),
            13 => Some(MessageType::RemovalQuery),
            _ => None,
        }
    }

    /// The drafts' name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::HereIAm => "Here-I-Am",
            MessageType::ISeeYou => "I-See-You",
            MessageType::RedirectAssign => "Redirect-Assign",
            MessageType::RemovalQuery => "Removal-Query",
        }
    }
}

/// A zero-copy view of a message: the header fields and the component list, read in place.
///
/// Use it where a full parse is more than needed (finding the security component to check
/// a digest, peeking at the message type). Accessors are safe after [`MessagePacket::new_checked`].
#[derive(Debug, Clone)]
pub struct MessagePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MessagePacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        MessagePacket { buffer }
    }

    /// Wraps a buffer after [`MessagePacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header and the `length` bytes it announces.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                what: "message header",
                offset: 0,
                needed: HEADER_LEN,
                available: len,
            });
        }
        let total = self.total_len();
        if len < total {
            return Err(Error::Truncated {
                what: "message",
                offset: 0,
                needed: total,
                available: len,
            });
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type field.
    pub fn message_type(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The version field.
    pub fn version(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::VERSION];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The length field: bytes after the header.
    pub fn length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header plus announced length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.length())
    }

    /// The bytes the header announces, header included (the MD5 covers exactly these).
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }

    /// The component bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// The components in wire order, each with its offset from the start of the message;
    /// stops after the first malformed header.
    pub fn components(&self) -> Components<'_> {
        Components {
            bytes: self.message(),
            offset: HEADER_LEN,
            failed: false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MessagePacket<T> {
    /// Sets the message type field.
    pub fn set_message_type(&mut self, v: u32) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, v: u16) {
        self.buffer.as_mut()[field::VERSION].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_length(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
}

/// Iterator over a message's components; see [`MessagePacket::components`].
#[derive(Debug, Clone)]
pub struct Components<'a> {
    bytes: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Components<'a> {
    type Item = Result<(usize, ComponentPacket<&'a [u8]>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.bytes.len() {
            return None;
        }
        let rest = self.bytes.get(self.offset..)?;
        match ComponentPacket::new_checked(rest) {
            Ok(p) => {
                let at = self.offset;
                let total = p.total_len();
                self.offset = self.offset.saturating_add(total);
                let body_end = at + total;
                // Narrow the view to this component alone.
                Some(Ok((
                    at,
                    ComponentPacket::new_unchecked(&self.bytes[at..body_end]),
                )))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e.at(self.offset)))
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static BYTES: [u8; 16] = [
        0, 0, 0, 10, 0x02, 0x00, 0, 8, // header: Here-I-Am, v2, 8 bytes
        0, 0, 0, 4, 0, 0, 0, 0, // Security Info, none
    ];

    #[test]
    fn deconstruct() {
        let p = MessagePacket::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.message_type(), 10);
        assert_eq!(p.version(), 0x0200);
        assert_eq!(p.length(), 8);
        let comps: Vec<_> = p.components().collect::<Result<_, _>>().unwrap();
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].0, 8);
        assert_eq!(comps[0].1.kind(), 0);
        assert_eq!(comps[0].1.body(), &[0, 0, 0, 0]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 16];
        buf[8..].copy_from_slice(&BYTES[8..]);
        let mut p = MessagePacket::new_unchecked(&mut buf[..]);
        p.set_message_type(10);
        p.set_version(0x0200);
        p.set_length(8);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            MessagePacket::new_checked(&BYTES[..7]).unwrap_err().kind(),
            "truncated"
        );
        assert_eq!(
            MessagePacket::new_checked(&BYTES[..15]).unwrap_err().kind(),
            "truncated"
        );
    }

    #[test]
    fn component_header_overruns() {
        let mut b = BYTES;
        b[11] = 5; // security body claims 5 bytes, 4 present
        let p = MessagePacket::new_checked(&b[..]).unwrap();
        let mut it = p.components();
        let e = it.next().unwrap().unwrap_err();
        assert_eq!(e.kind(), "truncated");
        assert!(it.next().is_none());
    }
}
