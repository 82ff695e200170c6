//! The engine program's shared types against the BTF clang recorded for their C twins
//! (every one is the key or value of a map, so it is in the object's BTF).

use redirector_ebpf::{btf::ObjectBtf, engine_plane::ENGINE_SHARED_TYPES, object_bytes};

#[test]
fn engine_types_match_c_layout_in_btf() {
    let mut problems = Vec::new();
    for (object, ty) in ENGINE_SHARED_TYPES {
        let bytes = object_bytes(object).unwrap_or_else(|e| panic!("{e}"));
        let btf = ObjectBtf::from_object(bytes).unwrap_or_else(|e| panic!("{object}.o: {e}"));
        match btf.struct_layout(ty.c_name) {
            Some(c) => problems.extend(ty.mismatches(c)),
            None => problems.push(format!("struct {} is not in {object}.o's BTF", ty.c_name)),
        }
    }
    assert!(
        problems.is_empty(),
        "layout mismatches:\n{}",
        problems.join("\n")
    );
}
