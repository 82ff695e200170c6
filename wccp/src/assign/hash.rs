//! The draft's bucket hash (draft-wilson-wrec-wccp-v2-01, Service Info Component).
//!
//! This is the reference the data plane (Rust model and C program) is tested against, and
//! it must agree bit for bit with every other WCCP router in a mixed group: an engine that
//! owns bucket 10 here must own the same packets behind a Cisco router.
//!
//! Two points the draft leaves implicit, and the reading taken here:
//!
//! * Fields are numbers, not memory: an address is its 32-bit value with the first octet
//!   most significant (`u32::from(Ipv4Addr)`), a port is its 16-bit value zero-extended
//!   into the low half of the key. A router that hashed the raw bytes on a little-endian
//!   host would compute different buckets.
//! * "Destination address alone when only the destination flag is set" and "XOR of the
//!   selected fields, starting from zero" give the same key, so there is one code path. With
//!   no field selected the key is 0 and every packet lands in bucket 0; the alternate key
//!   follows the same rule with the alternate flags, and the draft gives it no special case.

use std::net::Ipv4Addr;

use serde::Serialize;

/// Service flag bits (draft-01 Service Info), the same values as the wire's
/// `ServiceFlags`; plain `u32`s here so that the hash has no dependency on the message
/// types.
pub mod flags {
    /// The primary key includes the source address.
    pub const SRC_IP_HASH: u32 = 0x0001;
    /// The primary key includes the destination address.
    pub const DST_IP_HASH: u32 = 0x0002;
    /// The primary key includes the source port.
    pub const SRC_PORT_HASH: u32 = 0x0004;
    /// The primary key includes the destination port.
    pub const DST_PORT_HASH: u32 = 0x0008;
    /// The service's port list is meaningful (it selects packets; it does not change the
    /// hash).
    pub const PORTS_DEFINED: u32 = 0x0010;
    /// The port list matches source ports rather than destination ports (no hash effect).
    pub const PORTS_SOURCE: u32 = 0x0020;
    /// The alternate key includes the source address.
    pub const SRC_IP_ALT_HASH: u32 = 0x0100;
    /// The alternate key includes the destination address.
    pub const DST_IP_ALT_HASH: u32 = 0x0200;
    /// The alternate key includes the source port.
    pub const SRC_PORT_ALT_HASH: u32 = 0x0400;
    /// The alternate key includes the destination port.
    pub const DST_PORT_ALT_HASH: u32 = 0x0800;
}

/// The fields of a packet that hashing and masking look at, so that lookups take one value
/// instead of four loose arguments that are easy to swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    /// Source address.
    pub src_ip: Ipv4Addr,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// TCP/UDP source port.
    pub src_port: u16,
    /// TCP/UDP destination port.
    pub dst_port: u16,
}

impl Flow {
    /// A flow from its four fields, in the order of the IP and TCP headers.
    pub const fn new(src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16) -> Flow {
        Flow {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        }
    }
}

/// The 32-bit key the service flags select: the XOR of the chosen fields, starting from 0.
///
/// Exposed apart from [`hash_bucket`] so that a test failing against another implementation
/// can tell a key mismatch (field selection, byte order) from a hash mismatch.
pub fn hash_key(
    flags: u32,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    alternate: bool,
) -> u32 {
    let [src_ip_bit, dst_ip_bit, src_port_bit, dst_port_bit] = if alternate {
        [
            flags::SRC_IP_ALT_HASH,
            flags::DST_IP_ALT_HASH,
            flags::SRC_PORT_ALT_HASH,
            flags::DST_PORT_ALT_HASH,
        ]
    } else {
        [
            flags::SRC_IP_HASH,
            flags::DST_IP_HASH,
            flags::SRC_PORT_HASH,
            flags::DST_PORT_HASH,
        ]
    };
    let mut key = 0u32;
    if flags & src_ip_bit != 0 {
        key ^= u32::from(src_ip);
    }
    if flags & dst_ip_bit != 0 {
        key ^= u32::from(dst_ip);
    }
    if flags & src_port_bit != 0 {
        key ^= u32::from(src_port);
    }
    if flags & dst_port_bit != 0 {
        key ^= u32::from(dst_port);
    }
    key
}

/// The draft's fold of a key to a bucket: both halves, then both bytes of the low half.
pub const fn hash_bucket(key: u32) -> u8 {
    let mut h = key;
    h ^= h >> 16;
    h ^= h >> 8;
    (h & 0xFF) as u8
}

/// The bucket of a packet under a service's flags: the primary bucket, or with `alternate`
/// the secondary one a router uses when the primary bucket is flagged for alternate hashing.
///
/// For the well-known web-cache service (service 0), whose Service Info carries no flags,
/// pass [`flags::DST_IP_HASH`]: that service hashes on the destination address.
pub fn bucket_of(
    flags: u32,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    alternate: bool,
) -> u8 {
    hash_bucket(hash_key(
        flags, src_ip, dst_ip, src_port, dst_port, alternate,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_matches_the_draft_arithmetic() {
        // 0x0A010203 ^ 0x00000A01 = 0x0A010802; ^ 0x000A0108 = 0x0A0B090A; low byte 0x0A.
        assert_eq!(hash_bucket(0x0A01_0203), 0x0A);
        assert_eq!(hash_bucket(0), 0);
        // Only the low 8 bits of each byte lane survive: 0x01010101 folds to 0x00.
        assert_eq!(hash_bucket(0x0101_0101), 0x00);
    }

    #[test]
    fn ports_and_layout_flags_do_not_change_the_key() {
        let (s, d) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
        let plain = hash_key(flags::DST_IP_HASH, s, d, 1, 2, false);
        let with_ports = hash_key(
            flags::DST_IP_HASH | flags::PORTS_DEFINED | flags::PORTS_SOURCE,
            s,
            d,
            1,
            2,
            false,
        );
        assert_eq!(plain, with_ports);
        assert_eq!(plain, 0x0506_0708);
    }
}
