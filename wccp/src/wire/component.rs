//! Components: the type-length-value items a message is made of (draft-01 section 5.6).
//!
//! A component is a 2-byte type, a 2-byte length (of the body only) and the body. The
//! [`Component`] enum has a variant per component the drafts and Wireshark define and keeps
//! any other type as [`Component::Unknown`], so that a newer peer's additions pass through
//! untouched and are counted rather than fatal.

use serde::{Deserialize, Serialize};

use super::address::{Address, AddressMode, VisitAddresses};
use super::codec::{Reader, Writer};
use super::{
    AddressTable, AltAssignment, AltAssignmentMap, AssignmentInfo, AssignmentMap, CapabilitiesInfo,
    CommandExtension, Error, RouterIdentityInfo, RouterQueryInfo, RouterViewInfo, SecurityInfo,
    ServiceInfo, WebCacheIdentityInfo, WebCacheViewInfo,
};

mod field {
    use crate::wire::codec::Field;

    pub const TYPE: Field = 0..2;
    pub const LENGTH: Field = 2..4;
}

/// Size of a component header.
pub const COMPONENT_HEADER_LEN: usize = 4;

/// The largest component body: its length field is 16 bits.
pub const MAX_BODY_LEN: usize = u16::MAX as usize;

/// Component type numbers (draft-01 section 5.6, and packet-wccp.c for revision 1).
pub mod kind {
    /// 0: Security Info.
    pub const SECURITY_INFO: u16 = 0;
    /// 1: Service Info.
    pub const SERVICE_INFO: u16 = 1;
    /// 2: Router Identity Info.
    pub const ROUTER_ID_INFO: u16 = 2;
    /// 3: Web-Cache Identity Info.
    pub const WC_ID_INFO: u16 = 3;
    /// 4: Router View Info.
    pub const RTR_VIEW_INFO: u16 = 4;
    /// 5: Web-Cache View Info.
    pub const WC_VIEW_INFO: u16 = 5;
    /// 6: Assignment Info (hash buckets).
    pub const REDIRECT_ASSIGNMENT: u16 = 6;
    /// 7: Router Query Info.
    pub const QUERY_INFO: u16 = 7;
    /// 8: Capabilities Info.
    pub const CAPABILITIES_INFO: u16 = 8;
    /// 13: Alternate Assignment.
    pub const ALT_ASSIGNMENT: u16 = 13;
    /// 14: Assignment Map.
    pub const ASSIGN_MAP: u16 = 14;
    /// 15: Command Extension.
    pub const COMMAND_EXTENSION: u16 = 15;
    /// 16: Alternate Assignment Map (revision 1).
    pub const ALT_ASSIGNMENT_MAP: u16 = 16;
    /// 17: Address Table (revision 1).
    pub const ADDRESS_TABLE: u16 = 17;

    /// Every type the codec parses into a typed variant.
    pub const KNOWN: &[u16] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17];

    /// True for a type with a typed variant.
    pub const fn is_known(kind: u16) -> bool {
        matches!(kind, 0..=8 | 13..=17)
    }
}

/// The drafts' name for a component type, for logs and errors.
pub const fn component_name(kind: u16) -> &'static str {
    match kind {
        kind::SECURITY_INFO => "Security Info",
        kind::SERVICE_INFO => "Service Info",
        kind::ROUTER_ID_INFO => "Router Identity Info",
        kind::WC_ID_INFO => "Web-Cache Identity Info",
        kind::RTR_VIEW_INFO => "Router View Info",
        kind::WC_VIEW_INFO => "Web-Cache View Info",
        kind::REDIRECT_ASSIGNMENT => "Assignment Info",
        kind::QUERY_INFO => "Router Query Info",
        kind::CAPABILITIES_INFO => "Capabilities Info",
        kind::ALT_ASSIGNMENT => "Alternate Assignment",
        kind::ASSIGN_MAP => "Assignment Map",
        kind::COMMAND_EXTENSION => "Command Extension",
        kind::ALT_ASSIGNMENT_MAP => "Alternate Assignment Map",
        kind::ADDRESS_TABLE => "Address Table",
        _ => "unknown component",
    }
}

