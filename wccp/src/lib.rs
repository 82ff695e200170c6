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
//!   element), 5 T flush, multicast groups, Program/Clear, `show` state, and
//!   `Router::reconfigure` (password, timers, group list applied in place, keeping the
//!   view; scenario 16). Not yet used by `redirector-ctl`'s reload.
//! - [x] `engine`: announce, view, election (partial-view safe), designated assignment with
//!   1.5 T settling and resend after T, Removal-Query answers, SHUTDOWN.
//! - [x] scenarios 1-15 of issue 10 (`tests/scenario_protocol.rs`, harness in
//!   `tests/scenario_harness`), and Squid's captured Here-I-Ams answered with an I-See-You
//!   that tshark decodes cleanly (`tests/scenario_squid.rs`).
//! - [x] `cargo xtask bench`: Here-I-Am -> I-See-You and 32-engine assignment, with baselines.
//! - [ ] Not done / interpretations (see the router and engine module docs):
//!   - Timer Scale semantics are ours (removal at `scale × T`, query T/2 earlier): no text of
//!     v2rev1 defines them. Transmit_T is honoured as the engine's lower limit, floored by
//!     the router's `min_interval`.
//!   - A new designated engine rebuilds the hash table in force from the routers' views
//!     (their identity elements carry each engine's buckets); in mask mode it starts from a
//!     fresh table, so a takeover may move more mask values than needed.
//!   - The engine never sets alternate-hash flags (it keeps those of the table in force).
//!   - Revision 1's Address Table (indexed addresses, IPv6) is not spoken by the state
//!     machines: such messages are dropped and counted (`drop.address`).
//!   - The I-See-You carries no Assignment Info / Assignment Map (optional in draft-01).

pub mod assign;
pub mod engine;
pub mod proto;
pub mod router;
pub mod time;
pub mod wire;
