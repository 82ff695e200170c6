//! Hash assignment: the 256-bucket redirection table as the designated engine computes it
//! and as routers apply it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Serialize, Serializer};

use super::alloc::{allocate, Diff};
use super::hash::{bucket_of, Flow};

/// Number of hash buckets (fixed by the draft).
pub const BUCKETS: usize = 256;

/// One bucket of the redirection table.
///
/// `alternate` belongs to the bucket, not to its owner: it marks traffic too hot for one
/// engine, which stays hot whoever serves it, so it survives reassignment. It only means
/// something on an assigned bucket (the wire's "unassigned" entry, 0xFF, has no room for
/// it), and [`BucketTable`] keeps it cleared on unassigned buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Bucket<Id> {
    /// The engine that takes this bucket's traffic; `None` forwards it normally.
    pub owner: Option<Id>,
    /// Packets hashing here are hashed again with the alternate flags.
    pub alternate: bool,
}

/// The redirection hash table in engine ids rather than wire indexes, so that it can be
/// compared across messages whose engine lists differ (the wire codec maps ids to the
/// positions in each message's engine list).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(bound(serialize = "Id: Serialize"))]
pub struct BucketTable<Id = Ipv4Addr> {
    #[serde(serialize_with = "serialize_buckets")]
    buckets: [Bucket<Id>; BUCKETS],
}

fn serialize_buckets<S: Serializer, Id: Serialize>(
    buckets: &[Bucket<Id>; BUCKETS],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(buckets.iter())
}

impl<Id: Copy> Default for BucketTable<Id> {
    fn default() -> Self {
        BucketTable::unassigned()
    }
}

/// Where a router sends a packet under a bucket table, with the bucket numbers the GRE
/// redirect header reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Redirect<Id> {
    /// The engine that takes the packet.
    pub engine: Id,
    /// The primary bucket.
    pub primary: u8,
    /// The secondary bucket, when the primary one is flagged for alternate hashing (the
    /// redirect header's A bit).
    pub alternate: Option<u8>,
}

impl<Id: Copy> BucketTable<Id> {
    /// No bucket assigned: the state before the first Redirect-Assign, and when no engine is
    /// usable (traffic is then forwarded normally, i.e. fail open).
    pub fn unassigned() -> Self {
        Self::from_fn(|_| Bucket {
            owner: None,
            alternate: false,
        })
    }

    /// A table built bucket by bucket, e.g. from a received assignment whose indexes the
    /// caller has resolved to engine ids. Flags on unassigned buckets are dropped.
    pub fn from_fn(mut f: impl FnMut(u8) -> Bucket<Id>) -> Self {
        BucketTable {
            buckets: std::array::from_fn(|i| {
                let b = f(i as u8);
                Bucket {
                    owner: b.owner,
                    alternate: b.alternate && b.owner.is_some(),
                }
            }),
        }
    }

    /// One bucket.
    pub fn get(&self, bucket: u8) -> Bucket<Id> {
        self.buckets[usize::from(bucket)]
    }

    /// The engine of one bucket.
    pub fn owner(&self, bucket: u8) -> Option<Id> {
        self.buckets[usize::from(bucket)].owner
    }

    /// All buckets, in bucket order, for encoding and display.
    pub fn buckets(&self) -> &[Bucket<Id>; BUCKETS] {
        &self.buckets
    }

    /// Hands one bucket to `owner` by hand (tests, operator overrides), keeping its flag
    /// unless the bucket becomes unassigned.
    pub fn set_owner(&mut self, bucket: u8, owner: Option<Id>) {
        let b = &mut self.buckets[usize::from(bucket)];
        b.owner = owner;
        b.alternate &= owner.is_some();
    }

    /// Flags or unflags a bucket for alternate hashing: the designated engine's remedy for a
    /// bucket too hot for one engine. Returns whether the table now has the requested flag,
    /// which is false only when flagging an unassigned bucket (the wire cannot carry that).
    pub fn set_alternate(&mut self, bucket: u8, on: bool) -> bool {
        let b = &mut self.buckets[usize::from(bucket)];
        b.alternate = on && b.owner.is_some();
        b.alternate == on
    }

    /// Buckets with no engine: non-zero outside transitions means traffic goes unredirected.
    pub fn unassigned_count(&self) -> usize {
        self.buckets.iter().filter(|b| b.owner.is_none()).count()
    }

    /// Owner changes from `self` to `next` (flag changes are not counted: they move traffic
    /// within a bucket, which the secondary table describes).
    pub fn diff(&self, next: &Self) -> Diff
    where
        Id: PartialEq,
    {
        Diff::between(
            self.buckets.iter().map(|b| b.owner),
            next.buckets.iter().map(|b| b.owner),
        )
    }

