//! A host: one network namespace of a lab, and everything done inside it.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::process::{self, Enter, Process};
use super::{ns, wait, LabInner};

/// How long [`Host::run`] lets a command take before killing it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// One network namespace of a [`super::Lab`]: a router, an engine, a client. A cheap handle
/// (clone it freely); it opens the namespace afresh for each operation, so it holds nothing
/// alive: once the lab is torn down its operations fail instead of resurrecting anything.
#[derive(Clone)]
pub struct Host {
    lab: Arc<LabInner>,
    name: String,
    ns: String,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {} (netns {})", self.name, self.ns)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A thread started in a host's namespace by [`Host::thread`]; joining gives its result.
#[derive(Debug)]
pub struct NsThread<T> {
    handle: JoinHandle<T>,
}

impl<T> NsThread<T> {
    /// Waits for the thread; a panic in it is resumed here, so the test fails with its message.
    pub fn join(self) -> T {
        match self.handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Whether the thread has finished (so `join` will not block).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

fn check_ifname(ifname: &str) -> Result<()> {
    if ifname.is_empty()
        || ifname.len() > 15
        || ifname
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        bail!("bad interface name {ifname:?}: 1 to 15 bytes, no '/', ':' or spaces");
    }
    Ok(())
}

/// Parses `10.77.1.1/24` (or an address without a prefix length, meaning a host route).
fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().with_context(|| format!("bad address {s:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .with_context(|| format!("bad prefix length in {s:?}"))?,
        None => max,
    };
    Ok((addr, len))
}

async fn link_by_name(handle: &rtnetlink::Handle, ifname: &str) -> Result<LinkMessage> {
    handle
        .link()
        .get()
        .match_name(ifname.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("no interface {ifname}"))?
        .ok_or_else(|| anyhow!("no interface {ifname}"))
}

async fn set_link(handle: &rtnetlink::Handle, msg: LinkMessage) -> Result<()> {
    handle.link().set(msg).execute().await?;
    Ok(())
}

/// Creates the veth pair `a_if` in `a` / `b_if` in `b` and brings both up.
pub(crate) fn create_veth(a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<()> {
    check_ifname(a_if)?;
    check_ifname(b_if)?;
    let b_fd: OwnedFd = ns::open(&b.ns)?.into();
    let (a_if2, b_if2) = (a_if.to_string(), b_if.to_string());
    a.netlink(move |h| async move {
        let peer = LinkUnspec::new_with_name(&b_if2)
            .setns_by_fd(b_fd.as_raw_fd())
            .mtu(1500)
            .build();
        let msg = LinkVeth::new(&a_if2, &b_if2)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(1500)
            .up()
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .context("creating veth pair")?;
        drop(b_fd);
        Ok(())
    })?;
    b.link_up(b_if)
}

impl Host {
    pub(crate) fn new(lab: Arc<LabInner>, name: String, ns: String) -> Self {
        Self { lab, name, ns }
    }

    /// The host's short name, as given to [`super::Lab::host`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's full name, for tools run by hand: `ip -n NAME`, `ip netns exec NAME`.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The lab's scratch directory, for files this host's programs need (a squid.conf, a
    /// capture file); removed with the lab unless the test failed.
    pub fn scratch_dir(&self) -> &std::path::Path {
        &self.lab.scratch
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result (a
    /// panic in `f` is resumed in the caller). Sockets made inside stay bound to this
    /// namespace wherever they are used afterwards, so a test can bind a listener here and
    /// accept on it from its own thread. Threads `f` spawns inherit the namespace.
    pub fn in_ns<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = ns::open(&self.ns).with_context(|| format!("{self}"))?;
        let ns_name = &self.ns;
        std::thread::scope(|s| {
            let h = s.spawn(move || -> Result<T> {
                ns::enter(&fd, ns_name)?;
                drop(fd);
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Starts a long-running thread in this namespace (a small server for a test, say).
    /// Fails if the namespace cannot be entered; the thread's own result comes from `join`.
    pub fn thread<T, F>(&self, f: F) -> Result<NsThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let fd = ns::open(&self.ns).with_context(|| format!("{self}"))?;
        let ns_name = self.ns.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let handle = std::thread::Builder::new()
            .name(format!("ns-{}", self.name))
            .spawn(move || {
                let entered = ns::enter(&fd, &ns_name);
                drop(fd);
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                if !ok {
                    // The spawner reports the error and never joins this thread.
                    std::panic::resume_unwind(Box::new("namespace not entered"));
                }
                f()
            })
            .with_context(|| format!("{self}: spawning a thread"))?;
        rx.recv()
            .map_err(|_| anyhow!("{self}: namespace thread died before entering"))??;
        Ok(NsThread { handle })
    }

    /// Runs `f` with an rtnetlink handle connected inside this namespace, on a private
    /// current-thread runtime: the escape hatch for netlink requests the helpers below lack.
    pub fn netlink<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: Future<Output = Result<T>>,
        T: Send,
    {
        self.in_ns(move || -> Result<T> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?;
            rt.block_on(async move {
                let (conn, handle, _) =
                    rtnetlink::new_connection().context("opening a netlink socket")?;
                let task = tokio::spawn(conn);
                let out = f(handle).await;
                task.abort();
                out
            })
        })?
        .with_context(|| format!("{self}"))
    }

    /// A `Command` for `program` that will run in this namespace (setns before exec), for
    /// callers that want std's own `output()`/`status()`; prefer [`Host::run`] and
    /// [`Host::spawn`], which add timeouts, captured output and cleanup.
    pub fn command(&self, program: &str) -> Result<Command> {
        let mut cmd = Command::new(program);
        self.prepare(&mut cmd, Enter::SetNs)
    }

    fn prepare(&self, cmd: &mut Command, how: Enter) -> Result<Command> {
        let fd: OwnedFd = ns::open(&self.ns)
            .with_context(|| format!("{self}: preparing `{}`", process::describe(cmd)))?
            .into();
        Ok(process::prepare(cmd, &self.ns, fd, how))
    }

    /// Starts `cmd` in this namespace (entered with setns alone) as a [`Process`] guard; see
    /// [`Host::spawn_with`].
    pub fn spawn(&self, cmd: &mut Command) -> Result<Process> {
        self.spawn_with(cmd, Enter::SetNs)
    }

    /// Starts `cmd` in this namespace, entered as `how` says, in its own process group, stdin
    /// from /dev/null, stdout and stderr to `<scratch>/<host>-<program>-<n>.{stdout,stderr}`.
    /// The guard stops it on drop; the lab's teardown kills it too if the guard outlives it.
    pub fn spawn_with(&self, cmd: &mut Command, how: Enter) -> Result<Process> {
        let shown = process::describe(cmd);
        let prog = std::path::Path::new(cmd.get_program())
            .file_name()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".into());
        let n = self.lab.spawned.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}-{prog}-{n}", self.name);
        let prepared = self.prepare(cmd, how)?;
        let mut proc = Process::start(prepared, label, &self.lab.scratch, &shown)
            .with_context(|| format!("{self}"))?;
        if how == Enter::IpNetnsExec {
            // With setns the child is inside before `spawn` returns (std waits for exec);
            // `ip netns exec` enters later, by itself. Wait for it, so that the process is
            // in the namespace (and found by teardown) by the time we return, either way.
            let ident = ns::identity(&self.ns).with_context(|| format!("{self}: not mounted"))?;
            let pid = proc.pid() as i32;
            wait::wait_until(
                &format!("{} to enter {self}", proc.label()),
                Duration::from_secs(10),
                || Ok(ns::processes_in(&[ident]).contains(&pid) || !proc.is_running()),
            )?;
        }
        Ok(proc)
    }

    /// Runs `cmd` to completion in this namespace (setns alone), with a 60 s limit; a failure
    /// to start, a non-zero exit or the timeout is an error quoting its stdout and stderr.
    pub fn run(&self, cmd: &mut Command) -> Result<Output> {
        self.run_with(cmd, Enter::SetNs, RUN_TIMEOUT)
    }

    /// [`Host::run`] with the way in and the time limit chosen.
    pub fn run_with(&self, cmd: &mut Command, how: Enter, timeout: Duration) -> Result<Output> {
        let shown = process::describe(cmd);
        let prepared = self.prepare(cmd, how)?;
        process::run(prepared, &shown, &self.to_string(), timeout)
    }

    /// Sets a sysctl in this namespace: `net.ipv4.ip_forward`, or a key with `/` separators
    /// when an interface name in it contains a dot. Only `net.*` keys are per namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.in_ns(|| std::fs::write(&path, value))?
            .with_context(|| format!("{self}: sysctl {key}={value}"))
    }

    /// Reads a sysctl in this namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let v = self
            .in_ns(|| std::fs::read_to_string(&path))?
            .with_context(|| format!("{self}: reading sysctl {key}"))?;
        Ok(v.trim().to_string())
    }

    /// Names of the interfaces in this namespace.
    pub fn interfaces(&self) -> Result<Vec<String>> {
        self.netlink(|h| async move {
            let mut names = Vec::new();
            let mut links = h.link().get().execute();
            while let Some(l) = links.try_next().await? {
                for a in l.attributes {
                    if let LinkAttribute::IfName(n) = a {
                        names.push(n);
                    }
                }
            }
            Ok(names)
        })
        .context("listing interfaces")
    }

    /// The interface's index (for XDP attachment, `bpf_redirect`, and the like).
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let name = ifname.to_string();
        self.netlink(|h| async move { Ok(link_by_name(&h, &name).await?.header.index) })
            .with_context(|| format!("ifindex of {ifname}"))
    }

    /// The interface's MAC address.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let link = link_by_name(&h, &name).await?;
            for a in link.attributes {
                if let LinkAttribute::Address(mac) = a {
                    return <[u8; 6]>::try_from(mac.as_slice())
                        .map_err(|_| anyhow!("{name} has a {}-byte address", mac.len()));
                }
            }
            bail!("{name} has no link-layer address")
        })
        .with_context(|| format!("MAC of {ifname}"))
    }

