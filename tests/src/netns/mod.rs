//! Network-namespace labs: hosts (network namespaces), veth links and bridges between them,
//! processes and threads inside them, all torn down when the [`Lab`] is dropped — also when
//! the test panics, since drops run during unwinding.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use netns_tests::netns::Lab;
//! let lab = Lab::new("demo")?;
//! let (client, server) = (lab.host("client")?, lab.host("server")?);
//! lab.link(&client, "eth0", &server, "eth0")?;
//! client.add_addr("eth0", "10.77.1.2/24")?;
//! server.add_addr("eth0", "10.77.1.1/24")?;
//! let listener = server.in_ns(|| std::net::TcpListener::bind("10.77.1.1:8080"))??;
//! let mut curl = std::process::Command::new("curl");
//! client.run(curl.args(["-s", "http://10.77.1.1:8080/"]))?;
//! # drop(listener); Ok(()) }
//! ```
//!
//! Design choices, and why:
//! - Namespaces are created natively (see [`ns`]), with `ip netns add` semantics, so the
//!   usual tools (`ip netns list`, `ip -n NS`, `ip netns exec`, `tcpdump` under `ip netns
//!   exec`) work on them; the harness itself never parses `ip` output.
//! - Interface facts and changes go through netlink (`rtnetlink`), from a thread that has
//!   entered the namespace. Veth peers are created directly in their target namespace
//!   (`IFLA_NET_NS_FD` on the peer), so no interface ever exists in the root namespace and
//!   nothing the harness makes can clash with the machine's own interfaces.
//! - Child processes enter with `setns` alone by default ([`Enter::SetNs`]): they keep the
//!   root mount namespace, so `/sys/fs/bpf` pins work. `ip netns exec` is available as
//!   [`Enter::IpNetnsExec`] for programs that need a namespace-private `/sys`.
//! - Names are `<prefix>-p<pid>-<tag>-<host>`: unique across parallel tests and processes,
//!   and the owner pid lets [`cleanup_stale`] remove what a crashed run left behind without
//!   touching anyone else's namespaces.
//! - New hosts have `lo` up and IPv6 disabled (no router solicitations or MLD reports in
//!   captures); `host.sysctl("net.ipv6.conf.all.disable_ipv6", "0")` turns it back on.

#![warn(missing_docs)]

mod host;
pub mod ns;
mod process;
mod wait;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use host::{Host, NsThread};
pub use process::{describe, Enter, Process};
pub use wait::wait_until;

/// How long teardown waits after SIGTERM before SIGKILLing processes left in a namespace.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// Set this environment variable to keep every lab's scratch directory (process output),
/// not only those of failed tests.
pub const KEEP_ENV: &str = "NETNS_TESTS_KEEP";

/// The directory under which each lab gets its scratch directory.
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("netns-tests")
}

/// A set of network namespaces owned by one test: created by [`Lab::host`], joined by
/// [`Lab::link`] and [`Lab::switch`], removed (processes killed first) on drop.
#[derive(Debug)]
pub struct Lab {
    inner: Arc<LabInner>,
}

#[derive(Debug)]
pub(crate) struct LabInner {
    /// `<prefix>-p<pid>-<tag>`: every namespace and the scratch directory start with it.
    pub(crate) id: String,
    pub(crate) scratch: PathBuf,
    /// Full names of the namespaces created, in order.
    pub(crate) namespaces: Mutex<Vec<String>>,
    /// Numbers process labels so two runs of one program keep separate logs.
    pub(crate) spawned: AtomicU32,
    torn_down: AtomicBool,
    /// Keep the scratch directory at teardown (see [`Lab::keep_scratch`]).
    keep: AtomicBool,
}

