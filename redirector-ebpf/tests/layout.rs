//! The Cilium-style alignment check: every `#[repr(C)]` twin against the BTF that clang
//! recorded for the C struct in `layout_check.o`.

use redirector_ebpf::{
    btf::{Member, ObjectBtf, StructLayout},
    layout::{Field, SharedType, LAYOUT_CHECK_OBJECT, SHARED_TYPES},
    object_bytes,
};

fn layout_check_btf() -> ObjectBtf {
    let object = object_bytes(LAYOUT_CHECK_OBJECT).unwrap_or_else(|e| panic!("{e}"));
    ObjectBtf::from_object(object).unwrap_or_else(|e| panic!("{LAYOUT_CHECK_OBJECT}.o: {e}"))
}

#[test]
fn shared_types_match_c_layout_in_btf() {
    let btf = layout_check_btf();
    let mut problems = Vec::new();
    for ty in SHARED_TYPES {
        match btf.struct_layout(ty.c_name) {
            Some(c) => problems.extend(ty.mismatches(c)),
            None => problems.push(format!(
                "struct {} is not in {LAYOUT_CHECK_OBJECT}.o's BTF: add LAYOUT_CHECK({}); \
                 to src/bpf/{LAYOUT_CHECK_OBJECT}.c",
                ty.c_name, ty.c_name
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "layout mismatches:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_struct_in_layout_check_has_a_rust_twin() {
    let btf = layout_check_btf();
    let missing: Vec<_> = btf
        .structs()
        .filter(|c| !SHARED_TYPES.iter().any(|t| t.c_name == c.name))
        .map(|c| c.name.clone())
        .collect();
    assert!(
        missing.is_empty(),
        "C structs without an entry in layout::SHARED_TYPES: {missing:?}"
    );
}

/// The checker itself must see drift, or a passing check means nothing.
#[test]
fn mismatches_reports_size_offset_and_missing_fields() {
    let member = |name: &str, bit_offset, bitfield_size, size| Member {
        name: name.into(),
        bit_offset,
        bitfield_size,
        size,
    };
    let c = StructLayout {
        name: "drifted".into(),
        size: 32,
        members: vec![
            member("a", 0, 0, 8),
            member("narrowed", 64, 0, 4),
            member("moved", 128, 0, 8),
            member("flag", 192, 1, 4),
        ],
    };
    const fn field(name: &'static str, offset: usize, size: usize) -> Field {
        Field { name, offset, size }
    }
    const FIELDS: &[Field] = &[
        field("a", 0, 8),
        field("narrowed", 8, 8),
        field("moved", 24, 8),
        field("flag", 28, 4),
        field("only_rust", 16, 8),
    ];
    let rust = SharedType {
        rust_name: "Drifted",
        c_name: "drifted",
        size: 32,
        fields: FIELDS,
    };
    let found = rust.mismatches(&c);
    for expected in [
        "field `narrowed` has size 4 in C, 8 in Rust",
        "field `moved` is at offset 16 in C, 24 in Rust",
        "C field `flag` is a bitfield, which Rust cannot mirror",
        "Rust field `only_rust` is not in C",
    ] {
        assert!(
            found.iter().any(|m| m.ends_with(expected)),
            "expected {expected:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), 4, "{found:#?}");

    let shrunk = StructLayout { size: 24, ..c };
    assert!(rust
        .mismatches(&shrunk)
        .iter()
        .any(|m| m.ends_with("size is 24 in C, 32 in Rust")));
}
