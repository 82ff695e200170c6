//! What outlives a controller process: the pin root on bpffs, and the tick rate of the
//! clock (jiffies) the dead-man switch is read against.
//!
//! An XDP attachment is a bpf_link that the kernel destroys with the last file
//! descriptor to it, and maps die with their last user; pinning both on bpffs is what lets
//! the data plane keep redirecting while its controller restarts. One pin root per
//! controller instance keeps two instances (or a test beside a real controller) apart:
//!
//! ```text
//! /sys/fs/bpf/wccp-redirector/<instance>/maps/<map>     every map of the redirect object
//! /sys/fs/bpf/wccp-redirector/<instance>/links/<iface>  one XDP link per interface
//! /sys/fs/bpf/wccp-redirector/<instance>/links-out/<iface>  one tc egress link each
//! ```

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

/// The bpffs mount point the kernel documentation and libbpf use. It must be the one of the
/// root mount namespace: `ip netns exec` gives a process a private /sys, and a bpffs mounted
/// there vanishes, pins and all, when that process exits.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The directory under [`BPFFS`] that holds one pin root per controller instance.
pub const PIN_BASE: &str = "/sys/fs/bpf/wccp-redirector";

/// `statfs` f_type of a bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where one controller instance pins its maps and links. Holding the path only; the
/// directories are made by [`crate::Redirector::open`] and removed by
/// [`crate::Redirector::clear`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRoot {
    dir: PathBuf,
}

/// Why a pin root cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PinRootError {
    /// Instance names become one path component: no slashes, no dot-only names.
    #[error("invalid controller instance name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidInstance(String),
    /// The directory is not on a bpffs, and one could not be mounted at [`BPFFS`].
    #[error("{path} is not on a bpffs: {reason}")]
    NotBpffs {
        /// The directory checked.
        path: PathBuf,
        /// What was found or what failed.
        reason: String,
    },
}

impl PinRoot {
    /// The pin root of controller instance `instance`: `PIN_BASE/<instance>`.
    pub fn instance(instance: &str) -> Result<Self, PinRootError> {
        let valid = !instance.is_empty()
            && instance.len() <= 64
            && instance.chars().any(|c| c != '.')
            && instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(PinRootError::InvalidInstance(instance.to_owned()));
        }
        Ok(Self {
            dir: Path::new(PIN_BASE).join(instance),
        })
    }

    /// A pin root at any directory that is (or will be) on a bpffs, for deployments that
    /// mount bpffs elsewhere.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory of the pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// The directory of the pinned XDP links, one file per interface name.
    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// The directory of the pinned tc egress ("redirect out") links, one file per
    /// interface name: apart from the XDP links because interface names may hold any
    /// character a suffix could use.
    pub fn out_links_dir(&self) -> PathBuf {
        self.dir.join("links-out")
    }

    /// Whether a data plane was left here (a previous process pinned its maps).
    pub fn exists(&self) -> bool {
        self.maps_dir().is_dir()
    }

    /// Makes sure the root can take pins: mounts bpffs at [`BPFFS`] when nothing is mounted
    /// there (a fresh machine), then creates the directories.
    pub(crate) fn prepare(&self) -> Result<(), PinRootError> {
        let not_bpffs = |reason: String| PinRootError::NotBpffs {
            path: self.dir.clone(),
            reason,
        };
        if self.dir.starts_with(BPFFS) {
            ensure_bpffs_mounted().map_err(|e| not_bpffs(format!("mounting {BPFFS}: {e}")))?;
        }
        for dir in [self.maps_dir(), self.links_dir(), self.out_links_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| not_bpffs(format!("creating {}: {e}", dir.display())))?;
        }
        match fs_type(&self.dir) {
            Ok(BPF_FS_MAGIC) => Ok(()),
            Ok(other) => Err(not_bpffs(format!("file system type {other:#x}"))),
            Err(e) => Err(not_bpffs(e.to_string())),
        }
    }
}

/// `statfs(path).f_type`.
fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs only writes into the zeroed struct we pass; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    Ok(st.f_type as i64)
}

/// Mounts bpffs at [`BPFFS`] unless one is there already. A fresh machine has none; the
/// mount is made in this process's mount namespace, so run the controller in the root one.
pub fn ensure_bpffs_mounted() -> io::Result<()> {
    if fs_type(Path::new(BPFFS))? == BPF_FS_MAGIC {
        return Ok(());
    }
    let target = CString::new(BPFFS).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let fstype = c"bpf";
    // SAFETY: every pointer is a valid NUL-terminated string or null (no mount data).
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's tick rate (CONFIG_HZ), which the heartbeat's jiffies count in: the
/// resolution of CLOCK_MONOTONIC_COARSE is one tick. 250 (a common default) if the call
/// fails, which it does not on Linux.
pub fn tick_hz() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes the timespec we own.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let tick_ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    if rc != 0 || tick_ns == 0 {
        return 250;
    }
    (1_000_000_000 + tick_ns / 2) / tick_ns
}