impl Lab {
    /// Starts an empty lab. `prefix` (1 to 10 of a-z, 0-9) names the test or suite; leftovers
    /// of earlier crashed runs with the same prefix are removed first (see [`cleanup_stale`]).
    pub fn new(prefix: &str) -> Result<Self> {
        ns::check_label("lab prefix", prefix, 10)?;
        if let Err(e) = cleanup_stale(prefix) {
            eprintln!("netns-tests: cleaning up stale {prefix} labs: {e:#}");
        }
        static LABS: AtomicU32 = AtomicU32::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!(
            "{prefix}-p{}-{:x}{:04x}",
            std::process::id(),
            n,
            (nanos >> 10) & 0xffff
        );
        let scratch = scratch_root().join(&id);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating lab scratch directory {}", scratch.display()))?;
        Ok(Self {
            inner: Arc::new(LabInner {
                id,
                scratch,
                namespaces: Mutex::new(Vec::new()),
                spawned: AtomicU32::new(0),
                torn_down: AtomicBool::new(false),
                keep: AtomicBool::new(false),
            }),
        })
    }

    /// The lab's unique id, the prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where process output and any other files of this lab go; kept after a failed test
    /// (or always, with [`KEEP_ENV`] set) for the post-mortem.
    pub fn scratch_dir(&self) -> &Path {
        &self.inner.scratch
    }

    /// Keeps the scratch directory (process output) at teardown even though the thread is
    /// not panicking: for tests that fail by returning an error, or that report failures
    /// of several labs at the end.
    pub fn keep_scratch(&self) {
        self.inner.keep.store(true, Ordering::SeqCst);
    }

    /// Full names of the lab's namespaces, as `ip netns list` shows them.
    pub fn namespaces(&self) -> Vec<String> {
        self.inner.namespaces.lock().unwrap().clone()
    }

    /// Creates a host: a new network namespace with `lo` up and IPv6 off. `name` (1 to 15
    /// of a-z, 0-9) must be unique in the lab.
    pub fn host(&self, name: &str) -> Result<Host> {
        ns::check_label("host name", name, 15)?;
        if self.inner.torn_down.load(Ordering::SeqCst) {
            bail!("lab {} is torn down; cannot add host {name}", self.inner.id);
        }
        let full = format!("{}-{name}", self.inner.id);
        {
            let mut list = self.inner.namespaces.lock().unwrap();
            if list.contains(&full) {
                bail!("lab {} already has a host named {name}", self.inner.id);
            }
            ns::create(&full).with_context(|| format!("creating host {name}"))?;
            list.push(full.clone());
        }
        let host = Host::new(self.inner.clone(), name.to_string(), full);
        host.link_up("lo")?;
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            // A kernel without IPv6 has no such keys: nothing to disable then.
            if host.sysctl_get(key).is_ok() {
                host.sysctl(key, "1")?;
            }
        }
        Ok(host)
    }

    /// Joins `a`'s interface `a_if` and `b`'s interface `b_if` with a veth pair, both ends up
    /// with MTU 1500. The pair is created in `a` with its peer born in `b`.
    pub fn link(&self, a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<Link> {
        host::create_veth(a, a_if, b, b_if)
            .with_context(|| format!("linking {a}:{a_if} with {b}:{b_if}"))?;
        Ok(Link {
            a: a.clone(),
            a_if: a_if.to_string(),
            b: b.clone(),
            b_if: b_if.to_string(),
        })
    }

    /// Makes a bridge `name` on `host` (up, no STP, so ports forward at once) and enslaves
    /// the host's interfaces `ports` to it.
    pub fn bridge(&self, host: &Host, name: &str, ports: &[&str]) -> Result<()> {
        host.add_bridge(name, ports)
    }

    /// Creates a host `name` that is only a switch: bridge `br0` whose ports `p0`, `p1`, ...
    /// are veths to each `(host, interface)` in `members`. Models an L2 segment (a router
    /// and its engines on one LAN) without giving any of the members a bridge.
    pub fn switch(&self, name: &str, members: &[(&Host, &str)]) -> Result<Host> {
        let sw = self.host(name)?;
        let mut ports = Vec::new();
        for (i, (member, ifname)) in members.iter().enumerate() {
            let port = format!("p{i}");
            self.link(&sw, &port, member, ifname)?;
            ports.push(port);
        }
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        sw.add_bridge("br0", &ports)?;
        Ok(sw)
    }

    /// Tears the lab down now, reporting failures (drop does the same, silently): kills every
    /// process in its namespaces (SIGTERM, SIGKILL after a grace period), deletes the
    /// namespaces (and with them every veth and bridge), removes the scratch directory
    /// unless the thread is panicking, [`Lab::keep_scratch`] was called or [`KEEP_ENV`] is
    /// set.
    ///
    /// What teardown cannot end: threads of the test process still inside a namespace
    /// ([`Host::thread`]) and sockets made there keep that namespace (unlisted) alive until
    /// they end; a process killed by SIGKILL never tears down, which [`cleanup_stale`] is for.
    pub fn teardown(self) -> Result<()> {
        self.inner.teardown()
    }
}

