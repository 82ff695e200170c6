//! WCCP version 2 (draft-wilson-wrec-wccp-v2-01 and the v2 revision 1 draft,
//! draft-mclaggan-wccp-v2rev1-00), with no I/O of its own.
//!
//! Everything here is a pure function of its inputs, so the daemons, the tests and the
//! benchmarks drive the same code: [`wire`] turns bytes into typed messages and back,
//! [`assign`] shares buckets and mask values among engines, and [`router`] and [`engine`]
//! are the two sides of the protocol as state machines driven by messages and an explicit
//! [`time::Instant`].
//!
//! ## Status
//!
//! - [x] `wire`: every message and component, MD5, GRE and redirect headers; tshark-checked.
//! - [x] `assign`: weighted minimal-movement hash and mask allocation, the draft's hash.
//! - [x] `router`: Here-I-Am/I-See-You, usable-engine rule, Removal-Query and removal with
//!   per-engine negotiated timers, SHUTDOWN, Redirect-Assign acceptance (key + router
//!   element), 5 T flush, multicast groups, Program/Clear, `show` state.
//! - [ ] `engine`: not yet.
//! - [ ] scenario tests: not yet.
//! - [ ] `cargo xtask bench` rows: not yet.

pub mod assign;
pub mod engine;
pub mod proto;
pub mod router;
pub mod time;
pub mod wire;
