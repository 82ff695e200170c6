//! The router's data plane: XDP programs written in C (`src/bpf/*.c`), the `#[repr(C)]`
//! twins of the map keys and values they share with Rust, and the aya loader.
//!
//! # Building the programs
//!
//! The C is compiled outside cargo, by `cargo xtask build-ebpf`, into
//! `redirector-ebpf/obj/<name>.o` (ignored by git). This crate's build script embeds
//! whatever objects exist there; one that was not built is reported at run time as
//! [`LoadError::NotBuilt`], naming the command to run, rather than as a build failure.
//!
//! # Layout of shared types
//!
//! `src/bpf/redirector.h` is the source of truth for every type that crosses the
//! kernel boundary. [`layout`] holds the Rust twins; `tests/layout.rs` compares their size,
//! field offsets and field sizes with the BTF of `layout_check.o` (read by [`btf`]).

//!
//! # The redirect program
//!
//! `src/bpf/redirect.c` (`xdp_redirect`, and `tc_redirect_out` for redirect out) does
//! the router's per-packet work: packet
//! return (GRE, and L2 by engine MAC), SYN-ACK MSS clamping, classification, the
//! operator's redirect and skip lists, bucket, connection table, GRE or L2 redirection,
//! ICMP fragmentation-needed for DF packets too big for GRE, fail open.
//! [`model`] is its specification in Rust; `tests/differential.rs` holds the two to the
//! same verdict, output bytes, counters and connection table. The map layout and the
//! reasons for it are at the top of `src/bpf/redirector.h`: every per-packet lookup of
//! the common path is an array (inlined by the kernel), a service is a maximum of three
//! per-port preferences, the rarer features are gated by a service option or a control
//! bit so that packets without them pay no lookup, and a table update is a write of the
//! idle slot and one generation flip.
//! [`table`] compiles what the controller wants into a slot's contents; [`Redirector`]
//! writes them.
//!
//! # Status
//!
//! - Done: map layout and `#[repr(C)]` twins (BTF-checked); model; C program (verifier
//!   clean); differential test, 143 601 random packets over 120 tables (100 937 through
//!   `xdp_redirect`, 42 664 through `tc_redirect_out`), exact agreement on verdict,
//!   bytes, counters and connection table; 54 named edge cases in
//!   `tests/fixtures/edge-cases.txt` replayed by both (`REDIRECTOR_BLESS=1` rewrites the
//!   file from the model); model checked against `wccp::assign` (hash, mask) and
//!   `wccp::wire` (GRE); loader: load, install a table atomically, heartbeat, enable,
//!   interface flags, counters, connection table.
//! - Done: lifecycle ([`lifecycle`], [`Redirector::open`]): pin root per controller
//!   instance (`/sys/fs/bpf/wccp-redirector/<instance>/{maps,links}/`), bpffs mounted when
//!   absent, maps checked against this build's layout before reuse, attach/detach by
//!   interface name (native, generic fallback with a `tracing` warning), links pinned,
//!   adoption on restart (pinned links switched to the new program by `bpf_link_update`,
//!   no gap), `clear` removes every pin; CLOCK_MONOTONIC heartbeat helper.
//!   `tests/lifecycle.rs` proves it on veths in network namespaces.
//! - Done: benchmarks (`cargo xtask bench dataplane`). Targets NOT met yet (issue 11 stays
//!   open on them). Quiet machine, 2026-12-01: (a) test runs 3.55x / 3.56x / 3.81x XDP_PASS
//!   for 1 / 16 / 256 services (target <= 2.5x); (b) live frames 0.76x (64 B, 1 service),
//!   0.81x, 0.82x, 0.83x (1400 B) of XDP_TX (target >= 0.8x); (c) 4.39x / 4.60x kernel
//!   forwarding (target >= 3x, met). Where the time goes, measured by cutting the bench
//!   build short: parse + classify + counters end at 2.1-2.25x; the GRE write costs the
//!   rest (about 28 ns), of which the two `bpf_xdp_adjust_head` calls (encapsulation and
//!   the bench build's undo) are about 14 ns. Tried and worth nothing (within 1 ns, the
//!   noise): skipping the outer checksum, and two of the three counter writes. So the
//!   time is in the helper calls, the header moves and the classification's ten map
//!   reads; next to try: fewer, merged lookups (service + bucket + engine in one value),
//!   and one write of the whole 42-byte encapsulation from a per-engine template.
//! - Done (issue 11): redirect and skip lists per service
//!   ([`table::ServiceConfig::redirect_list`], [`table::ServiceConfig::skip_list`]): one
//!   LPM trie keyed by slot and service rank, whose values carry every enclosing listed
//!   prefix's kind so that one lookup per address decides; skip wins on either address, a
//!   non-empty redirect list needs the source or the destination; reasons `ListSkip`,
//!   `NotListed` and a per-service skipped counter; services without lists pay nothing.
//!   ICMP fragmentation needed (type 3 code 4, next-hop MTU = engine MTU - 28, the IP
//!   header and 8 bytes quoted, MACs swapped, XDP_TX) for DF packets too big for GRE.
//!   SYN-ACK MSS clamping ([`table::MssClamp`], on by default for TCP services with GRE
//!   engines: MTU - 68) for segments from a clamped service's port, before the
//!   engine-facing return, incremental checksum (odd offsets included), counted at
//!   `layout::STATS_MSS_CLAMPED`. L2 return ([`table::EngineConfig::return_method`]):
//!   packets from an L2-return engine's MAC (not from its own address) pass as returned,
//!   on any interface, behind a per-slot control bit and a MAC bit filter.
//! - Done: redirect out ([`Redirector::attach_out`]): `tc_redirect_out`, a tc egress
//!   (tcx) program in the same object, shares `classify()` (`src/bpf/classify.h`) with
//!   the XDP program and [`model::Dataplane::classify`] in the model
//!   ([`model::Dataplane::process_egress`]); packets that arrived on an engine-facing or
//!   excluded interface are never redirected out; too big for GRE fails open (no ICMP at
//!   egress); egress links pinned under `links-out/`, adopted and cleared. About 30% of
//!   the differential's random packets and 8 fixture cases go through it;
//!   `tests/lifecycle.rs` runs it on veths.
//! - Fixed: "redirect out" counted forwarded skbs whose payload sits in page fragments
//!   as malformed (the length check needs the linear part): `tc_redirect_out` now pulls
//!   such packets whole first; a proxied flow through it is tested end to end.
//! - Later: VLAN tags on the GRE side (and tagged frames at egress), a ring buffer of
//!   events, per-service MSS clamps, clamping for source-port services and at egress,
//!   GSO packets at egress (they fail open), ICMP rate limiting.

#![warn(missing_docs)]

pub mod btf;
pub mod engine_plane;
pub mod layout;
pub mod lifecycle;
mod loader;
pub mod model;
mod redirector;
pub mod table;

pub use lifecycle::{tick_hz, PinRoot, PinRootError};
pub use loader::{object_bytes, object_names, EbpfObject, LoadError};
pub use redirector::{
    read_pinned_table, AttachMode, Redirector, RedirectorError, CLOCK_PROGRAM, OBJECT, OUT_PROGRAM,
    PROGRAM,
};
