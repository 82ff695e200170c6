//! Who takes which traffic: hash buckets and mask values shared among the usable engines,
//! and the draft's hash, which the router's data plane uses to find a packet's bucket.
//!
//! # The minimal-movement rule
//!
//! A bucket (or mask value) is a slice of live traffic. When the designated engine hands a
//! bucket from one engine to another, every connection hashed to that bucket and still open
//! on the old engine is at risk: the router's connection table keeps most of them, but a
//! router that restarted, an L2 path without the table, or a peer router from another vendor
//! sends the next packet to an engine that never saw the SYN, and the user sees a reset.
//! So allocation here is a pure function of (usable engines, weights, previous table) that
//! changes the owner of as few buckets as the balance allows:
//!
//! * each engine's target count is the floor or the ceiling of its weighted share (the
//!   largest-remainder rule; see [`assign_buckets`] for which engines get the ceiling);
//! * a bucket stays with its owner unless the owner has gone, has weight 0, or holds more
//!   than its target; an over-target owner gives up only its excess;
//! * the freed buckets, and the unassigned ones, go to the engines below target.
//!
//! Hence a join moves about the joiner's share (`ceil(256 / (N + 1))` with equal weights),
//! a leave moves only the leaver's buckets, and a fresh table is split by weight.
//!
//! The same rule serves mask assignment ([`assign_mask_values`]) over the `2^bits` values
//! of one mask.
//!
//! # Engines and weights
//!
//! Engines are given as `(id, weight)` pairs; the id is any `Ord + Copy` type (the engine's
//! IPv4 address in the protocol, small integers in tests). Nothing depends on the order of
//! the slice: ties are broken by id, so every designated engine, and every restart of one,
//! computes the same table from the same inputs.

mod alloc;
mod bucket;
mod hash;
mod mask;

pub use alloc::{fair_counts, Diff};
pub use bucket::{assign_buckets, Bucket, BucketTable, Redirect, BUCKETS};
pub use hash::{bucket_of, flags, hash_bucket, hash_key, Flow};
pub use mask::{assign_mask_values, Mask, MaskError, MaskTable, MaskValue, MAX_MASK_BITS};
