//! Bucket and mask-value allocation: balance by weight, and the fewest owner changes.
//!
//! The checks recompute everything they compare against (exact shares, the least change
//! any balanced table could make) without the library's allocation code.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use wccp::assign::{
    assign_buckets, assign_mask_values, fair_counts, Bucket, BucketTable, Mask, MaskTable, BUCKETS,
};

type Engines = BTreeMap<u8, u16>;

fn fresh(engines: &[(u8, u16)]) -> BucketTable<u8> {
    assign_buckets(engines, &BucketTable::unassigned())
}

/// The weights that count: weight 0 drops out unless every engine has it.
fn effective(engines: &Engines) -> BTreeMap<u8, u64> {
    if engines.values().all(|&w| w == 0) {
        engines.keys().map(|&id| (id, 1)).collect()
    } else {
        engines
            .iter()
            .filter(|&(_, &w)| w > 0)
            .map(|(&id, &w)| (id, u64::from(w)))
            .collect()
    }
}

/// (floor, ceil) of each engine's exact share of `slots`.
fn share_bounds(engines: &Engines, slots: usize) -> BTreeMap<u8, (usize, usize)> {
    let eff = effective(engines);
    let total: u64 = eff.values().sum();
    eff.iter()
        .map(|(&id, &w)| {
            let exact = slots as u64 * w;
            let floor = (exact / total) as usize;
            (
                id,
                (floor, floor + usize::from(!exact.is_multiple_of(total))),
            )
        })
        .collect()
}

/// The least number of slots whose owner must change to go from `previous` to a table where
/// every engine holds floor or ceil of its share: every slot of an engine without a share,
/// every unassigned slot, and, for the rest, the cheapest placement of the ceilings (a small
/// knapsack over the engines).
fn least_change(engines: &Engines, previous: &[Option<u8>]) -> usize {
    let bounds = share_bounds(engines, previous.len());
    if bounds.is_empty() {
        return previous.iter().filter(|o| o.is_some()).count();
    }
    let mut held: BTreeMap<u8, usize> = BTreeMap::new();
    let mut forced = 0;
    for owner in previous {
        match owner {
            Some(id) if bounds.contains_key(id) => *held.entry(*id).or_insert(0) += 1,
            _ => forced += 1,
        }
    }
    let extra = previous.len() - bounds.values().map(|&(f, _)| f).sum::<usize>();
    // best[k]: least excess over the engines so far with k of them at their ceiling.
    let mut best = vec![usize::MAX; extra + 1];
    best[0] = 0;
    for (id, &(floor, ceil)) in &bounds {
        let h = held.get(id).copied().unwrap_or(0);
        let mut next = vec![usize::MAX; extra + 1];
        for k in 0..=extra {
            if best[k] == usize::MAX {
                continue;
            }
            let at_floor = best[k] + h.saturating_sub(floor);
            next[k] = next[k].min(at_floor);
            if ceil > floor && k < extra {
                next[k + 1] = next[k + 1].min(best[k] + h.saturating_sub(ceil));
            }
        }
        best = next;
    }
    forced + best[extra]
}

/// Every property one step must keep, for any slot count.
fn check_step(
    engines: &Engines,
    previous: &[Option<u8>],
    next: &[Option<u8>],
    changed: usize,
) -> Result<(), TestCaseError> {
    let bounds = share_bounds(engines, previous.len());
    let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
    for owner in next {
        match owner {
            Some(id) => *counts.entry(*id).or_insert(0) += 1,
            None => prop_assert!(bounds.is_empty(), "unassigned slot with engines present"),
        }
    }
    for id in counts.keys() {
        prop_assert!(
            bounds.contains_key(id),
            "engine {} has no share but holds slots",
            id
        );
    }
    for (id, &(floor, ceil)) in &bounds {
        let c = counts.get(id).copied().unwrap_or(0);
        prop_assert!(
            floor <= c && c <= ceil,
            "engine {} holds {}, share between {} and {}",
            id,
            c,
            floor,
            ceil
        );
    }
    prop_assert_eq!(changed, least_change(engines, previous));
    Ok(())
}

fn owners(t: &BucketTable<u8>) -> Vec<Option<u8>> {
    t.buckets().iter().map(|b| b.owner).collect()
}

fn as_slice(engines: &Engines) -> Vec<(u8, u16)> {
    engines.iter().map(|(&id, &w)| (id, w)).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8, u16),
    Leave(usize),
    Reweight(usize, u16),
    Flag(u8),
}

fn weight() -> impl Strategy<Value = u16> {
    prop_oneof![
        1 => Just(0u16),
        3 => 1u16..=3,
        2 => Just(1000u16),
        2 => any::<u16>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..64, weight()).prop_map(|(id, w)| Op::Join(id, w)),
        2 => any::<usize>().prop_map(Op::Leave),
        2 => (any::<usize>(), weight()).prop_map(|(i, w)| Op::Reweight(i, w)),
        1 => any::<u8>().prop_map(Op::Flag),
    ]
}

