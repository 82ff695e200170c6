//! Network namespaces as files under `/run/netns`: creation, deletion, entry, and finding
//! the processes that live in one.
//!
//! Namespaces are created natively, with iproute2's `ip netns add` semantics (a bind mount of
//! a namespace file onto `/run/netns/NAME`, the directory made a shared mount), so `ip netns
//! list`, `ip netns exec` and `ip -n NAME` all see them. Native creation needs no fork of our
//! multi-threaded test process: a short-lived thread unshares its own network namespace and
//! bind-mounts `/proc/thread-self/ns/net`, which only that thread was ever in.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Where `ip netns` keeps its namespace files; ours live there too so the usual tools see them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of a named namespace's file.
pub fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Makes `/run/netns` exist and be a shared mount, exactly as iproute2 does, so a namespace
/// mounted there propagates to mount namespaces created later (`ip netns exec` makes one).
fn ensure_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).with_context(|| format!("creating {NETNS_RUN_DIR}"))?;
    let mut made_mount = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !made_mount => {
                // Not a mount point yet: bind it onto itself, then make that shared.
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| format!("bind-mounting {NETNS_RUN_DIR} onto itself"))?;
                made_mount = true;
            }
            Err(e) => return Err(anyhow!(e).context(format!("making {NETNS_RUN_DIR} shared"))),
        }
    }
}

/// Creates the named namespace; fails if the name is taken (never adopts someone else's).
pub fn create(name: &str) -> Result<()> {
    ensure_run_dir()?;
    let path = ns_path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating namespace file {}", path.display()))?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the new namespace on {}", target.display()))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow!("namespace creation thread panicked"))
    .and_then(|r| r);
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(e.context(format!("creating network namespace {name}")));
    }
    Ok(())
}

/// Deletes the named namespace's file: the namespace itself (and every interface in it) goes
/// away once no process, thread or open descriptor holds it any more.
pub fn delete(name: &str) -> Result<()> {
    let path = ns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(anyhow!(e).context(format!("unmounting {}", path.display()))),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("removing {}", path.display()))),
    }
}

/// Opens the named namespace, for `setns` or for handing to netlink as `IFLA_NET_NS_FD`.
pub fn open(name: &str) -> Result<File> {
    let path = ns_path(name);
    File::open(&path)
        .with_context(|| format!("opening network namespace {name} ({})", path.display()))
}

/// Moves the calling thread (only it: the network namespace is per thread) into `ns`.
pub fn enter(ns: impl AsFd, name: &str) -> Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into network namespace {name}"))
}

/// Names of every namespace under `/run/netns`, ours or not.
pub fn list() -> Result<Vec<String>> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!(e).context(format!("listing {NETNS_RUN_DIR}"))),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.with_context(|| format!("listing {NETNS_RUN_DIR}"))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The namespace's identity (device, inode) as the kernel's nsfs reports it; a namespace file
/// that is not (or no longer) a mounted namespace gives `None`.
pub fn identity(name: &str) -> Option<(u64, u64)> {
    let meta = fs::metadata(ns_path(name)).ok()?;
    // An unmounted placeholder is an ordinary empty file on the /run filesystem; a mounted
    // namespace is an nsfs inode, whose device differs from the directory's.
    let dir = fs::metadata(NETNS_RUN_DIR).ok()?;
    if meta.dev() == dir.dev() {
        return None;
    }
    Some((meta.dev(), meta.ino()))
}

/// Pids of every process (other than ours) whose network namespace is one of `idents`.
/// Zombies and processes that vanish while we look are skipped.
pub fn processes_in(idents: &[(u64, u64)]) -> Vec<i32> {
    if idents.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| idents.contains(&(m.dev(), m.ino())))
                .unwrap_or(false)
        })
        .collect()
}

/// Signals every process in the namespaces `idents` with SIGTERM, waits up to `grace` for them
/// to go, then SIGKILLs what is left. Returns the pids that needed SIGKILL.
///
/// Processes that arrive while we wait (an `ip netns exec` started just before, which enters
/// the namespace only after it runs) get their SIGTERM when first seen.
pub fn kill_processes_in(idents: &[(u64, u64)], grace: std::time::Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut signalled = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + grace;
    loop {
        let left = processes_in(idents);
        if left.is_empty() {
            return Vec::new();
        }
        if std::time::Instant::now() >= deadline {
            for &pid in &left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return left;
        }
        for &pid in &left {
            if signalled.insert(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Checks a name part the harness builds names from: short, and nothing `ip`, a path or our
/// own `-` separators could misread.
pub fn check_label(what: &str, label: &str, max: usize) -> Result<()> {
    if label.is_empty() || label.len() > max {
        bail!("{what} {label:?} must be 1 to {max} characters long");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("{what} {label:?} may contain only a-z and 0-9");
    }
    Ok(())
}