impl LabInner {
    fn teardown(&self) -> Result<()> {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let names = self.namespaces.lock().unwrap().clone();
        let idents: Vec<_> = names.iter().filter_map(|n| ns::identity(n)).collect();
        ns::kill_processes_in(&idents, TEARDOWN_GRACE);
        let mut failures = Vec::new();
        for n in &names {
            if let Err(e) = ns::delete(n) {
                failures.push(format!("{e:#}"));
            }
        }
        let keep = std::thread::panicking()
            || self.keep.load(Ordering::SeqCst)
            || std::env::var_os(KEEP_ENV).is_some();
        if keep {
            eprintln!(
                "netns-tests: lab {} output kept in {}",
                self.id,
                self.scratch.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.scratch) {
            if e.kind() != std::io::ErrorKind::NotFound {
                failures.push(format!("removing {}: {e}", self.scratch.display()));
            }
        }
        if !failures.is_empty() {
            bail!("tearing down lab {}: {}", self.id, failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.inner.teardown() {
            eprintln!("netns-tests: {e:#}");
        }
    }
}

/// Both ends of a veth pair made by [`Lab::link`].
#[derive(Clone, Debug)]
pub struct Link {
    /// The host of the first end.
    pub a: Host,
    /// The first end's interface name in `a`.
    pub a_if: String,
    /// The host of the second end.
    pub b: Host,
    /// The second end's interface name in `b`.
    pub b_if: String,
}

impl Link {
    /// Sets the MTU on both ends (a path MTU test, or room for GRE's 28 bytes).
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.a.set_mtu(&self.a_if, mtu)?;
        self.b.set_mtu(&self.b_if, mtu)
    }
}

/// Removes what crashed earlier runs with this prefix left behind: namespaces named
/// `<prefix>-p<pid>-...` whose owner process `pid` no longer exists (their processes are
/// killed first), and their scratch directories. Namespaces of live owners and of other
/// prefixes are never touched. Returns the namespaces removed. [`Lab::new`] calls it.
///
/// A pid reused by an unrelated process keeps that run's leftovers until the pid is free.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    ns::check_label("lab prefix", prefix, 10)?;
    let lead = format!("{prefix}-p");
    let me = std::process::id();
    let dead_owner = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(&lead) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        match pid.parse::<u32>() {
            Ok(pid) => pid != me && !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        }
    };
    let mut removed = Vec::new();
    let stale: Vec<String> = ns::list()?.into_iter().filter(|n| dead_owner(n)).collect();
    let idents: Vec<_> = stale.iter().filter_map(|n| ns::identity(n)).collect();
    ns::kill_processes_in(&idents, TEARDOWN_GRACE);
    for n in stale {
        ns::delete(&n).with_context(|| format!("removing stale namespace {n}"))?;
        removed.push(n);
    }
    if let Ok(dir) = std::fs::read_dir(scratch_root()) {
        for entry in dir.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                if dead_owner(name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    Ok(removed)
}
