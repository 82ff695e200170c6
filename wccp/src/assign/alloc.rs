//! The allocation shared by hash buckets and mask values: targets by weight, then the fewest
//! owner changes that reach them.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use serde::Serialize;

/// The engines that take a share, sorted by id, with weights widened for the arithmetic.
///
/// A duplicated id keeps its largest weight, so that the result cannot depend on the order
/// of the input. Weight 0 means "no share" (an engine draining before maintenance), except
/// when every engine says 0: that is what a group of engines that never set a weight sends,
/// and leaving their traffic unredirected would surprise everyone, so they share equally.
pub(super) fn usable<Id: Ord + Copy>(engines: &[(Id, u16)]) -> Vec<(Id, u64)> {
    let mut by_id: BTreeMap<Id, u16> = BTreeMap::new();
    for &(id, weight) in engines {
        let w = by_id.entry(id).or_insert(weight);
        *w = (*w).max(weight);
    }
    if by_id.values().all(|&w| w == 0) {
        return by_id.into_keys().map(|id| (id, 1)).collect();
    }
    by_id
        .into_iter()
        .filter(|&(_, w)| w > 0)
        .map(|(id, w)| (id, u64::from(w)))
        .collect()
}

/// Target counts: the floor of each exact share, plus one for as many engines as the
/// remainders add up to.
///
/// Which engines get the extra one is where history enters: an engine that already holds
/// more than its floor comes first, because giving it the ceiling saves a move; then the
/// largest remainder; then the id. With no history this is the plain largest-remainder
/// rule. Counting on history avoids the "new states paradox" of the plain rule, under which
/// a join can take a bucket away from one incumbent only to give one to another.
pub(super) fn quotas<Id>(engines: &[(Id, u64)], slots: usize, held: &[usize]) -> Vec<usize> {
    let total: u64 = engines.iter().map(|&(_, w)| w).sum();
    if total == 0 {
        return vec![0; engines.len()];
    }
    let s = slots as u64;
    let mut quota: Vec<usize> = engines
        .iter()
        .map(|&(_, w)| usize::try_from(s * w / total).expect("a share never exceeds the slots"))
        .collect();
    let extra = slots - quota.iter().sum::<usize>();
    let mut candidates: Vec<usize> = (0..engines.len())
        .filter(|&i| !(s * engines[i].1).is_multiple_of(total))
        .collect();
    candidates.sort_by_key(|&i| {
        let holds_more = held.get(i).copied().unwrap_or(0) > quota[i];
        (!holds_more, Reverse(s * engines[i].1 % total), i)
    });
    for &i in candidates.iter().take(extra) {
        quota[i] += 1;
    }
    quota
}

/// How many slots each engine takes in a fresh table of `slots`: what `show` can print as
/// the fair target, and what tests compare balance against.
///
/// Every count is the floor or the ceiling of the engine's exact weighted share. After a
/// history of joins and leaves a table may give the ceiling to different engines than a
/// fresh one would (whichever saves moves), never a count outside that range. Every engine
/// that has a share is listed, with 0 when its weight is too small for a whole slot.
pub fn fair_counts<Id: Ord + Copy>(engines: &[(Id, u16)], slots: usize) -> BTreeMap<Id, usize> {
    let engines = usable(engines);
    let quota = quotas(&engines, slots, &[]);
    engines.iter().map(|&(id, _)| id).zip(quota).collect()
}

/// The owners of `previous.len()` slots after reallocation among `engines`.
pub(super) fn allocate<Id: Ord + Copy>(
    engines: &[(Id, u16)],
    previous: &[Option<Id>],
) -> Vec<Option<Id>> {
    let engines = usable(engines);
    if engines.is_empty() {
        return vec![None; previous.len()];
    }
    let index: BTreeMap<Id, usize> = engines
        .iter()
        .enumerate()
        .map(|(i, &(id, _))| (id, i))
        .collect();
    let mut owners: Vec<Option<usize>> = previous
        .iter()
        .map(|owner| owner.and_then(|id| index.get(&id).copied()))
        .collect();
    let mut held = vec![0usize; engines.len()];
    for &e in owners.iter().flatten() {
        held[e] += 1;
    }
    let quota = quotas(&engines, previous.len(), &held);

    // An over-target engine gives up its highest-numbered slots: any fixed choice would do,
    // this one is easy to predict when reading a `show` diff.
    for slot in owners.iter_mut().rev() {
        if let Some(e) = *slot {
            if held[e] > quota[e] {
                *slot = None;
                held[e] -= 1;
            }
        }
    }

    // Free slots go, in slot order, to the engine furthest behind in proportion to its
    // target, so a fresh table interleaves the engines (A, B, C, A, B, C, ...) as Squid's
    // does, rather than cutting it into blocks.
    for slot in owners.iter_mut().filter(|slot| slot.is_none()) {
        let e = (0..engines.len())
            .filter(|&e| held[e] < quota[e])
            .min_by(|&a, &b| behind(held[a], quota[a], held[b], quota[b]))
            .expect("targets add up to the number of slots");
        *slot = Some(e);
        held[e] += 1;
    }

    owners
        .into_iter()
        .map(|owner| owner.map(|e| engines[e].0))
        .collect()
}