    /// The interface's MTU.
    pub fn mtu(&self, ifname: &str) -> Result<u32> {
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let link = link_by_name(&h, &name).await?;
            link.attributes
                .into_iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(m),
                    _ => None,
                })
                .ok_or_else(|| anyhow!("{name} reports no MTU"))
        })
        .with_context(|| format!("MTU of {ifname}"))
    }

    /// Brings the interface up.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.change_link(ifname, "setting up", |b| b.up())
    }

    /// Brings the interface down (an engine's link failing, say).
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        self.change_link(ifname, "setting down", |b| b.down())
    }

    /// Sets the interface's MTU.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<()> {
        self.change_link(ifname, &format!("setting MTU {mtu}"), move |b| b.mtu(mtu))
    }

    fn change_link(
        &self,
        ifname: &str,
        what: &str,
        f: impl FnOnce(
                rtnetlink::LinkMessageBuilder<LinkUnspec>,
            ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>
            + Send,
    ) -> Result<()> {
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let idx = link_by_name(&h, &name).await?.header.index;
            set_link(&h, f(LinkUnspec::new_with_index(idx)).build()).await
        })
        .with_context(|| format!("{what} {ifname}"))
    }

    /// Adds an address, `10.77.1.1/24` style, to the interface.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let (addr, len) = parse_cidr(cidr)?;
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let idx = link_by_name(&h, &name).await?.header.index;
            h.address().add(idx, addr, len).execute().await?;
            Ok(())
        })
        .with_context(|| format!("adding address {cidr} to {ifname}"))
    }

    /// The interface's addresses with their prefix lengths.
    pub fn addrs(&self, ifname: &str) -> Result<Vec<(IpAddr, u8)>> {
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let idx = link_by_name(&h, &name).await?.header.index;
            let mut out = Vec::new();
            let mut msgs = h.address().get().set_link_index_filter(idx).execute();
            while let Some(m) = msgs.try_next().await? {
                let len = m.header.prefix_len;
                if let Some(a) = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(a) => Some(*a),
                    _ => None,
                }) {
                    out.push((a, len));
                }
            }
            Ok(out)
        })
        .with_context(|| format!("addresses of {ifname}"))
    }

    /// Adds a route to `dest` (`default` or `10.77.2.0/24`) via the gateway `via`.
    pub fn add_route(&self, dest: &str, via: &str) -> Result<()> {
        let gw: IpAddr = via
            .parse()
            .with_context(|| format!("bad gateway {via:?}"))?;
        let (net, len) = route_dest(dest, gw.is_ipv4())?;
        self.netlink(|h| async move {
            let msg = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(net, len)?
                .gateway(gw)?
                .build();
            h.route().add(msg).execute().await?;
            Ok(())
        })
        .with_context(|| format!("adding route {dest} via {via}"))
    }

    /// Adds a route to `dest` straight out of the interface, no gateway (an on-link network).
    pub fn add_route_dev(&self, dest: &str, ifname: &str) -> Result<()> {
        let (net, len) = route_dest(dest, !dest.contains(':'))?;
        let name = ifname.to_string();
        self.netlink(|h| async move {
            let idx = link_by_name(&h, &name).await?.header.index;
            let msg = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(net, len)?
                .output_interface(idx)
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build();
            h.route().add(msg).execute().await?;
            Ok(())
        })
        .with_context(|| format!("adding route {dest} dev {ifname}"))
    }

    /// Creates bridge `name` here (up, STP off so ports forward at once) and makes each of
    /// `ports` a port of it, up.
    pub fn add_bridge(&self, name: &str, ports: &[&str]) -> Result<()> {
        check_ifname(name)?;
        let br = name.to_string();
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        let shown = ports.join(", ");
        self.netlink(|h| async move {
            h.link()
                .add(LinkBridge::new(&br).build())
                .execute()
                .await
                .context("creating the bridge")?;
            let br_idx = link_by_name(&h, &br).await?.header.index;
            for p in &ports {
                let idx = link_by_name(&h, p).await?.header.index;
                set_link(
                    &h,
                    LinkUnspec::new_with_index(idx)
                        .controller(br_idx)
                        .up()
                        .build(),
                )
                .await
                .with_context(|| format!("adding port {p}"))?;
            }
            Ok(())
        })
        .with_context(|| format!("bridge {name} with ports [{shown}]"))
    }

    /// Waits until something in this namespace listens on TCP `port` (any address), read
    /// from the kernel's socket table, so no probe connection disturbs a one-shot server.
    pub fn wait_tcp_listen(&self, port: u16, timeout: Duration) -> Result<()> {
        wait::wait_until(
            &format!("TCP port {port} to listen in {self}"),
            timeout,
            || Ok(self.in_ns(wait::listening_tcp_ports)??.contains(&port)),
        )
    }
}

fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    std::path::Path::new("/proc/sys").join(rel)
}

fn route_dest(dest: &str, v4: bool) -> Result<(IpAddr, u8)> {
    if dest == "default" {
        let any = if v4 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        return Ok((any, 0));
    }
    parse_cidr(dest)
}
