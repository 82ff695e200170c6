//! The draft's hash and the mask value arithmetic, against values worked out by hand.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use wccp::assign::{
    assign_mask_values, bucket_of, flags, hash_bucket, hash_key, Flow, Mask, MaskError, MaskTable,
    MAX_MASK_BITS,
};

const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const DST: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);

#[test]
fn destination_address_vector() {
    // key = 10.1.2.3 = 0x0A010203
    // h = 0x0A010203 ^ (0x0A010203 >> 16 = 0x00000A01) = 0x0A010802
    // h = 0x0A010802 ^ (0x0A010802 >> 8  = 0x000A0108) = 0x0A0B090A
    // bucket = 0x0A = 10
    assert_eq!(
        hash_key(flags::DST_IP_HASH, SRC, DST, 40000, 80, false),
        0x0A01_0203
    );
    assert_eq!(
        bucket_of(flags::DST_IP_HASH, SRC, DST, 40000, 80, false),
        10
    );
}

#[test]
fn source_address_and_destination_port_vector() {
    // key = 0xC0A80164 ^ 80 (0x0050, in the low half) = 0xC0A80134
    // h = 0xC0A80134 ^ 0x0000C0A8 = 0xC0A8C19C; ^ 0x00C0A8C1 = 0xC068695D -> 0x5D = 93
    let f = flags::SRC_IP_HASH | flags::DST_PORT_HASH;
    assert_eq!(hash_key(f, SRC, DST, 40000, 80, false), 0xC0A8_0134);
    assert_eq!(bucket_of(f, SRC, DST, 40000, 80, false), 93);
}

#[test]
fn four_fields_vector() {
    // key = 0xC0A80164 ^ 0x0A010203 ^ 40000 (0x9C40) ^ 80 (0x0050)
    //     = 0xCAA90367 ^ 0x9C10 = 0xCAA99F77
    // h = 0xCAA99F77 ^ 0x0000CAA9 = 0xCAA955DE; ^ 0x00CAA955 = 0xCA63FC8B -> 0x8B = 139
    let f = flags::SRC_IP_HASH | flags::DST_IP_HASH | flags::SRC_PORT_HASH | flags::DST_PORT_HASH;
    assert_eq!(hash_key(f, SRC, DST, 40000, 80, false), 0xCAA9_9F77);
    assert_eq!(bucket_of(f, SRC, DST, 40000, 80, false), 139);
}

#[test]
fn alternate_flags_pick_the_secondary_key() {
    // Primary on the destination address (bucket 10), alternate on the source address:
    // 0xC0A80164 ^ 0x0000C0A8 = 0xC0A8C1CC; ^ 0x00C0A8C1 = 0xC068690D -> 0x0D.
    let f = flags::DST_IP_HASH | flags::SRC_IP_ALT_HASH;
    assert_eq!(bucket_of(f, SRC, DST, 40000, 80, false), 10);
    assert_eq!(bucket_of(f, SRC, DST, 40000, 80, true), 0x0D);
    // The alternate flags alone leave the primary key empty.
    assert_eq!(bucket_of(flags::SRC_IP_ALT_HASH, SRC, DST, 1, 2, false), 0);
}

#[test]
fn flag_bits_are_the_drafts() {
    assert_eq!(
        [
            flags::SRC_IP_HASH,
            flags::DST_IP_HASH,
            flags::SRC_PORT_HASH,
            flags::DST_PORT_HASH,
            flags::PORTS_DEFINED,
            flags::PORTS_SOURCE,
            flags::SRC_IP_ALT_HASH,
            flags::DST_IP_ALT_HASH,
            flags::SRC_PORT_ALT_HASH,
            flags::DST_PORT_ALT_HASH,
        ],
        [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x100, 0x200, 0x400, 0x800]
    );
}

#[test]
fn mask_value_counts() {
    for bits in 0..=MAX_MASK_BITS {
        let mask = Mask::new(0, (1u32 << bits) - 1, 0, 0).unwrap();
        assert_eq!(mask.value_count(), 1 << bits);
        assert_eq!(mask.values().count(), 1 << bits);
        let table = assign_mask_values(&[(1u8, 1)], mask, &MaskTable::unassigned(mask));
        assert_eq!(table.counts()[&1], 1 << bits);
    }
    let squid = Mask::new(0, 0x1741, 0, 0).unwrap();
    assert_eq!(squid.value_count(), 64);
}

