//! The one error type of the codec.
//!
//! Every variant names a distinct way a message can be wrong, so that a daemon can count
//! each in its own metric ([`Error::kind`]) and an operator can tell a truncated datagram from
//! a peer that speaks a different revision.

use thiserror::Error;

/// Why bytes could not be read as WCCP, or a representation could not be written.
///
/// `what` names the message part (a component, element or field) and `offset` is the byte
/// offset from the start of the buffer handed to the parser, so that a log line points at
/// the byte a capture shows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The bytes end before a field does.
    #[error("{what} truncated at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        /// The part being read.
        what: &'static str,
        /// Where the part starts.
        offset: usize,
        /// Bytes the part needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A length field disagrees with the bytes its contents take.
    #[error(
        "{what} at offset {offset}: length field says {declared} bytes, contents take {actual}"
    )]
    LengthMismatch {
        /// The part whose length field is wrong.
        what: &'static str,
        /// Where the part starts.
        offset: usize,
        /// The value of the length field.
        declared: usize,
        /// The bytes actually present or used.
        actual: usize,
    },
    /// A count field promises more elements than the remaining bytes can hold.
    #[error("{what} at offset {offset}: count {count} cannot fit in {available} bytes")]
    CountTooLarge {
        /// The counted list.
        what: &'static str,
        /// Where the count field is.
        offset: usize,
        /// The value of the count field.
        count: u32,
        /// Bytes left for the elements.
        available: usize,
    },
    /// The header's version is neither 0x0200 (v2) nor 0x0201 (v2 revision 1).
    #[error("unknown WCCP version 0x{version:04x}")]
    UnknownVersion {
        /// The version field.
        version: u16,
    },
    /// The header's message type is not one of the four v2 messages (10 to 13).
    #[error("unknown WCCP message type {message_type}")]
    UnknownMessageType {
        /// The type field.
        message_type: u32,
    },
    /// A field holds a value the drafts do not define (or reserved bits are set).
    #[error("{what} at offset {offset}: bad value {value:#x}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// Where the field is.
        offset: usize,
        /// Its value.
        value: u32,
    },
    /// A component that may appear once appears again.
    #[error("duplicate {what} component (type {component}) at offset {offset}")]
    DuplicateComponent {
        /// The component's name.
        what: &'static str,
        /// The component type.
        component: u16,
        /// Where the second copy starts.
        offset: usize,
    },
    /// A message lacks a component the drafts require for its type.
    #[error("{message} lacks its {what} component (type {component})")]
    MissingComponent {
        /// The message type's name.
        message: &'static str,
        /// The missing component's name.
        what: &'static str,
        /// The component type.
        component: u16,
    },
    /// A message carries a component the drafts do not allow in its type.
    #[error("{message} must not carry a {what} component (type {component})")]
    UnexpectedComponent {
        /// The message type's name.
        message: &'static str,
        /// The component's name.
        what: &'static str,
        /// The component type.
        component: u16,
    },
    /// A representation is too large for its 16-bit length field.
    #[error("{what} is {len} bytes, more than its length field can say ({max})")]
    TooLong {
        /// The part that is too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The largest size the field can hold.
        max: usize,
    },
    /// The buffer handed to `emit` is smaller than `buffer_len()`.
    #[error("buffer of {available} bytes is too small for {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// MD5 signing or checking was asked of a message with no Security Info component.
    #[error("message has no Security Info component")]
    NoSecurity,
    /// The message's security option is not the one expected.
    #[error("security option {found} where {expected} was expected")]
    SecurityOptionMismatch {
        /// The option expected (1: MD5).
        expected: u32,
        /// The option found.
        found: u32,
    },
    /// The MD5 digest does not match the message and password.
    #[error("MD5 digest does not match")]
    Md5Mismatch,
    /// An address index points past the end of the message's Address Table.
    #[error("address index {index} is outside the address table ({table_len} entries)")]
    AddressIndex {
        /// The index (1-based; 0 means "no address").
        index: u32,
        /// Entries in the table (0 when the message has none).
        table_len: usize,
    },
    /// A message mixes address forms: IPv4 addresses with an Address Table present, or
    /// table indexes without one. The receiver could not read it as meant.
    #[error("{what}: address {found} where the message uses {expected}")]
    AddressFormMismatch {
        /// The part holding the address.
        what: &'static str,
        /// The form the message uses.
        expected: &'static str,
        /// The form found.
        found: &'static str,
    },
}

impl Error {
    /// A stable snake_case name per variant, for metric labels and log fields.
    ///
    /// These names are an interface: dashboards and alerts key on them, so they never change.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "truncated",
            Error::LengthMismatch { .. } => "length_mismatch",
            Error::CountTooLarge { .. } => "count_too_large",
            Error::UnknownVersion { .. } => "unknown_version",
            Error::UnknownMessageType { .. } => "unknown_message_type",
            Error::BadValue { .. } => "bad_value",
            Error::DuplicateComponent { .. } => "duplicate_component",
            Error::MissingComponent { .. } => "missing_component",
            Error::UnexpectedComponent { .. } => "unexpected_component",
            Error::TooLong { .. } => "too_long",
            Error::BufferTooSmall { .. } => "buffer_too_small",
            Error::NoSecurity => "no_security",
            Error::SecurityOptionMismatch { .. } => "security_option_mismatch",
            Error::Md5Mismatch => "md5_mismatch",
            Error::AddressIndex { .. } => "address_index",
            Error::AddressFormMismatch { .. } => "address_form_mismatch",
        }
    }

    /// The same error with its offset moved by `base`: parsers of a part report offsets
    /// within the part, and the caller knows where the part sits.
    pub(crate) fn at(mut self, base: usize) -> Self {
        match &mut self {
            Error::Truncated { offset, .. }
            | Error::LengthMismatch { offset, .. }
            | Error::CountTooLarge { offset, .. }
            | Error::BadValue { offset, .. }
            | Error::DuplicateComponent { offset, .. } => *offset = offset.saturating_add(base),
            _ => {}
        }
        self
    }

    /// Every name [`Error::kind`] can return, so a daemon can register its counters up front.
    pub const KINDS: &'static [&'static str] = &[
        "truncated",
        "length_mismatch",
        "count_too_large",
        "unknown_version",
        "unknown_message_type",
        "bad_value",
        "duplicate_component",
        "missing_component",
        "unexpected_component",
        "too_long",
        "buffer_too_small",
        "no_security",
        "security_option_mismatch",
        "md5_mismatch",
        "address_index",
        "address_form_mismatch",
    ];
}
