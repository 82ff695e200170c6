//! The struct layouts recorded in an eBPF object's BTF, for checking Rust twins
//! against the C that the kernel actually runs.
//!
//! aya-obj 0.3 (the version aya 0.14 uses) parses BTF but keeps struct members private,
//! so this is a small reader of its own: the `.BTF` section of the ELF object, only as
//! much of the format (<https://docs.kernel.org/bpf/btf.html>) as sizes and member
//! offsets need. Every other kind is skipped by its documented length.

use object::{Object as _, ObjectSection as _};

/// Why an object's BTF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The bytes are not an ELF object.
    #[error("not an ELF object: {0}")]
    Elf(#[from] object::Error),
    /// The object has no `.BTF` section: it was compiled without `-g`.
    #[error("no .BTF section (compile with -g)")]
    NoBtf,
    /// The section is shorter than its header says, or has a kind we do not know.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
}

/// One member of a C struct as BTF records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's name; empty for an anonymous struct or union member.
    pub name: String,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Width in bits for a bitfield, 0 for an ordinary member.
    pub bitfield_size: u32,
    /// `sizeof` the member's type in bytes (for a bitfield, of its underlying type).
    pub size: u32,
}

/// A C struct's size and members, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// The struct's tag (`redirector_counters` for `struct redirector_counters`).
    pub name: String,
    /// `sizeof` in bytes.
    pub size: u32,
    /// The members, in declaration order.
    pub members: Vec<Member>,
}

/// The named structs of one object's BTF.
#[derive(Clone, Debug)]
pub struct ObjectBtf {
    structs: Vec<StructLayout>,
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

impl ObjectBtf {
    /// Reads the `.BTF` section of an ELF object (as built by `cargo xtask build-ebpf`).
    pub fn from_object(elf: &[u8]) -> Result<Self, BtfError> {
        let file = object::File::parse(elf)?;
        let section = file.section_by_name(".BTF").ok_or(BtfError::NoBtf)?;
        Self::parse(section.data()?, file.is_little_endian())
    }

    /// The struct named `name` (its tag, without `struct`), if the object's BTF has it.
    pub fn struct_layout(&self, name: &str) -> Option<&StructLayout> {
        self.structs.iter().find(|s| s.name == name)
    }

    /// Every named struct, in BTF order.
    pub fn structs(&self) -> impl Iterator<Item = &StructLayout> {
        self.structs.iter()
    }

    fn parse(data: &[u8], little_endian: bool) -> Result<Self, BtfError> {
        let r = Reader {
            data,
            little_endian,
        };
        if r.u16(0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = r.u32(4)? as usize;
        let (type_off, type_len) = (r.u32(8)? as usize, r.u32(12)? as usize);
        let (str_off, str_len) = (r.u32(16)? as usize, r.u32(20)? as usize);
        let types = r.slice(hdr_len + type_off, type_len)?;
        let strings = r.slice(hdr_len + str_off, str_len)?;
        let name = |offset: u32| -> Result<String, BtfError> {
            let tail = strings
                .get(offset as usize..)
                .ok_or(BtfError::Malformed("string offset out of range"))?;
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or(BtfError::Malformed("unterminated string"))?;
            Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
        };

        let t = Reader {
            data: types,
            little_endian,
        };
        // Pass 1: where each type is. Type ids count from 1; id 0 is `void`.
        let mut raw = vec![RawType::default()];
        let mut at = 0;
        while at < types.len() {
            let info = t.u32(at + 4)?;
            let ty = RawType {
                name_off: t.u32(at)?,
                kind: (info >> 24) & 0x1f,
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 == 1,
                size_or_type: t.u32(at + 8)?,
                body: at + 12,
            };
            let extra = match ty.kind {
                // INT, VAR, DECL_TAG: one u32.
                1 | 14 | 17 => 4,
                // ARRAY: element type, index type, count.
                3 => 12,
                // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per member or entry.
                4 | 5 | 15 | 19 => 12 * ty.vlen,
                // ENUM, FUNC_PROTO: 8 bytes per value or parameter.
                6 | 13 => 8 * ty.vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown BTF kind")),
            };
            at = ty.body + extra;
            raw.push(ty);
        }

        // Pass 2: the named structs, with each member's size resolved.
        let mut structs = Vec::new();
        for ty in raw
            .iter()
            .filter(|ty| ty.kind == KIND_STRUCT && ty.name_off != 0)
        {
            let mut members = Vec::with_capacity(ty.vlen);
            for i in 0..ty.vlen {
                let m = ty.body + i * 12;
                let offset = t.u32(m + 8)?;
                let (bit_offset, bitfield_size) = if ty.kind_flag {
                    (offset & 0x00ff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                members.push(Member {
                    name: name(t.u32(m)?)?,
                    bit_offset,
                    bitfield_size,
                    size: type_size(&raw, &t, t.u32(m + 4)?)?,
                });
            }
            structs.push(StructLayout {
                name: name(ty.name_off)?,
                size: ty.size_or_type,
                members,
            });
        }
        Ok(Self { structs })
    }
}

/// One BTF type's header, and where its kind-specific data starts in the type section.
#[derive(Clone, Copy, Debug, Default)]
struct RawType {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    body: usize,
}

/// `sizeof` the type `id`, following typedefs and qualifiers.
fn type_size(raw: &[RawType], t: &Reader<'_>, mut id: u32) -> Result<u32, BtfError> {
    // Deep enough for any real chain of typedefs and qualifiers; stops a cycle.
    for _ in 0..32 {
        let ty = raw
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))?;
        match ty.kind {
            // INT, STRUCT, UNION, ENUM, FLOAT, ENUM64: the size is in the header.
            1 | 4 | 5 | 6 | 16 | 19 => return Ok(ty.size_or_type),
            // PTR: BPF is a 64-bit machine.
            2 => return Ok(8),
            // ARRAY: element size times count.
            3 => {
                let count = t.u32(ty.body + 8)?;
                let element = type_size(raw, t, t.u32(ty.body)?)?;
                return element
                    .checked_mul(count)
                    .ok_or(BtfError::Malformed("array size overflows"));
            }
            // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: the type they qualify.
            8..=11 | 18 => id = ty.size_or_type,
            _ => return Err(BtfError::Malformed("member of a type without a size")),
        }
    }
    Err(BtfError::Malformed("type chain too deep"))
}

/// Bounds-checked reads in the object's byte order.
struct Reader<'a> {
    data: &'a [u8],
    little_endian: bool,
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], BtfError> {
        at.checked_add(len)
            .and_then(|end| self.data.get(at..end))
            .ok_or(BtfError::Malformed("truncated"))
    }

    fn u16(&self, at: usize) -> Result<u16, BtfError> {
        let b: [u8; 2] = self.slice(at, 2)?.try_into().expect("2 bytes");
        Ok(if self.little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Result<u32, BtfError> {
        let b: [u8; 4] = self.slice(at, 4)?.try_into().expect("4 bytes");
        Ok(if self.little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }
}
