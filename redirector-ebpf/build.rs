//! Embeds the eBPF objects built by `cargo xtask build-ebpf` into the crate.
//!
//! For every `src/bpf/<name>.c` this writes one entry into `$OUT_DIR/objects.rs`: the
//! 8-byte-aligned bytes of `obj/<name>.o` when that file exists, `None` when it does not.
//! A missing object is therefore never a build failure; the loader turns it into a
//! typed error that says which command to run.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let src_dir = manifest.join("src/bpf");
    let obj_dir = manifest.join("obj");
    // Cargo scans directories recursively; a missing `obj/` makes it rerun this script
    // on every build until the objects exist, which is what we want.
    println!("cargo:rerun-if-changed={}", src_dir.display());
    println!("cargo:rerun-if-changed={}", obj_dir.display());

    let mut names = Vec::new();
    let mut newest_source = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(&src_dir).expect("src/bpf exists") {
        let path = entry.expect("readable src/bpf").path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if ext == "c" || ext == "h" {
            newest_source = newest_source.max(mtime(&path));
        }
        if ext == "c" {
            let stem = path.file_stem().and_then(|s| s.to_str());
            names.push(stem.expect("UTF-8 source name").to_owned());
        }
    }
    names.sort();

    let mut code = String::from(
        "/// Every object named by a `src/bpf/*.c`, with its bytes when it was built.\n\
         pub(crate) static OBJECTS: &[(&str, Option<&[u8]>)] = &[\n",
    );
    for name in &names {
        let object = obj_dir.join(format!("{name}.o"));
        if object.is_file() {
            if mtime(&object) < newest_source {
                println!(
                    "cargo:warning=eBPF object {name}.o is older than src/bpf: \
                     run `cargo xtask build-ebpf` to rebuild it"
                );
            }
            writeln!(
                code,
                "    ({name:?}, Some(aya::include_bytes_aligned!({:?}))),",
                object.display().to_string()
            )
            .unwrap();
        } else {
            writeln!(code, "    ({name:?}, None),").unwrap();
        }
    }
    code.push_str("];\n");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("objects.rs");
    fs::write(out, code).expect("writable OUT_DIR");
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
