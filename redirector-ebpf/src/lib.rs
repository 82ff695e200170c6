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

#![warn(missing_docs)]

pub mod btf;
pub mod layout;
mod loader;

pub use loader::{object_bytes, object_names, EbpfObject, LoadError};
