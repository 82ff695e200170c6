//! Rust twins of the C types that maps share with the kernel, and the registry that the
//! layout test checks against the BTF of `layout_check.o`.
//!
//! The C header `src/bpf/redirector.h` is the source of truth. To share a new type:
//! 1. define it in `redirector.h` and add `LAYOUT_CHECK(<c name>);` to `layout_check.c`;
//! 2. define its `#[repr(C)]` twin here (same field names) and add one line to
//!    [`SHARED_TYPES`]: `shared_type!(RustName => "c_name" { field, field, ... })`.
//!
//! The macro refuses to compile if the field list misses a field of the Rust struct, and
//! the test fails if the C struct has a field the Rust one lacks, or any size or offset
//! differs.

use std::mem::{offset_of, size_of};

use crate::btf::StructLayout;

/// The object that exists only to put every shared type into BTF.
pub const LAYOUT_CHECK_OBJECT: &str = "layout_check";

/// Packet and byte counts, the value of per-CPU counter maps: one per CPU so the
/// hot path never contends, summed by the controller when it reads them.
/// C: `struct redirector_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets counted.
    pub packets: u64,
    /// Bytes of those packets, as the XDP program saw them (from the Ethernet header).
    pub bytes: u64,
}

// SAFETY: `repr(C)`, only integer fields, no padding (checked against BTF by the tests).
unsafe impl aya::Pod for Counters {}

/// What the layout test needs to know about one Rust twin.
#[derive(Clone, Copy, Debug)]
pub struct SharedType {
    /// The Rust type's name, for messages.
    pub rust_name: &'static str,
    /// The C struct's tag, as it appears in BTF.
    pub c_name: &'static str,
    /// `size_of` the Rust type.
    pub size: usize,
    /// Every field, in declaration order.
    pub fields: &'static [Field],
}

/// One field of a Rust twin.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The field's name, which must be the C member's name.
    pub name: &'static str,
    /// `offset_of` the field.
    pub offset: usize,
    /// `size_of` the field's type: equal offsets with a narrower C type (and padding
    /// behind it) would otherwise pass.
    pub size: usize,
}

/// `size_of` the type of the field that `field` projects to; the function pointer is
/// never called, it only names the field's type in a const context.
#[doc(hidden)]
pub const fn size_of_field<T, F>(_field: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Builds a [`SharedType`] entry from a type and its complete field list.
///
/// The destructuring pattern without `..` makes a field missing from the list a compile
/// error, so the list cannot silently fall behind the struct.
macro_rules! shared_type {
    ($rust:ident => $c:literal { $($field:ident),+ $(,)? }) => {{
        #[allow(dead_code)]
        fn every_field_is_listed(value: &$rust) {
            let $rust { $($field: _),+ } = value;
        }
        SharedType {
            rust_name: stringify!($rust),
            c_name: $c,
            size: size_of::<$rust>(),
            fields: &[$(Field {
                name: stringify!($field),
                offset: offset_of!($rust, $field),
                size: size_of_field(|v: &$rust| &v.$field),
            }),+],
        }
    }};
}

/// Every type shared with the C programs. One line per type.
pub const SHARED_TYPES: &[SharedType] =
    &[shared_type!(Counters => "redirector_counters" { packets, bytes })];

impl SharedType {
    /// How this twin differs from the C struct `c` (empty when they agree): struct size,
    /// every field's offset and size, fields on one side only, and bitfields (Rust has
    /// none).
    pub fn mismatches(&self, c: &StructLayout) -> Vec<String> {
        let mut out = Vec::new();
        let who = format!("{} (C struct {})", self.rust_name, self.c_name);
        if c.size as usize != self.size {
            out.push(format!(
                "{who}: size is {} in C, {} in Rust",
                c.size, self.size
            ));
        }
        for member in &c.members {
            let Some(field) = self.fields.iter().find(|f| f.name == member.name) else {
                out.push(format!(
                    "{who}: C field `{}` has no Rust field",
                    member.name
                ));
                continue;
            };
            if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
                out.push(format!(
                    "{who}: C field `{}` is a bitfield, which Rust cannot mirror",
                    member.name
                ));
                continue;
            }
            if (member.bit_offset / 8) as usize != field.offset {
                out.push(format!(
                    "{who}: field `{}` is at offset {} in C, {} in Rust",
                    member.name,
                    member.bit_offset / 8,
                    field.offset
                ));
            }
            if member.size as usize != field.size {
                out.push(format!(
                    "{who}: field `{}` has size {} in C, {} in Rust",
                    member.name, member.size, field.size
                ));
            }
        }
        for field in self.fields {
            if !c.members.iter().any(|m| m.name == field.name) {
                out.push(format!("{who}: Rust field `{}` is not in C", field.name));
            }
        }
        out
    }
}
