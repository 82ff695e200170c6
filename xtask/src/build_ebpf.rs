//! `cargo xtask build-ebpf`: C eBPF sources to BPF ELF objects with BTF.
//!
//! Every `redirector-ebpf/src/bpf/*.c` (headers are only included) becomes
//! `redirector-ebpf/obj/<stem>.o`. That directory is fixed because redirector-ebpf's
//! build script embeds the objects from there; it is ignored by git. The C is compiled
//! with clang because this toolchain has no `rust-src` for Rust eBPF.

use std::{
    ffi::OsString,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// What a developer on a machine without the toolchain must do; said whenever clang or
/// the libbpf headers are missing, so the fix is in the error itself.
const INSTALL_HINT: &str =
    "install the eBPF toolchain with `apt-get install clang llvm libbpf-dev` \
     (Debian), or run the project's `scripts/setup.sh`";

/// Options of `build-ebpf`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The clang to run (a name looked up in PATH, or a path).
    #[arg(long, default_value = "clang")]
    clang: OsString,
}

/// Compiles every C source, stopping at the first one that fails (with clang's own
/// diagnostics on stderr).
pub fn run(options: &Options) -> Result<()> {
    let root = workspace_root();
    let src_dir = root.join("redirector-ebpf/src/bpf");
    let out_dir = root.join("redirector-ebpf/obj");

    check_clang(&options.clang)?;
    let sources = c_sources(&src_dir)?;
    if sources.is_empty() {
        bail!("no C sources in {}", src_dir.display());
    }
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;

    for source in &sources {
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("source name is not UTF-8: {}", source.display()))?;
        let object = out_dir.join(format!("{stem}.o"));
        compile(&options.clang, &src_dir, source, &object)?;
        println!("built {}", object.display());
    }
    Ok(())
}

/// The workspace root: xtask is one of its direct members.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Fails early with the install hint instead of letting the first compile fail obscurely.
fn check_clang(clang: &OsString) -> Result<()> {
    match Command::new(clang).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "`{} --version` failed ({}): {}; {INSTALL_HINT}",
            clang.to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "clang not found (looked for `{}`): {INSTALL_HINT}",
            clang.to_string_lossy()
        ),
        Err(e) => Err(e).with_context(|| format!("running {}", clang.to_string_lossy())),
    }
}

/// The `*.c` files directly in `dir`, sorted so that builds and their output are stable.
fn c_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "c") {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}

/// Compiles one source. The object is written beside its final name and renamed into
/// place, so redirector-ebpf's build script never embeds a half-written file.
fn compile(clang: &OsString, src_dir: &Path, source: &Path, object: &Path) -> Result<()> {
    let partial = object.with_extension("o.partial");
    let mut cmd = Command::new(clang);
    // `-target bpf` is host-endian BPF; `-g` is what makes clang emit BTF (.BTF and
    // .BTF.ext), which the loader and the layout check both need.
    cmd.args([
        "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Werror",
    ]);
    // Debian keeps <asm/types.h> (pulled in by <linux/types.h>) in the multiarch directory,
    // which clang does not search for the bpf target.
    let multiarch = PathBuf::from(format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH));
    if multiarch.is_dir() {
        cmd.arg("-I").arg(&multiarch);
    }
    cmd.arg("-I").arg(src_dir);
    cmd.arg("-c").arg(source).arg("-o").arg(&partial);

    let out = cmd
        .output()
        .with_context(|| format!("running {}", clang.to_string_lossy()))?;
    // clang's diagnostics are the useful part of a failure: pass them through as they are.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let _ = fs::remove_file(&partial);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("file not found") {
            bail!(
                "compiling {} failed: a header is missing; {INSTALL_HINT}",
                source.display()
            );
        }
        bail!("compiling {} failed ({})", source.display(), out.status);
    }
    fs::rename(&partial, object)
        .with_context(|| format!("moving {} to {}", partial.display(), object.display()))?;
    Ok(())
}
