//! Finding the embedded objects and loading their programs with aya.

use std::path::Path;

use aya::{
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfError, EbpfLoader,
};

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// Why an object or program could not be had. The first two variants are about the
/// build, not the kernel, and say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `src/bpf/<object>.c` exists but its object was not there when this crate was
    /// compiled.
    #[error("eBPF object {object} not built: run `cargo xtask build-ebpf`")]
    NotBuilt {
        /// The object's name (the stem of its C source).
        object: String,
    },
    /// No C source of that name: a typo, or a program that does not exist yet.
    #[error("no eBPF object named {object}: there is no redirector-ebpf/src/bpf/{object}.c")]
    UnknownObject {
        /// The name asked for.
        object: String,
    },
    /// aya could not parse the object or create its maps in the kernel.
    #[error("eBPF object {object}: {source}")]
    Open {
        /// The object's name.
        object: String,
        /// aya's error (boxed: it is large, and this is not a hot path).
        #[source]
        source: Box<EbpfError>,
    },
    /// The object has no program (C function) of that name.
    #[error("eBPF object {object} has no program {program}")]
    ProgramNotFound {
        /// The object's name.
        object: String,
        /// The program asked for.
        program: String,
    },
    /// The program is of another type, or the kernel refused it (see the verifier log in
    /// `source`).
    #[error("eBPF program {object}/{program}: {source}")]
    Program {
        /// The object's name.
        object: String,
        /// The program's name.
        program: String,
        /// aya's error, with the verifier log when the kernel refused the program.
        #[source]
        source: Box<ProgramError>,
    },
}

/// The names of all objects this crate knows (one per `src/bpf/*.c`), built or not.
pub fn object_names() -> impl Iterator<Item = &'static str> {
    OBJECTS.iter().map(|(name, _)| *name)
}

/// The ELF bytes of object `name`, aligned for aya's parser; for callers that need their
/// own `aya::EbpfLoader` (pin directories, globals) or read the object without loading it.
pub fn object_bytes(name: &str) -> Result<&'static [u8], LoadError> {
    match OBJECTS.iter().find(|(n, _)| *n == name) {
        Some((_, Some(bytes))) => Ok(bytes),
        Some((_, None)) => Err(LoadError::NotBuilt {
            object: name.to_owned(),
        }),
        None => Err(LoadError::UnknownObject {
            object: name.to_owned(),
        }),
    }
}

/// One embedded object opened with aya: its maps exist in the kernel, its programs are
/// loaded on demand. Dropping it unloads the programs and detaches what is not pinned.
#[derive(Debug)]
pub struct EbpfObject {
    name: String,
    ebpf: Ebpf,
}

impl EbpfObject {
    /// Opens object `name` with aya's defaults (no pinning yet).
    pub fn open(name: &str) -> Result<Self, LoadError> {
        let bytes = object_bytes(name)?;
        let ebpf = Ebpf::load(bytes).map_err(|source| LoadError::Open {
            object: name.to_owned(),
            source: Box::new(source),
        })?;
        Ok(Self {
            name: name.to_owned(),
            ebpf,
        })
    }

    /// Opens object `name` with each map in `maps` pinned at `dir/<map>`: a map already
    /// pinned there is reused (its contents and every program using it carry on), one that
    /// is not is created and pinned. This is how a restarted controller finds the data
    /// plane its predecessor left running.
    pub fn open_pinned(name: &str, dir: &Path, maps: &[&'static str]) -> Result<Self, LoadError> {
        let bytes = object_bytes(name)?;
        let mut loader = EbpfLoader::new();
        for map in maps {
            loader.map_pin_path(map, dir.join(map));
        }
        let ebpf = loader.load(bytes).map_err(|source| LoadError::Open {
            object: name.to_owned(),
            source: Box::new(source),
        })?;
        Ok(Self {
            name: name.to_owned(),
            ebpf,
        })
    }

    /// The object's name, as given to [`EbpfObject::open`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The XDP program `program` (its C function name), loaded into the kernel on first
    /// use so that a verifier refusal surfaces here, with the object and program named.
    pub fn xdp(&mut self, program: &str) -> Result<&mut Xdp, LoadError> {
        let error = |source| LoadError::Program {
            object: self.name.clone(),
            program: program.to_owned(),
            source: Box::new(source),
        };
        let found = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| LoadError::ProgramNotFound {
                object: self.name.clone(),
                program: program.to_owned(),
            })?;
        let xdp: &mut Xdp = found.try_into().map_err(error)?;
        match xdp.load() {
            Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(xdp),
            Err(source) => Err(error(source)),
        }
    }

    /// The tc program `program` (its C function name), loaded on first use like
    /// [`EbpfObject::xdp`].
    pub fn classifier(&mut self, program: &str) -> Result<&mut SchedClassifier, LoadError> {
        let error = |source| LoadError::Program {
            object: self.name.clone(),
            program: program.to_owned(),
            source: Box::new(source),
        };
        let found = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| LoadError::ProgramNotFound {
                object: self.name.clone(),
                program: program.to_owned(),
            })?;
        let tc: &mut SchedClassifier = found.try_into().map_err(error)?;
        match tc.load() {
            Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(tc),
            Err(source) => Err(error(source)),
        }
    }

    /// The aya handle, for maps and for what this wrapper does not cover yet.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
