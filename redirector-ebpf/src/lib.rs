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
//! `src/bpf/redirect.c` (`xdp_redirect`) does the router's per-packet work: packet
//! return, classification, bucket, connection table, GRE or L2 redirection, fail open.
//! [`model`] is its specification in Rust; `tests/differential.rs` holds the two to the
//! same verdict, output bytes, counters and connection table. The map layout and the
//! reasons for it are at the top of `src/bpf/redirector.h`: every per-packet lookup is
//! an array (inlined by the kernel), a service is a maximum of three per-port
//! preferences, and a table update is a write of the idle slot and one generation flip.
//! [`table`] compiles what the controller wants into a slot's contents; [`Redirector`]
//! writes them.
//!
//! # Status
//!
//! - Done: map layout and `#[repr(C)]` twins (BTF-checked); model; C program (verifier
//!   clean); differential test, 102 000 random packets over 120 tables, exact agreement
//!   on verdict, bytes, counters and connection table; 20 named edge cases in
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
//! - Next: benchmarks (`cargo xtask bench dataplane`).
//! - Later: redirect lists (prefixes to redirect or skip), MSS clamping, ICMP
//!   fragmentation-needed for DF packets too big for GRE (today: passed, counted),
//!   tc egress ("redirect out"), L2 return by engine MAC on shared interfaces (today an
//!   engine-facing interface never redirects), VLAN tags on the GRE side, a ring buffer
//!   of events.

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
pub use redirector::{AttachMode, Redirector, RedirectorError, CLOCK_PROGRAM, OBJECT, PROGRAM};