    /// The router's decision for a packet (draft-01, Redirection with Hash Assignment): the
    /// primary bucket's engine; or, when that bucket is flagged, the engine of the secondary
    /// bucket (whose own flag is ignored: there is no third hash). `None` means forward
    /// normally. This is the reference the data-plane model is checked against.
    pub fn redirect(&self, flags: u32, flow: &Flow) -> Option<Redirect<Id>> {
        let hash = |alternate| {
            bucket_of(
                flags,
                flow.src_ip,
                flow.dst_ip,
                flow.src_port,
                flow.dst_port,
                alternate,
            )
        };
        let primary = hash(false);
        let first = self.get(primary);
        let owner = first.owner?;
        if !first.alternate {
            return Some(Redirect {
                engine: owner,
                primary,
                alternate: None,
            });
        }
        let secondary = hash(true);
        Some(Redirect {
            engine: self.owner(secondary)?,
            primary,
            alternate: Some(secondary),
        })
    }
}

impl<Id: Ord + Copy> BucketTable<Id> {
    /// Buckets per engine, for `show` and for checking balance; engines with no bucket are
    /// absent.
    pub fn counts(&self) -> BTreeMap<Id, usize> {
        let mut counts = BTreeMap::new();
        for id in self.buckets.iter().filter_map(|b| b.owner) {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }
}

/// The designated engine's hash assignment: `previous` rebalanced over `engines`
/// (`(id, weight)` pairs) with the fewest owner changes; see the [module docs](super) for
/// the rule and why.
///
/// What callers can rely on:
///
/// * each engine with weight > 0 gets the floor or the ceiling of `256 * weight / total`
///   buckets; engines with weight 0 get none, unless every engine has weight 0, in which
///   case they share equally; with no engine every bucket is unassigned;
/// * a bucket keeps its owner unless the owner is gone or above its target, and the number
///   of changed buckets is the sum of the owners' excesses plus the unassigned buckets;
/// * of the engines whose share is fractional, those already holding the ceiling keep it
///   (so no bucket moves just to pass the extra one around), then the largest remainders,
///   then the lowest ids: a join of the (N+1)th equal engine moves at most
///   `ceil(256 / (N + 1))` buckets and a leave moves only the leaver's;
/// * alternate-hash flags stay with their buckets; a bucket left without an engine loses
///   its flag;
/// * the result depends only on the set of engines and weights, not on the slice order (a
///   duplicated id counts once, with its largest weight).
///
/// With weighted engines the two bounds can exceed by one or two buckets in rare histories:
/// keeping every engine within one bucket of its share can force a transfer between
/// incumbents (an engine left at its floor whose share grew past it). The change is still
/// the least that keeps the balance.
pub fn assign_buckets<Id: Ord + Copy>(
    engines: &[(Id, u16)],
    previous: &BucketTable<Id>,
) -> BucketTable<Id> {
    let owners = allocate(
        engines,
        &previous.buckets.map(|b| b.owner), // 256 Option<Id>s: cheap to copy
    );
    BucketTable::from_fn(|i| Bucket {
        owner: owners[usize::from(i)],
        alternate: previous.buckets[usize::from(i)].alternate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(owners: impl Fn(u8) -> Option<u8>) -> BucketTable<u8> {
        BucketTable::from_fn(|i| Bucket {
            owner: owners(i),
            alternate: false,
        })
    }

    #[test]
    fn flags_cannot_live_on_unassigned_buckets() {
        let mut t = table(|i| (i < 10).then_some(1));
        assert!(t.set_alternate(3, true));
        assert!(!t.set_alternate(30, true));
        assert!(!t.get(30).alternate);
        t.set_owner(3, None);
        assert!(!t.get(3).alternate);
    }

    #[test]
    fn redirect_follows_the_secondary_bucket_when_flagged() {
        let flow = Flow::new(
            Ipv4Addr::new(192, 168, 1, 100),
            Ipv4Addr::new(10, 1, 2, 3),
            40000,
            80,
        );
        let flags = super::super::flags::DST_IP_HASH | super::super::flags::SRC_IP_ALT_HASH;
        // Primary: dst 10.1.2.3 -> bucket 10. Secondary: src 192.168.1.100 = 0xC0A80164;
        // ^ 0xC0A8 = 0xC0A8C1CC; ^ 0x00C0A8C1 = 0xC068690D -> bucket 0x0D.
        let mut t = table(Some);
        assert_eq!(
            t.redirect(flags, &flow),
            Some(Redirect {
                engine: 10,
                primary: 10,
                alternate: None
            })
        );
        t.set_alternate(10, true);
        assert_eq!(
            t.redirect(flags, &flow),
            Some(Redirect {
                engine: 0x0D,
                primary: 10,
                alternate: Some(0x0D)
            })
        );
        t.set_owner(0x0D, None);
        assert_eq!(t.redirect(flags, &flow), None);
    }

    #[test]
    fn serializes_as_a_list_of_buckets() {
        let mut t = table(|i| (i == 0).then_some(7));
        t.set_alternate(0, true);
        let json = serde_json::to_value(&t).unwrap();
        let buckets = json["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(
            buckets[0],
            serde_json::json!({"owner": 7, "alternate": true})
        );
        assert_eq!(
            buckets[1],
            serde_json::json!({"owner": null, "alternate": false})
        );
    }
}
