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
//! reasons for it are at the top of `src/bpf/redirector.h`: a packet of the common path
//! does three array lookups (inlined by the kernel): control, its table slot (one map
//! value holding ports, services, buckets, engines and filters) and its CPU's counters;
//! a service is a maximum of three per-port preferences; the rarer features (interface
//! flags, source ports, lists, L2 return) are gated by a control, table or service bit
//! so that packets without them pay nothing; headers are written in words; and a table
//! update is one write of the idle slot and a generation flip.
//! [`table`] compiles what the controller wants into a slot's contents; [`Redirector`]
//! writes them.
//!
//! # The engine program
//!
//! `src/bpf/engine.c` (`tc_engine`, loaded by [`engine_plane`]) is the engine side: it
//! decapsulates redirected packets for the local proxy or returns them to the router.
//! [`engine_model`] is its specification in Rust; `tests/engine_differential.rs` holds
//! the two to the same verdict, bytes and counters on random settings and frames.
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
//! - Done: benchmarks (`cargo xtask bench dataplane`, figures and method in the README).
//!   (b) and (c) met on both development machines; (a) NOT met on either, and out of
//!   reach on the Intel one: its floor row (`redirect_floor`, classification replaced by
//!   a fixed decision, `tests/bench_builds.rs` checks both bench builds) is 3.5x there
//!   (21 vs 6 ns), the full path 4.9x-5.1x (31 ns); throwaway builds there: the barest
//!   GRE redirect (no counters, checks or fail-open) 14-15 ns = 2.3x-2.5x, a
//!   straightforward one (service by hash-map lookup) 22 ns = 3.5x. On the AMD one (XDP_PASS 21 ns,
//!   Safe-RET return mitigation) the path is 2.98x-3.3x, of which the two
//!   `bpf_xdp_adjust_head` calls are 14-15 ns and classification about 12 ns. Where
//!   classification's 10 ns go on the Intel machine (ablated bench builds, `--versus`):
//!   about 2 ns each for the pre-classification checks, ports and preferences, hash and
//!   bucket, and the connection-table tests, 1 ns the engine filter, 3 ns the decision,
//!   checks and two more counters after it: spread thin, no hot spot. Measured and worth
//!   nothing (within the 1% A/A noise): hash flags taken off the load chain (ports ->
//!   service), the heartbeat's jiffies read hoisted to the top; earlier, a per-engine GRE
//!   template, one-address hashes as branches, slot choice without the generation.
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
//! - Done: engines behind 802.1Q VLAN devices (router-on-a-stick): the engine entry's
//!   `vlan_tci`, written into GRE and L2 frames at XDP (the client's own tags dropped),
//!   pushed as skb metadata at tc egress; the controller resolves a VLAN device's parent
//!   and id over netlink. Tested by the differential (random tagged engines) and fixtures,
//!   and the controller's resolution by unit tests on netlink messages: this kernel has no
//!   802.1Q support (`CONFIG_VLAN_8021Q` unset), so no namespace test builds a VLAN.
//! - Known flaw (engine, `tc_engine`): a SYN that reuses the four-tuple of a connection
//!   the proxy closed first, still in TIME_WAIT, is assigned to that socket; with a proxy
//!   port other than the service port the kernel answers it with an ACK, the client
//!   resets and its retransmitted SYN gets through (about 9 ms on Linux clients).
//!   Treating TIME_WAIT as no socket for a SYN was tried: the handshake then times out.
//!   A fix needs the kernel's listener lookup to find the proxy (an sk_lookup program);
//!   a proxy on the service's own port avoids it.
//! - Later: tagged frames at egress (classified as untagged there), a ring buffer of
//!   events, per-service MSS clamps, clamping for source-port services and at egress,
//!   ICMP rate limiting.
//! - Fixed: an L2 redirect kept the client's VLAN tags: they are dropped now (fixtures:
//!   one tag, two tags).
//! - Fixed: GSO packets at egress (what GRO merged on the way in) failed open, which sent
//!   part of a redirected flow past its engine (an upload through redirect out was
//!   reset); they are now encapsulated as IPv4-in-GRE for the kernel to segment, checked
//!   against the MTU by segment length, counted at `layout::STATS_GSO_ENCAPSULATED`
//!   (`tests/tests/e2e_lists.rs`: a 4 MB upload with GRO on, 70 GSO packets).

#![warn(missing_docs)]

pub mod btf;
pub mod engine_model;
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
