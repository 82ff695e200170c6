//! Mask assignment (draft-wilson-wccp-v2 -03 and revision 1): a mask picks at most seven
//! bits from a packet's addresses and ports, and each combination of those bits (a value)
//! is owned by one engine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::alloc::{allocate, Diff};
use super::hash::Flow;

/// The most bits a mask may select. Routers match values in hardware tables sized for at
/// most 128 values per mask; Cisco and the revision-1 draft cap masks at seven bits.
pub const MAX_MASK_BITS: u32 = 7;

/// Why a mask was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// More than [`MAX_MASK_BITS`] bits set: routers would refuse the value table.
    #[error("mask selects {bits} bits, at most {MAX_MASK_BITS} are allowed")]
    TooManyBits {
        /// Bits set across the four mask fields.
        bits: u32,
    },
}

/// A checked mask: the packet bits that choose an engine. Constructing one through
/// [`Mask::new`] is the only way, so every mask in hand has at most 128 values and the
/// value arithmetic below cannot overflow.
///
/// Fields carry numbers as on the wire (an address mask of `0x1741` selects bits of the last
/// two octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Mask {
    src_addr: u32,
    dst_addr: u32,
    src_port: u16,
    dst_port: u16,
}

/// One combination of the masked bits: what a packet's fields equal after masking. Same
/// layout as the wire's Value Element minus the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MaskValue {
    /// Source address bits.
    pub src_addr: u32,
    /// Destination address bits.
    pub dst_addr: u32,
    /// Source port bits.
    pub src_port: u16,
    /// Destination port bits.
    pub dst_port: u16,
}

impl MaskValue {
    /// The four fields as one 96-bit number, source address most significant.
    fn packed(self) -> u128 {
        (u128::from(self.src_addr) << 64)
            | (u128::from(self.dst_addr) << 32)
            | (u128::from(self.src_port) << 16)
            | u128::from(self.dst_port)
    }

    fn unpack(v: u128) -> MaskValue {
        MaskValue {
            src_addr: (v >> 64) as u32,
            dst_addr: (v >> 32) as u32,
            src_port: (v >> 16) as u16,
            dst_port: v as u16,
        }
    }
}

impl Mask {
    /// Checks a mask from its four fields (source and destination address, source and
    /// destination port).
    pub fn new(
        src_addr: u32,
        dst_addr: u32,
        src_port: u16,
        dst_port: u16,
    ) -> Result<Mask, MaskError> {
        let bits = src_addr.count_ones()
            + dst_addr.count_ones()
            + src_port.count_ones()
            + dst_port.count_ones();
        if bits > MAX_MASK_BITS {
            return Err(MaskError::TooManyBits { bits });
        }
        Ok(Mask {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
        })
    }

    /// Source address mask.
    pub fn src_addr(&self) -> u32 {
        self.src_addr
    }

    /// Destination address mask.
    pub fn dst_addr(&self) -> u32 {
        self.dst_addr
    }

    /// Source port mask.
    pub fn src_port(&self) -> u16 {
        self.src_port
    }

    /// Destination port mask.
    pub fn dst_port(&self) -> u16 {
        self.dst_port
    }

    fn packed(&self) -> u128 {
        MaskValue {
            src_addr: self.src_addr,
            dst_addr: self.dst_addr,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
        .packed()
    }

    /// Bits selected (0 to 7).
    pub fn bits(&self) -> u32 {
        self.packed().count_ones()
    }

    /// Number of values, `2^bits`: the size of a [`MaskTable`].
    pub fn value_count(&self) -> usize {
        1 << self.bits()
    }

    /// The value with index `index`, or `None` past the last.
    ///
    /// The order is fixed so that an index means the same traffic everywhere (tables,
    /// maps, `show`): bit k of the index is the k-th lowest selected bit of the four fields
    /// read as one number, source address most significant, then destination address,
    /// source port, destination port. Values thus ascend as tuples, and for a mask on one
    /// field they ascend numerically, the order Squid sends them in (0x1741: 0x0, 0x1, 0x40,
    /// 0x41, 0x100, ...).
    pub fn value(&self, index: usize) -> Option<MaskValue> {
        if index >= self.value_count() {
            return None;
        }
        let mut out = 0u128;
        for (k, bit) in set_bits(self.packed()).enumerate() {
            if index >> k & 1 == 1 {
                out |= bit;
            }
        }
        Some(MaskValue::unpack(out))
    }

    /// Every value, in index order.
    pub fn values(&self) -> impl Iterator<Item = MaskValue> + '_ {
        (0..self.value_count()).filter_map(|i| self.value(i))
    }