#[test]
fn masks_over_seven_bits_are_refused() {
    assert_eq!(
        Mask::new(0, 0x1741, 0, 0x3),
        Err(MaskError::TooManyBits { bits: 8 })
    );
    assert_eq!(
        Mask::new(u32::MAX, u32::MAX, u16::MAX, u16::MAX),
        Err(MaskError::TooManyBits { bits: 96 })
    );
    assert_eq!(
        Mask::new(0xFF00, 0, 0, 0).unwrap_err().to_string(),
        "mask selects 8 bits, at most 7 are allowed"
    );
}

#[test]
fn squid_mask_lookup() {
    let mask = Mask::new(0, 0x1741, 0, 0).unwrap();
    // 10.1.23.65 = 0x0A011741: every masked bit set, the last value.
    let flow = Flow::new(SRC, Ipv4Addr::new(10, 1, 23, 65), 1, 80);
    assert_eq!(mask.index_of(&flow), 63);
    // 10.1.2.3: 0x0203 & 0x1741 = 0x0201. The mask's bits, lowest first, are 0x1, 0x40,
    // 0x100, 0x200, 0x400, 0x1000: 0x1 is index bit 0, 0x200 index bit 3 -> index 9.
    let flow = Flow::new(SRC, DST, 1, 80);
    assert_eq!(mask.index_of(&flow), 0b1001);
    assert_eq!(mask.value(9).unwrap().dst_addr, 0x0201);
}

/// A mask with the given bit positions (0 = lowest bit of the destination port, 95 = top
/// bit of the source address).
fn mask_from_positions(positions: &[u8]) -> Mask {
    let mut packed = 0u128;
    for &p in positions {
        packed |= 1 << p;
    }
    Mask::new(
        (packed >> 64) as u32,
        (packed >> 32) as u32,
        (packed >> 16) as u16,
        packed as u16,
    )
    .unwrap()
}

fn flow_strategy() -> impl Strategy<Value = Flow> {
    (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>())
        .prop_map(|(s, d, sp, dp)| Flow::new(s.into(), d.into(), sp, dp))
}

proptest! {
    #[test]
    fn index_of_agrees_with_the_enumeration(
        positions in proptest::collection::btree_set(0u8..96, 0..=7),
        flow in flow_strategy(),
    ) {
        let positions: Vec<u8> = positions.into_iter().collect();
        let mask = mask_from_positions(&positions);
        let index = mask.index_of(&flow);
        prop_assert!(index < mask.value_count());
        // The value at that index is the packet's fields under the mask.
        let value = mask.value(index).unwrap();
        prop_assert_eq!(value.src_addr, u32::from(flow.src_ip) & mask.src_addr());
        prop_assert_eq!(value.dst_addr, u32::from(flow.dst_ip) & mask.dst_addr());
        prop_assert_eq!(value.src_port, flow.src_port & mask.src_port());
        prop_assert_eq!(value.dst_port, flow.dst_port & mask.dst_port());
        // And a packet equal to each value finds that value's index: a bijection.
        for (i, v) in mask.values().enumerate() {
            let f = Flow::new(v.src_addr.into(), v.dst_addr.into(), v.src_port, v.dst_port);
            prop_assert_eq!(mask.index_of(&f), i);
        }
        // Values are distinct and ascend.
        let values: Vec<_> = mask.values().collect();
        prop_assert!(values.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn hash_is_the_xor_of_the_selected_fields(
        f in 0u32..0x1000,
        flow in flow_strategy(),
    ) {
        let mut key = 0u32;
        let fields = [
            u32::from(flow.src_ip),
            u32::from(flow.dst_ip),
            u32::from(flow.src_port),
            u32::from(flow.dst_port),
        ];
        for (bit, field) in fields.iter().enumerate() {
            if f & (1 << bit) != 0 {
                key ^= field;
            }
        }
        let b = bucket_of(f, flow.src_ip, flow.dst_ip, flow.src_port, flow.dst_port, false);
        prop_assert_eq!(b, hash_bucket(key));
        let fold = key ^ (key >> 8) ^ (key >> 16) ^ (key >> 24);
        prop_assert_eq!(u32::from(b), fold & 0xFF);
    }
}