/// Orders engines by how far along they are towards their targets (`held / quota`).
fn behind(held_a: usize, quota_a: usize, held_b: usize, quota_b: usize) -> Ordering {
    (held_a * quota_b).cmp(&(held_b * quota_a))
}

/// The owner changes between two tables, in the terms that matter to live traffic.
///
/// `moved` is what breaks connections; `filled` and `cleared` start or stop redirection
/// for traffic that had no engine or loses it, which matters for capacity but breaks no
/// session held by an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Diff {
    /// Slots that went from one engine to another.
    pub moved: usize,
    /// Slots that were unassigned and now have an engine.
    pub filled: usize,
    /// Slots that had an engine and now have none.
    pub cleared: usize,
}

impl Diff {
    /// Every slot whose owner changed, however: what the minimal-movement rule minimises.
    pub fn changed(&self) -> usize {
        self.moved + self.filled + self.cleared
    }

    pub(super) fn between<Id: PartialEq>(
        before: impl IntoIterator<Item = Option<Id>>,
        after: impl IntoIterator<Item = Option<Id>>,
    ) -> Diff {
        let mut diff = Diff::default();
        for (a, b) in before.into_iter().zip(after) {
            match (a, b) {
                (Some(a), Some(b)) if a != b => diff.moved += 1,
                (None, Some(_)) => diff.filled += 1,
                (Some(_), None) => diff.cleared += 1,
                _ => {}
            }
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_largest_weight_whatever_the_order() {
        assert_eq!(usable(&[(1, 5), (1, 9), (2, 0)]), vec![(1, 9)]);
        assert_eq!(usable(&[(1, 9), (1, 5), (2, 0)]), vec![(1, 9)]);
    }

    #[test]
    fn all_zero_weights_share_equally() {
        assert_eq!(usable(&[(2, 0), (1, 0)]), vec![(1, 1), (2, 1)]);
        assert!(usable::<u8>(&[]).is_empty());
    }

    #[test]
    fn largest_remainder_with_id_tie_break() {
        // 256 / 3 = 85.33: one engine gets 86, the lowest id.
        assert_eq!(
            quotas(&[(1, 1), (2, 1), (3, 1)], 256, &[]),
            vec![86, 85, 85]
        );
        // 256 * 2/3 = 170.67 and 85.33: the larger remainder wins the extra one.
        assert_eq!(quotas(&[(1, 1), (2, 2)], 256, &[]), vec![85, 171]);
    }

    #[test]
    fn history_decides_who_keeps_the_ceiling() {
        // Engine 3 already holds 86: it keeps the extra bucket, nothing needs to move.
        assert_eq!(
            quotas(&[(1, 1), (2, 1), (3, 1)], 256, &[85, 85, 86]),
            vec![85, 85, 86]
        );
    }

    #[test]
    fn fresh_allocation_interleaves() {
        let owners = allocate(&[(3, 1), (1, 1), (2, 1)], &[None; 9]);
        let ids: Vec<u8> = owners.into_iter().map(Option::unwrap).collect();
        assert_eq!(ids, vec![1, 2, 3, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn diff_names_each_kind_of_change() {
        let d = Diff::between(
            [Some(1), Some(1), None, Some(2)],
            [Some(1), Some(2), Some(3), None],
        );
        assert_eq!(
            d,
            Diff {
                moved: 1,
                filled: 1,
                cleared: 1
            }
        );
        assert_eq!(d.changed(), 3);
    }
}