    /// The index of the value a packet matches: what a router's data plane computes, here as
    /// the reference. Under one mask every packet matches exactly one value.
    pub fn index_of(&self, flow: &Flow) -> usize {
        let packet = MaskValue {
            src_addr: u32::from(flow.src_ip),
            dst_addr: u32::from(flow.dst_ip),
            src_port: flow.src_port,
            dst_port: flow.dst_port,
        }
        .packed();
        set_bits(self.packed())
            .enumerate()
            .filter(|&(_, bit)| packet & bit != 0)
            .fold(0, |index, (k, _)| index | 1 << k)
    }
}

/// The set bits of `v`, lowest first, each as a one-bit number.
fn set_bits(mut v: u128) -> impl Iterator<Item = u128> {
    std::iter::from_fn(move || {
        if v == 0 {
            return None;
        }
        let low = v & v.wrapping_neg();
        v &= v - 1;
        Some(low)
    })
}

/// A mask and the owner of each of its values, indexed as in [`Mask::value`].
///
/// One mask/value set: what Squid and the common router configurations use. The protocol
/// allows several sets tried in turn; a caller that needs them keeps one table per mask.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MaskTable<Id = Ipv4Addr> {
    mask: Mask,
    owners: Vec<Option<Id>>,
}

impl<Id: Copy> MaskTable<Id> {
    /// Every value unassigned: before the first assignment, or with no usable engine.
    pub fn unassigned(mask: Mask) -> Self {
        MaskTable {
            mask,
            owners: vec![None; mask.value_count()],
        }
    }

    /// A table from the owners of each value in index order, e.g. from a received
    /// assignment; `None` when the count does not match the mask.
    pub fn from_owners(mask: Mask, owners: Vec<Option<Id>>) -> Option<Self> {
        (owners.len() == mask.value_count()).then_some(MaskTable { mask, owners })
    }

    /// The mask the values are taken under.
    pub fn mask(&self) -> Mask {
        self.mask
    }

    /// The owners of all values, in index order.
    pub fn owners(&self) -> &[Option<Id>] {
        &self.owners
    }

    /// The owner of value `index`.
    pub fn owner(&self, index: usize) -> Option<Id> {
        self.owners.get(index).copied().flatten()
    }

    /// Hands one value to `owner` by hand (tests, operator overrides); ignored past the end.
    pub fn set_owner(&mut self, index: usize, owner: Option<Id>) {
        if let Some(slot) = self.owners.get_mut(index) {
            *slot = owner;
        }
    }

    /// Each value with its owner, in index order: the Value Elements to send.
    pub fn iter(&self) -> impl Iterator<Item = (MaskValue, Option<Id>)> + '_ {
        self.mask.values().zip(self.owners.iter().copied())
    }

    /// The engine a packet goes to; `None` forwards it normally.
    pub fn lookup(&self, flow: &Flow) -> Option<Id> {
        self.owner(self.mask.index_of(flow))
    }

    /// Values with no engine.
    pub fn unassigned_count(&self) -> usize {
        self.owners.iter().filter(|o| o.is_none()).count()
    }

    /// Owner changes from `self` to `next`. Under different masks the same index means
    /// different traffic, so every value of `self` counts as changed (moved or cleared)
    /// and every assigned value of `next` beyond them as filled.
    pub fn diff(&self, next: &Self) -> Diff
    where
        Id: PartialEq,
    {
        if self.mask == next.mask {
            return Diff::between(self.owners.iter().copied(), next.owners.iter().copied());
        }
        let before = self.owners.iter().map(|o| o.map(|id| (false, id)));
        let after = next.owners.iter().map(|o| o.map(|id| (true, id)));
        let width = self.owners.len().max(next.owners.len());
        Diff::between(
            before.chain(std::iter::repeat(None)).take(width),
            after.chain(std::iter::repeat(None)).take(width),
        )
    }
}