/// A zero-copy view of one component: header fields and body, read in place.
#[derive(Debug, Clone)]
pub struct ComponentPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ComponentPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        ComponentPacket { buffer }
    }

    /// Wraps a buffer after [`ComponentPacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header and the body it announces (it may hold more:
    /// the rest of the message).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < COMPONENT_HEADER_LEN {
            return Err(Error::Truncated {
                what: "component header",
                offset: 0,
                needed: COMPONENT_HEADER_LEN,
                available: len,
            });
        }
        if len < self.total_len() {
            return Err(Error::Truncated {
                what: component_name(self.kind()),
                offset: 0,
                needed: self.total_len(),
                available: len,
            });
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The component type.
    pub fn kind(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The length field (of the body).
    pub fn length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header plus body.
    pub fn total_len(&self) -> usize {
        COMPONENT_HEADER_LEN + usize::from(self.length())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[COMPONENT_HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ComponentPacket<T> {
    /// Sets the type field.
    pub fn set_kind(&mut self, v: u16) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_length(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[COMPONENT_HEADER_LEN..end]
    }
}

/// What every typed component implements; the public `parse`/`buffer_len`/`emit` of each
/// component type are generated from it by `component_api!`.
pub(crate) trait ComponentBody: Sized + VisitAddresses {
    /// The component type number.
    const KIND: u16;
    /// Its name, for errors.
    const NAME: &'static str;

    /// Reads the body; the caller checks that every byte was used.
    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error>;

    /// Bytes the body takes.
    fn body_len(&self) -> usize;

    /// Writes the body into exactly `body_len()` bytes.
    fn emit_body(&self, w: &mut Writer<'_>);

    /// Refuses representations whose bytes would parse back as something else (an "other"
    /// variant that reuses a defined type number, for example).
    fn check(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Parses one component body, requiring every byte of it to be used.
pub(crate) fn parse_body<T: ComponentBody>(
    body: &[u8],
    base: usize,
    mode: AddressMode,
) -> Result<T, Error> {
    let mut r = Reader::new(body, base, mode);
    let v = T::parse_body(&mut r)?;
    r.finish(T::NAME, base.saturating_sub(COMPONENT_HEADER_LEN))?;
    Ok(v)
}

/// Parses exactly one component (header and body) of type `T`.
pub(crate) fn parse_one<T: ComponentBody>(bytes: &[u8], mode: AddressMode) -> Result<T, Error> {
    let p = ComponentPacket::new_checked(bytes)?;
    if p.kind() != T::KIND {
        return Err(Error::BadValue {
            what: "component type",
            offset: 0,
            value: u32::from(p.kind()),
        });
    }
    if bytes.len() != p.total_len() {
        return Err(Error::LengthMismatch {
            what: T::NAME,
            offset: 0,
            declared: usize::from(p.length()),
            actual: bytes.len().saturating_sub(COMPONENT_HEADER_LEN),
        });
    }
    parse_body(p.body(), COMPONENT_HEADER_LEN, mode)
}

/// Checks that a body fits its length field.
pub(crate) fn check_body_len(name: &'static str, len: usize) -> Result<(), Error> {
    if len > MAX_BODY_LEN {
        Err(Error::TooLong {
            what: name,
            len,
            max: MAX_BODY_LEN,
        })
    } else {
        Ok(())
    }
}

/// Writes one component (header and body) of type `T`, returning the bytes written.
pub(crate) fn emit_one<T: ComponentBody>(v: &T, buf: &mut [u8]) -> Result<usize, Error> {
    v.check()?;
    let body = v.body_len();
    check_body_len(T::NAME, body)?;
    let total = COMPONENT_HEADER_LEN + body;
    if buf.len() < total {
        return Err(Error::BufferTooSmall {
            needed: total,
            available: buf.len(),
        });
    }
    let mut w = Writer::new(&mut buf[..total]);
    w.u16(T::KIND);
    w.len16(body);
    v.emit_body(&mut w);
    debug_assert_eq!(
        w.position(),
        total,
        "{} body_len disagrees with emit",
        T::NAME
    );
    Ok(total)
}

/// Gives a component type its public smoltcp-style entry points.
macro_rules! component_api {
    ($t:ty) => {
        impl $t {
            /// Parses exactly one whole component of this type (4-byte header and body);
            /// `mode` says how address fields read (see [`crate::wire::AddressMode`]).
            pub fn parse(
                bytes: &[u8],
                mode: crate::wire::AddressMode,
            ) -> Result<Self, crate::wire::Error> {
                crate::wire::component::parse_one(bytes, mode)
            }

            /// Bytes [`Self::emit`] writes: the 4-byte header and the body.
            pub fn buffer_len(&self) -> usize {
                crate::wire::component::COMPONENT_HEADER_LEN
                    + crate::wire::component::ComponentBody::body_len(self)
            }

            /// Writes the component (header and body) at the start of `buf`, returning the
            /// bytes written.
            pub fn emit(&self, buf: &mut [u8]) -> Result<usize, crate::wire::Error> {
                crate::wire::component::emit_one(self, buf)
            }
        }
    };
}
pub(crate) use component_api;

/// One component of a message, typed when its type is one the drafts define.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Component {
    /// 0: Security Info (none or MD5).
    Security(SecurityInfo),
    /// 1: Service Info.
    Service(ServiceInfo),
    /// 2: Router Identity Info.
    RouterIdentity(RouterIdentityInfo),
    /// 3: Web-Cache Identity Info.
    WebCacheIdentity(WebCacheIdentityInfo),
    /// 4: Router View Info.
    RouterView(RouterViewInfo),
    /// 5: Web-Cache View Info.
    WebCacheView(WebCacheViewInfo),
    /// 6: Assignment Info.
    AssignmentInfo(AssignmentInfo),
    /// 7: Router Query Info.
    RouterQuery(RouterQueryInfo),
    /// 8: Capabilities Info.
    Capabilities(CapabilitiesInfo),
    /// 13: Alternate Assignment.
    AltAssignment(AltAssignment),
    /// 14: Assignment Map.
    AssignmentMap(AssignmentMap),
    /// 15: Command Extension.
    CommandExtension(CommandExtension),
    /// 16: Alternate Assignment Map (revision 1).
    AltAssignmentMap(AltAssignmentMap),
    /// 17: Address Table (revision 1).
    AddressTable(AddressTable),
    /// Any other type, kept byte for byte and re-emitted as received. `kind` must not be
    /// a type listed in [`kind::KNOWN`].
    Unknown {
        /// The component type.
        kind: u16,
        /// The body.
        #[serde(with = "super::codec::hex")]
        body: Vec<u8>,
    },
}

macro_rules! for_each_variant {
    ($self:expr, $v:ident => $e:expr, unknown $k:ident, $b:ident => $u:expr) => {
        match $self {
            Component::Security($v) => $e,
            Component::Service($v) => $e,
            Component::RouterIdentity($v) => $e,
            Component::WebCacheIdentity($v) => $e,
            Component::RouterView($v) => $e,
            Component::WebCacheView($v) => $e,
            Component::AssignmentInfo($v) => $e,
            Component::RouterQuery($v) => $e,
            Component::Capabilities($v) => $e,
            Component::AltAssignment($v) => $e,
            Component::AssignmentMap($v) => $e,
            Component::CommandExtension($v) => $e,
            Component::AltAssignmentMap($v) => $e,
            Component::AddressTable($v) => $e,
            Component::Unknown { kind: $k, body: $b } => $u,
        }
    };
}

fn kind_of<T: ComponentBody>(_: &T) -> u16 {
    T::KIND
}

fn body_len_of<T: ComponentBody>(v: &T) -> usize {
    v.body_len()
}

impl Component {
    /// The component type number.
    pub fn kind(&self) -> u16 {
        for_each_variant!(self, v => kind_of(v), unknown k, _b => *k)
    }

    /// The drafts' name for this component.
    pub fn name(&self) -> &'static str {
        component_name(self.kind())
    }

    /// Bytes the body takes.
    pub fn body_len(&self) -> usize {
        for_each_variant!(self, v => body_len_of(v), unknown _k, b => b.len())
    }

    /// Bytes [`Component::emit`] writes: header and body.
    pub fn buffer_len(&self) -> usize {
        COMPONENT_HEADER_LEN + self.body_len()
    }

    /// Reads a body of type `kind` that starts `base` bytes into the message.
    pub(crate) fn parse_kind(
        kind: u16,
        body: &[u8],
        base: usize,
        mode: AddressMode,
    ) -> Result<Component, Error> {
        Ok(match kind {
            kind::SECURITY_INFO => Component::Security(parse_body(body, base, mode)?),
            kind::SERVICE_INFO => Component::Service(parse_body(body, base, mode)?),
            kind::ROUTER_ID_INFO => Component::RouterIdentity(parse_body(body, base, mode)?),
            kind::WC_ID_INFO => Component::WebCacheIdentity(parse_body(body, base, mode)?),
            kind::RTR_VIEW_INFO => Component::RouterView(parse_body(body, base, mode)?),
            kind::WC_VIEW_INFO => Component::WebCacheView(parse_body(body, base, mode)?),
            kind::REDIRECT_ASSIGNMENT => Component::AssignmentInfo(parse_body(body, base, mode)?),
            kind::QUERY_INFO => Component::RouterQuery(parse_body(body, base, mode)?),
            kind::CAPABILITIES_INFO => Component::Capabilities(parse_body(body, base, mode)?),
            kind::ALT_ASSIGNMENT => Component::AltAssignment(parse_body(body, base, mode)?),
            kind::ASSIGN_MAP => Component::AssignmentMap(parse_body(body, base, mode)?),
            kind::COMMAND_EXTENSION => Component::CommandExtension(parse_body(body, base, mode)?),
            kind::ALT_ASSIGNMENT_MAP => Component::AltAssignmentMap(parse_body(body, base, mode)?),
            kind::ADDRESS_TABLE => Component::AddressTable(parse_body(body, base, mode)?),
            other => Component::Unknown {
                kind: other,
                body: body.to_vec(),
            },
        })
    }

    /// Parses exactly one whole component (header and body) of any type.
    pub fn parse(bytes: &[u8], mode: AddressMode) -> Result<Component, Error> {
        let p = ComponentPacket::new_checked(bytes)?;
        if bytes.len() != p.total_len() {
            return Err(Error::LengthMismatch {
                what: component_name(p.kind()),
                offset: 0,
                declared: usize::from(p.length()),
                actual: bytes.len().saturating_sub(COMPONENT_HEADER_LEN),
            });
        }
        Component::parse_kind(p.kind(), p.body(), COMPONENT_HEADER_LEN, mode)
    }

    /// Refuses a representation whose bytes would not parse back to it.
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_body_len(self.name(), self.body_len())?;
        for_each_variant!(self, v => v.check(), unknown k, _b => {
            if kind::is_known(*k) {
                Err(Error::BadValue { what: "unknown component type", offset: 0, value: u32::from(*k) })
            } else {
                Ok(())
            }
        })
    }

    /// Writes header and body into exactly `buffer_len()` bytes (checked by the caller).
    pub(crate) fn emit_into(&self, w: &mut Writer<'_>) {
        w.u16(self.kind());
        w.len16(self.body_len());
        for_each_variant!(self, v => v.emit_body(w), unknown _k, b => w.bytes(b))
    }

    /// Writes the component at the start of `buf`, returning the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let total = self.buffer_len();
        if buf.len() < total {
            return Err(Error::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        }
        let mut w = Writer::new(&mut buf[..total]);
        self.emit_into(&mut w);
        Ok(total)
    }
}

impl VisitAddresses for Component {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        for_each_variant!(self, v => v.visit_addresses(f), unknown _k, _b => {})
    }
}
