//! Bytes ⇄ typed WCCPv2 messages and components, MD5 security, GRE and redirect headers.
//!
//! The shape follows smoltcp's `wire`: a zero-copy view (`*Packet<T: AsRef<[u8]>>`) that
//! checks lengths before any accessor runs, and an owned representation with `parse`,
//! `buffer_len` and `emit`. Parsing never panics and never trusts a length or count before
//! checking it against the bytes present; every failure is a typed [`Error`] whose
//! [`Error::kind`] names a metric.
//!
//! Protocol sources: draft-wilson-wrec-wccp-v2-01 (and -03's mask data in the Web-Cache
//! Identity) for v2 (version 0x0200); Wireshark's `packet-wccp.c` for v2 revision 1 (version
//! 0x0201: Alternate Assignment Map, Address Table, extended assignment data, capability
//! types 4 and 5), since no full text of draft-mclaggan-wccp-v2rev1 was available. Wireshark
//! is also the independent checker of what we emit, so where the texts and Wireshark
//! differ, the module that implements the layout says which way it went and why.
//!
//! # Entry points
//!
//! - [`Message::parse`] / [`Message::emit`] / [`Message::to_bytes`]: whole messages.
//!   `emit(parse(b)) == b` for every `b` that parses; unknown components are kept as
//!   [`Component::Unknown`] and listed by [`Message::unknown_kinds`].
//! - [`md5_sign`] / [`md5_verify`] (or [`Message::to_bytes_signed`]): MD5 security.
//! - [`MessagePacket`] / [`ComponentPacket`]: in-place views of a message and a component.
//! - [`GreRepr`], [`RedirectHeaderRepr`] and [`decapsulate`]: the data-plane encapsulation.
//!
//! # Addresses
//!
//! Address fields are [`Address`]es: IPv4 in v2, indexes into the message's
//! [`AddressTable`] when it has one (revision 1, how IPv6 travels). [`Message::resolve`]
//! turns an index into the address.
//!
//! # Fuzzing
//!
//! `wccp/fuzz` holds a cargo-fuzz target that parses messages and single components,
//! re-emits what parses and requires identical bytes, signs and verifies MD5, and parses
//! GRE and redirect headers. Seeds (Squid's real messages and one of each form we emit)
//! are in `wccp/fuzz/seeds/message`:
//!
//! ```text
//! cd wccp/fuzz && mkdir -p corpus/message
//! cargo +nightly fuzz run message corpus/message seeds/message -- -max_total_time=600 -jobs=1
//! ```

#![deny(missing_docs)]

mod address;
mod address_table;
mod alt_assignment;
mod assignment;
mod assignment_map;
mod capabilities;
mod codec;
mod command;
mod component;
mod elements;
mod error;
mod gre;
mod header;
mod mask;
mod message;
mod redirect;
mod router_identity;
mod router_query;
mod router_view;
mod security;
mod service;
mod web_cache_identity;
mod web_cache_view;

#[cfg(test)]
mod proptests;

pub use address::{Address, AddressMode};
pub use address_table::{family, AddressTable};
pub use alt_assignment::{AltAssignment, AltAssignmentData, AltAssignmentMap};
pub use assignment::{AssignmentInfo, BucketTable, HashAssignment, BUCKETS};
pub use assignment_map::AssignmentMap;
pub use capabilities::{
    capability_type, AssignmentMethods, CapabilitiesInfo, Capability, ForwardingMethods,
    ReturnMethods, TimerScale, TransmitT,
};
pub use codec::Field;
pub use command::{command_type, Command, CommandExtension};
pub use component::{
    component_name, kind, Component, ComponentPacket, COMPONENT_HEADER_LEN, MAX_BODY_LEN,
};
pub use elements::{AssignmentKey, RouterAssignmentElement, RouterIdElement};
pub use error::Error;
pub use gre::{
    decapsulate, Decapsulated, GrePacket, GreRepr, GRE_HEADER_LEN, IP_PROTOCOL_GRE, PROTOCOL_WCCP,
};
pub use header::{Components, MessagePacket, MessageType, Version, HEADER_LEN};
pub use mask::{AltMaskValueSet, MaskElement, MaskValueSet, ValueElement, WebCacheValueElement};
pub use message::{Message, MAX_MESSAGE_BODY};
pub use redirect::{RedirectHeader, RedirectHeaderRepr, RedirectLayout, REDIRECT_HEADER_LEN};
pub use router_identity::RouterIdentityInfo;
pub use router_query::RouterQueryInfo;
pub use router_view::RouterViewInfo;
pub use security::{
    md5_digest, md5_is_valid, md5_sign, md5_verify, SecurityInfo, MAX_PASSWORD_LEN, MD5_DIGEST_LEN,
    SECURITY_MD5, SECURITY_NONE,
};
pub use service::{
    ServiceFlags, ServiceInfo, ServiceType, SERVICE_INFO_LEN, SERVICE_WEB_CACHE,
    WELL_KNOWN_PRIORITY,
};
pub use web_cache_identity::{
    assignment_type, AltMaskAssignmentData, AssignmentData, BucketSet, ExtendedAssignmentData,
    HashAssignmentData, IdentityFlags, MaskAssignmentData, WebCacheIdentity, WebCacheIdentityInfo,
    ASSIGNMENT_TYPE_BITS,
};
pub use web_cache_view::WebCacheViewInfo;

/// The UDP port WCCP runs on, at both ends.
pub const WCCP_PORT: u16 = 2048;