impl<Id: Ord + Copy> MaskTable<Id> {
    /// Values per engine, for `show` and for checking balance.
    pub fn counts(&self) -> BTreeMap<Id, usize> {
        let mut counts = BTreeMap::new();
        for id in self.owners.iter().flatten() {
            *counts.entry(*id).or_insert(0) += 1;
        }
        counts
    }
}

/// The designated engine's mask assignment: the `2^bits` values of `mask` shared among
/// `engines` with the same weighted, minimal-movement rule as [`assign_buckets`]
/// (see there for the guarantees).
///
/// `previous` counts only if it was made under the same mask: under another one the same
/// index selects different traffic, so there is nothing to keep and the split starts fresh.
///
/// Squid ignores weights in mask mode; engines here get their weighted share, so a Squid
/// group that leaves weights at their default sees an equal split.
///
/// [`assign_buckets`]: super::assign_buckets
pub fn assign_mask_values<Id: Ord + Copy>(
    engines: &[(Id, u16)],
    mask: Mask,
    previous: &MaskTable<Id>,
) -> MaskTable<Id> {
    let fresh;
    let previous = if previous.mask == mask {
        previous
    } else {
        fresh = MaskTable::unassigned(mask);
        &fresh
    };
    MaskTable {
        mask,
        owners: allocate(engines, &previous.owners),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squid_mask_values_ascend() {
        let mask = Mask::new(0, 0x1741, 0, 0).unwrap();
        assert_eq!(mask.bits(), 6);
        let dst: Vec<u32> = mask.values().map(|v| v.dst_addr).take(6).collect();
        assert_eq!(dst, vec![0x0, 0x1, 0x40, 0x41, 0x100, 0x101]);
        assert_eq!(mask.value(63).unwrap().dst_addr, 0x1741);
        assert_eq!(mask.value(64), None);
    }

    #[test]
    fn values_across_fields_order_source_address_highest() {
        let mask = Mask::new(0x1, 0, 0, 0x8000).unwrap();
        let values: Vec<MaskValue> = mask.values().collect();
        assert_eq!(values.len(), 4);
        assert_eq!((values[1].src_addr, values[1].dst_port), (0, 0x8000));
        assert_eq!((values[2].src_addr, values[2].dst_port), (1, 0));
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted);
    }

    #[test]
    fn eight_bits_are_refused() {
        assert_eq!(
            Mask::new(0xFF, 0, 0, 0),
            Err(MaskError::TooManyBits { bits: 8 })
        );
        assert_eq!(
            Mask::new(0x7, 0x3, 0x1, 0x3),
            Err(MaskError::TooManyBits { bits: 8 })
        );
        assert!(Mask::new(0x7, 0x3, 0x1, 0x1).is_ok());
    }

    #[test]
    fn a_different_mask_starts_fresh() {
        let a = Mask::new(0, 0x3, 0, 0).unwrap();
        let b = Mask::new(0x3, 0, 0, 0).unwrap();
        let before = assign_mask_values(&[(1u8, 1), (2, 1)], a, &MaskTable::unassigned(a));
        let after = assign_mask_values(&[(2u8, 1), (1, 1)], b, &before);
        assert_eq!(after.owners(), &[Some(1), Some(2), Some(1), Some(2)]);
        assert_eq!(before.diff(&after).changed(), 4);
    }
}