/// Applies an operation to the engine set (at most 32 engines); returns false for a flag.
fn apply(engines: &mut Engines, op: &Op) -> bool {
    let nth = |engines: &Engines, i: usize| engines.keys().nth(i % engines.len()).copied();
    match *op {
        Op::Join(id, w) if engines.len() < 32 || engines.contains_key(&id) => {
            engines.insert(id, w);
        }
        Op::Leave(i) if !engines.is_empty() => {
            let id = nth(engines, i).unwrap();
            engines.remove(&id);
        }
        Op::Reweight(i, w) if !engines.is_empty() => {
            let id = nth(engines, i).unwrap();
            engines.insert(id, w);
        }
        Op::Flag(_) => return false,
        _ => {}
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bucket_sequences_stay_balanced_with_least_change(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut engines = Engines::new();
        let mut table = BucketTable::<u8>::unassigned();
        for op in &ops {
            if !apply(&mut engines, op) {
                if let Op::Flag(b) = *op {
                    table.set_alternate(b, true);
                }
                continue;
            }
            let slice = as_slice(&engines);
            let next = assign_buckets(&slice, &table);

            // Pure and independent of the order of the engines.
            let mut reversed = slice.clone();
            reversed.reverse();
            prop_assert_eq!(&assign_buckets(&reversed, &table), &next);
            let mut rotated = slice.clone();
            rotated.rotate_left(slice.len() / 2);
            prop_assert_eq!(&assign_buckets(&rotated, &table), &next);

            check_step(&engines, &owners(&table), &owners(&next), table.diff(&next).changed())?;

            // Flags stay with their buckets while they have an engine.
            for b in 0..=255u8 {
                let want = table.get(b).alternate && next.owner(b).is_some();
                prop_assert_eq!(next.get(b).alternate, want);
            }

            // Balanced as a fresh table: the same range for everyone, and the fresh table
            // itself has the largest-remainder counts.
            let fresh_counts = fresh(&slice).counts();
            let mut fair = fair_counts(&slice, BUCKETS);
            fair.retain(|_, n| *n > 0);
            prop_assert_eq!(&fresh_counts, &fair);
            table = next;
        }
    }

    #[test]
    fn mask_sequences_stay_balanced_with_least_change(
        bits in 0u32..=7,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mask = Mask::new(0, (1u32 << bits) - 1, 0, 0).unwrap();
        let mut engines = Engines::new();
        let mut table = MaskTable::<u8>::unassigned(mask);
        for op in &ops {
            if !apply(&mut engines, op) {
                continue;
            }
            let slice = as_slice(&engines);
            let next = assign_mask_values(&slice, mask, &table);
            let mut reversed = slice.clone();
            reversed.reverse();
            prop_assert_eq!(&assign_mask_values(&reversed, mask, &table), &next);
            check_step(&engines, table.owners(), next.owners(), table.diff(&next).changed())?;
            table = next;
        }
    }

    #[test]
    fn equal_weight_joins_and_leaves_meet_the_strict_bounds(
        ops in proptest::collection::vec((any::<bool>(), 0u8..64), 1..60),
    ) {
        let mut engines = Engines::new();
        let mut table = BucketTable::<u8>::unassigned();
        for &(join, id) in &ops {
            let before = table.counts();
            if join {
                if engines.len() >= 32 || engines.contains_key(&id) {
                    continue;
                }
                engines.insert(id, 1000);
            } else {
                let Some(&id) = engines.keys().nth(usize::from(id) % engines.len().max(1)) else {
                    continue;
                };
                engines.remove(&id);
            }
            let next = assign_buckets(&as_slice(&engines), &table);
            let diff = table.diff(&next);
            if join {
                let n = engines.len();
                let limit = BUCKETS.div_ceil(n);
                if before.is_empty() {
                    prop_assert_eq!(diff.filled, BUCKETS);
                } else {
                    prop_assert!(diff.changed() <= limit, "join moved {} > {}", diff.changed(), limit);
                    prop_assert_eq!(diff.changed(), next.counts()[&id]);
                }
            } else {
                // Only the leaver's buckets change hands.
                let left = before.keys().find(|k| !engines.contains_key(k)).copied();
                let leaver_had = left.map_or(0, |k| before[&k]);
                prop_assert_eq!(diff.changed(), leaver_had);
                for b in 0..=255u8 {
                    if table.owner(b) != next.owner(b) {
                        prop_assert_eq!(table.owner(b), left);
                    }
                }
            }
            table = next;
        }
    }
}

#[test]
fn fresh_split_by_weight() {
    let t = fresh(&[(3, 5), (1, 1), (2, 2)]);
    // 256/8 = 32 per unit of weight.
    assert_eq!(t.counts(), BTreeMap::from([(1, 32), (2, 64), (3, 160)]));
    let t = fresh(&[(1, 1), (2, 1), (3, 1)]);
    assert_eq!(t.counts(), BTreeMap::from([(1, 86), (2, 85), (3, 85)]));
    assert_eq!(t.unassigned_count(), 0);
}

#[test]
fn fresh_split_interleaves_like_squid() {
    let t = fresh(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
    for b in 0..=255u8 {
        assert_eq!(t.owner(b), Some(b % 4 + 1));
    }
}

#[test]
fn join_moves_the_joiners_share() {
    let three = fresh(&[(1, 1), (2, 1), (3, 1)]);
    let four = assign_buckets(&[(1, 1), (2, 1), (3, 1), (4, 1)], &three);
    assert_eq!(three.diff(&four).moved, 64);
    assert_eq!(three.diff(&four).changed(), 64);
    assert_eq!(
        four.counts(),
        BTreeMap::from([(1, 64), (2, 64), (3, 64), (4, 64)])
    );
}

#[test]
fn leave_moves_only_the_leavers_buckets() {
    let four = fresh(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
    let three = assign_buckets(&[(1, 1), (2, 1), (4, 1)], &four);
    assert_eq!(four.diff(&three).changed(), 64);
    for b in 0..=255u8 {
        if four.owner(b) != Some(3) {
            assert_eq!(four.owner(b), three.owner(b));
        }
    }
}

#[test]
fn no_engine_leaves_every_bucket_unassigned() {
    let t = fresh(&[(1, 1), (2, 1)]);
    let none = assign_buckets(&[], &t);
    assert_eq!(none, BucketTable::unassigned());
    assert_eq!(none.unassigned_count(), BUCKETS);
    assert_eq!(t.diff(&none).cleared, BUCKETS);
}

#[test]
fn weight_zero_drains_unless_everyone_is_zero() {
    let all_zero = fresh(&[(1, 0), (2, 0)]);
    assert_eq!(all_zero.counts(), BTreeMap::from([(1, 128), (2, 128)]));
    // One engine set to 0 while the other keeps a weight: only its buckets move.
    let drained = assign_buckets(&[(1, 0), (2, 1000)], &all_zero);
    assert_eq!(drained.counts(), BTreeMap::from([(2, 256)]));
    assert_eq!(all_zero.diff(&drained).moved, 128);
}

#[test]
fn duplicated_ids_count_once() {
    assert_eq!(fresh(&[(1, 1), (1, 3), (2, 1)]), fresh(&[(2, 1), (1, 3)]));
}

#[test]
fn unassigned_buckets_are_filled_before_anything_moves() {
    let mut t = fresh(&[(1, 1), (2, 1)]);
    for b in 0..10u8 {
        t.set_owner(b, None);
    }
    let next = assign_buckets(&[(1, 1), (2, 1)], &t);
    let diff = t.diff(&next);
    assert_eq!((diff.filled, diff.moved), (10, 0));
}

#[test]
fn alternate_flags_move_with_their_buckets() {
    let mut t = fresh(&[(1, 1), (2, 1)]);
    t.set_alternate(0, true); // owned by 1
    t.set_alternate(1, true); // owned by 2
    let next = assign_buckets(&[(2, 1), (3, 1)], &t);
    assert_ne!(next.owner(0), Some(1));
    assert!(next.get(0).alternate);
    assert_eq!(
        next.get(1),
        Bucket {
            owner: Some(2),
            alternate: true
        }
    );
    let none = assign_buckets(&[], &next);
    assert!(!none.get(0).alternate);
}

/// The one case where the bounds give: weighted engines, a history that left the big
/// engine at its floor, and a leave that lifts its floor above what the leaver frees.
#[test]
fn weighted_leave_can_force_one_more_move() {
    // Shares before (weight total 105): 4.88, 2.44, 243.81, 2.44, 2.44. Held: 5, 3, 243, 3, 2.
    let engines = [(25u8, 2u16), (78, 1), (93, 100), (51, 1)];
    let held = [(25u8, 5usize), (78, 3), (93, 243), (51, 3), (84, 2)];
    let mut ids = held.iter().flat_map(|&(id, n)| std::iter::repeat_n(id, n));
    let previous = BucketTable::from_fn(|_| Bucket {
        owner: ids.next(),
        alternate: false,
    });
    assert_eq!(previous.unassigned_count(), 0);
    // After 84 leaves (total 104): 93's share is 246.15, so it needs 3 more, and 84 only
    // frees 2: one of the engines holding its ceiling (3 of 2.46) gives one up.
    let next = assign_buckets(&engines, &previous);
    assert_eq!(next.counts()[&93], 246);
    assert_eq!(previous.diff(&next).changed(), 3);
    assert_eq!(
        least_change(&engines.iter().copied().collect(), &owners(&previous)),
        3
    );
}

#[test]
fn mask_values_split_and_move_like_buckets() {
    let mask = Mask::new(0, 0x1741, 0, 0).unwrap();
    let two = assign_mask_values(&[(1u8, 1), (2, 1)], mask, &MaskTable::unassigned(mask));
    assert_eq!(two.counts(), BTreeMap::from([(1, 32), (2, 32)]));
    let three = assign_mask_values(&[(1u8, 1), (2, 1), (3, 1)], mask, &two);
    assert_eq!(two.diff(&three).changed(), 21);
    assert_eq!(three.counts()[&3], 21);
    let ids: BTreeSet<u8> = three.iter().filter_map(|(_, o)| o).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
}
