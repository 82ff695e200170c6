//! Engines' next hops, from the kernel's own tables through rtnetlink (never from `ip`'s
//! output): for each engine address, a route lookup (RTM_GETROUTE with the destination:
//! output interface, gateway, preferred source), the interface (index, name, MAC, MTU,
//! up) and the neighbour entry of the engine or its gateway on that interface (MAC,
//! state). An absent or failed neighbour entry is resolved by the kernel on request
//! (RTM_NEWNEIGH with NTF_USE, which starts ARP as a packet would) and looked at again.
//!
//! A [`Resolver`] task keeps the answers current: it is subscribed to RTNLGRP_NEIGH,
//! RTNLGRP_IPV4_ROUTE and RTNLGRP_LINK, re-resolves the engines a change can affect, and
//! sends the whole map whenever an engine's next hop changed, which the daemon hands to
//! the data plane (one atomic table install). Unresolved engines are retried every second;
//! every engine is looked at again every [`REFRESH`] in case a notification was lost.
//!
//! The decisions are pure functions of the facts ([`assemble`], [`affects`]), tested
//! without a kernel; only [`Resolver`] talks to netlink.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{
    InfoData, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
    VlanProtocol,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, warn};

/// How often unresolved engines are looked at again.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often every engine is looked at again, notifications or not.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The least time between two resolution requests for one neighbour.
const TRIGGER_EVERY: Duration = Duration::from_millis(900);
/// How long one netlink request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How an engine is reached, as far as it could be found out; `reason` is `None` when
/// everything the data plane needs is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface name.
    pub iface: Option<String>,
    /// Egress interface index (0: not known).
    pub ifindex: u32,
    /// The gateway, when the engine is not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The router's address on that side: the GRE source.
    pub router_addr: Option<Ipv4Addr>,
    /// The egress interface's MAC.
    pub src_mac: Option<[u8; 6]>,
    /// The engine's (on-link) or the gateway's MAC.
    pub mac: Option<[u8; 6]>,
    /// Largest IP packet the path takes (route MTU, else the interface's).
    pub mtu: u32,
    /// The kernel's neighbour state (`reachable`, `stale`, ...), when there is an entry.
    pub neighbour: Option<&'static str>,
    /// Why the next hop is not resolved; `None` when it is.
    pub reason: Option<String>,
    /// When the egress interface is a VLAN device: its tag, and the parent device
    /// frames leave by (XDP cannot send out of the VLAN device itself).
    pub vlan: Option<VlanPath>,
}

/// The tagged way out of a VLAN device (router-on-a-stick).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VlanPath {
    /// The 802.1Q VLAN id.
    pub id: u16,
    /// The parent device's name.
    pub parent: String,
    /// The parent device's index: where the data plane sends the tagged frames.
    pub parent_index: u32,
}

/// What the data plane writes for an engine it can redirect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// Egress interface index.
    pub ifindex: u32,
    /// GRE source.
    pub router_addr: Ipv4Addr,
    /// Egress interface MAC.
    pub src_mac: [u8; 6],
    /// Next hop MAC.
    pub dst_mac: [u8; 6],
    /// Largest IP packet, clamped to 16 bits.
    pub mtu: u16,
    /// The 802.1Q VLAN the frames carry, when the route goes out of a VLAN device
    /// (`ifindex` is then its parent's).
    pub vlan: Option<u16>,
}

impl NextHop {
    /// A next hop known only by why it is not resolved.
    pub fn unresolved(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::default()
        }
    }

    /// Whether everything is known (for GRE; L2 adds [`NextHop::path`]'s on-link check).
    pub fn is_resolved(&self) -> bool {
        self.reason.is_none()
    }

    /// The path the data plane takes to the engine with its forwarding method (`l2`:
    /// Ethernet rewrite, which needs the engine on-link), or why there is none.
    pub fn path(&self, l2: bool) -> Result<Path, String> {
        if let Some(r) = &self.reason {
            return Err(r.clone());
        }
        if l2 {
            if let Some(g) = self.gateway {
                return Err(format!(
                    "L2 forwarding needs the engine on-link, but it is reached through gateway {g}"
                ));
            }
        }
        match (self.router_addr, self.src_mac, self.mac) {
            (Some(router_addr), Some(src_mac), Some(dst_mac)) if self.ifindex != 0 => Ok(Path {
                ifindex: self.vlan.as_ref().map_or(self.ifindex, |v| v.parent_index),
                router_addr,
                src_mac,
                dst_mac,
                mtu: u16::try_from(self.mtu).unwrap_or(u16::MAX),
                vlan: self.vlan.as_ref().map(|v| v.id),
            }),
            _ => Err("next hop incomplete".into()),
        }
    }

    /// The address whose neighbour entry gives the MAC (gateway or engine), once the
    /// route is known.
    pub fn neighbour_addr(&self, engine: Ipv4Addr) -> Option<Ipv4Addr> {
        (self.ifindex != 0).then(|| self.gateway.unwrap_or(engine))
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a route lookup said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteFacts {
    /// Route type.
    pub kind: RouteType,
    /// Output interface.
    pub oif: Option<u32>,
    /// Gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Preferred source.
    pub prefsrc: Option<Ipv4Addr>,
    /// Route MTU metric.
    pub mtu: Option<u32>,
}

/// The facts of a route message.
pub fn route_facts(m: &RouteMessage) -> RouteFacts {
    let mut f = RouteFacts {
        kind: m.header.kind,
        ..RouteFacts::default()
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => f.oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => f.gateway = Some(*g),
            RouteAttribute::PrefSource(RouteAddress::Inet(s)) => f.prefsrc = Some(*s),
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    if let RouteMetric::Mtu(v) = metric {
                        f.mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    f
}

/// What the kernel says of an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Its MAC, when it is Ethernet with a 6-byte address.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Carrier.
    pub lower_up: bool,
    /// IFF_NOARP: no neighbour resolution on it.
    pub noarp: bool,
    /// Its kind (`veth`, `vlan`, `bridge`, ...), for virtual devices.
    pub kind: Option<String>,
    /// The device it is stacked on (IFLA_LINK), for a VLAN device its parent.
    pub parent: Option<u32>,
    /// A VLAN device's id, and whether it is 802.1Q (false: 802.1ad).
    pub vlan: Option<(u16, bool)>,
}

/// Kinds of device that XDP cannot redirect frames out of (they have no `ndo_xdp_xmit`):
/// a frame sent there would be dropped, so such an engine fails open instead. A VLAN
/// device is the exception: its frames go tagged out of its parent (when that is not
/// one of these).
pub const NO_XDP_XMIT: [&str; 9] = [
    "bridge", "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "vxlan", "dummy", "vrf",
];

/// The facts of a link message.
pub fn link_facts(m: &LinkMessage) -> LinkFacts {
    let mut f = LinkFacts {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        noarp: m.header.flags.contains(LinkFlags::Noarp),
        ..LinkFacts::default()
    };
    let ether = m.header.link_layer_type == LinkLayerType::Ether;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name = n.clone(),
            LinkAttribute::Mtu(v) => f.mtu = *v,
            LinkAttribute::Address(a) if ether => f.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Link(parent) => f.parent = Some(*parent),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => f.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            let mut id = None;
                            let mut dot1q = true;
                            for a in v {
                                match a {
                                    InfoVlan::Id(i) => id = Some(*i),
                                    InfoVlan::Protocol(p) => dot1q = *p == VlanProtocol::Ieee8021Q,
                                    _ => {}
                                }
                            }
                            f.vlan = id.map(|i| (i, dot1q));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    f
}

/// What the kernel says of a neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighFacts {
    /// Its state.
    pub state: NeighbourState,
    /// Its link-layer address, when it has one.
    pub mac: Option<[u8; 6]>,
}

/// The facts of a neighbour message.
pub fn neigh_facts(m: &NeighbourMessage) -> NeighFacts {
    NeighFacts {
        state: m.header.state,
        mac: m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        }),
    }
}

/// A neighbour state's name, as `ip neigh` spells it (lower case).
pub fn state_name(s: NeighbourState) -> &'static str {
    match s {
        NeighbourState::Incomplete => "incomplete",
        NeighbourState::Reachable => "reachable",
        NeighbourState::Stale => "stale",
        NeighbourState::Delay => "delay",
        NeighbourState::Probe => "probe",
        NeighbourState::Failed => "failed",
        NeighbourState::Noarp => "noarp",
        NeighbourState::Permanent => "permanent",
        NeighbourState::None => "none",
        _ => "other",
    }
}

/// What to do after a resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Nothing: resolved and confirmed, or nothing the kernel can do.
    Nothing,
    /// Ask the kernel to resolve (or confirm) the neighbour, then look again.
    Trigger,
    /// Resolution is in progress: look again soon.
    Retry,
}

/// Why a route does not lead to an engine, for routes that are not unicast.
fn route_refusal(engine: Ipv4Addr, kind: RouteType) -> Option<String> {
    Some(match kind {
        RouteType::Unicast => return None,
        RouteType::Local => format!("{engine} is an address of this router"),
        RouteType::Broadcast | RouteType::Multicast | RouteType::Anycast => {
            format!("{engine} is a {kind:?} address, not a host")
        }
        RouteType::Unreachable => format!("no route to {engine} (unreachable)"),
        RouteType::Prohibit => format!("the route to {engine} is prohibit"),
        RouteType::BlackHole => format!("the route to {engine} is a blackhole"),
        other => format!("the route to {engine} is of type {other:?}"),
    })
}

/// Builds an engine's next hop from what the kernel said: the route to it, the output
/// interface (and, for a VLAN device, its parent), and the neighbour entry of the next
/// hop there (`None`: no entry). A
/// previous next hop on the same interface and gateway lends its MAC while the kernel
/// re-resolves (an entry deleted or being probed again), so that a routine refresh does
/// not fail the engine open; a failed resolution does not.
pub fn assemble(
    engine: Ipv4Addr,
    configured_router: Ipv4Addr,
    route: &RouteFacts,
    link: &LinkFacts,
    parent: Option<&LinkFacts>,
    neigh: Option<&NeighFacts>,
    previous: Option<&NextHop>,
) -> (NextHop, Follow) {
    if let Some(reason) = route_refusal(engine, route.kind) {
        return (NextHop::unresolved(reason), Follow::Nothing);
    }
    let mut hop = NextHop {
        iface: Some(link.name.clone()),
        ifindex: link.index,
        gateway: route.gateway.filter(|g| *g != engine),
        router_addr: Some(route.prefsrc.unwrap_or(configured_router)),
        src_mac: link.mac,
        mtu: route.mtu.filter(|m| *m > 0).unwrap_or(link.mtu),
        ..NextHop::default()
    };
    let name = &link.name;
    let fail = |mut hop: NextHop, reason: String, follow: Follow| {
        hop.reason = Some(reason);
        (hop, follow)
    };
    if !link.up {
        return fail(hop, format!("interface {name} is down"), Follow::Nothing);
    }
    if !link.lower_up {
        return fail(
            hop,
            format!("interface {name} has no carrier"),
            Follow::Nothing,
        );
    }
    if link.mac.is_none() {
        return fail(
            hop,
            format!("interface {name} is not Ethernet (no MAC address)"),
            Follow::Nothing,
        );
    }
    if link.kind.as_deref() == Some("vlan") {
        // Router-on-a-stick: the frames leave tagged by the parent device.
        let id = match link.vlan {
            Some((id, true)) => id,
            Some((_, false)) => {
                return fail(
                    hop,
                    format!(
                        "interface {name} is an 802.1ad (QinQ) VLAN device: only 802.1Q is \
                         supported"
                    ),
                    Follow::Nothing,
                )
            }
            None => {
                return fail(
                    hop,
                    format!("VLAN device {name}: the kernel did not say its VLAN id"),
                    Follow::Nothing,
                )
            }
        };
        let Some(p) = parent else {
            return fail(
                hop,
                format!("VLAN device {name}: its parent device was not found"),
                Follow::Nothing,
            );
        };
        let pname = &p.name;
        if let Some(kind) = p.kind.as_deref().filter(|k| NO_XDP_XMIT.contains(k)) {
            return fail(
                hop,
                format!(
                    "VLAN device {name} is on {pname}, a {kind} device, which XDP cannot \
                     redirect out of"
                ),
                Follow::Nothing,
            );
        }
        if !p.up || !p.lower_up {
            return fail(
                hop,
                format!("VLAN device {name} is on {pname}, which is down or has no carrier"),
                Follow::Nothing,
            );
        }
        hop.vlan = Some(VlanPath {
            id,
            parent: pname.clone(),
            parent_index: p.index,
        });
    } else if let Some(kind) = link.kind.as_deref().filter(|k| NO_XDP_XMIT.contains(k)) {
        return fail(
            hop,
            format!(
                "interface {name} is a {kind} device, which XDP cannot redirect out of \
                 (route the engine through the underlying device)"
            ),
            Follow::Nothing,
        );
    }
    if link.noarp {
        return fail(
            hop,
            format!("interface {name} does not resolve neighbours (NOARP)"),
            Follow::Nothing,
        );
    }
    let nh = hop.gateway.unwrap_or(engine);
    let lend =
        |mut hop: NextHop, state: &'static str, reason: String, follow: Follow| match previous
            .filter(|p| p.is_resolved() && p.ifindex == hop.ifindex && p.gateway == hop.gateway)
        {
            Some(p) => {
                hop.mac = p.mac;
                hop.neighbour = (state != "absent").then_some(state);
                (hop, follow)
            }
            None => {
                hop.neighbour = (state != "absent").then_some(state);
                fail(hop, reason, follow)
            }
        };
    match neigh {
        Some(n) => match (n.state, n.mac) {
            (
                NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp,
                Some(mac),
            ) => {
                hop.mac = Some(mac);
                hop.neighbour = Some(state_name(n.state));
                // A stale entry is confirmed the way traffic through the kernel would.
                let follow = if n.state == NeighbourState::Stale {
                    Follow::Trigger
                } else {
                    Follow::Nothing
                };
                (hop, follow)
            }
            (NeighbourState::Failed, _) => {
                hop.neighbour = Some("failed");
                fail(
                    hop,
                    format!("neighbour {nh} on {name} does not answer ARP"),
                    Follow::Trigger,
                )
            }
            (NeighbourState::Incomplete, _) => lend(
                hop,
                "incomplete",
                format!("resolving neighbour {nh} on {name} (ARP in progress)"),
                Follow::Retry,
            ),
            (state, _) => lend(
                hop,
                state_name(state),
                format!(
                    "neighbour {nh} on {name} is {} without a MAC; resolving",
                    state_name(state)
                ),
                Follow::Trigger,
            ),
        },
        None => lend(
            hop,
            "absent",
            format!("no neighbour entry for {nh} on {name} yet; resolving"),
            Follow::Trigger,
        ),
    }
}

/// Which engines a netlink notification can affect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affects {
    /// None of them (another family, another kind of message).
    Nothing,
    /// Those whose neighbour (engine or gateway) is this address.
    Neighbour(Ipv4Addr),
    /// Possibly every one (a route or link change).
    All,
}

/// What a notification affects.
pub fn affects(msg: &RouteNetlinkMessage) -> Affects {
    match msg {
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
            if n.header.family != AddressFamily::Inet {
                return Affects::Nothing;
            }
            n.attributes
                .iter()
                .find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        Some(Affects::Neighbour(*a))
                    }
                    _ => None,
                })
                .unwrap_or(Affects::Nothing)
        }
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            if r.header.address_family == AddressFamily::Inet {
                Affects::All
            } else {
                Affects::Nothing
            }
        }
        RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => Affects::All,
        _ => Affects::Nothing,
    }
}

/// The engines of `hops` (and of `wanted` without one yet) that `what` can affect.
pub fn affected(
    what: &Affects,
    wanted: &BTreeSet<Ipv4Addr>,
    hops: &BTreeMap<Ipv4Addr, NextHop>,
) -> BTreeSet<Ipv4Addr> {
    match what {
        Affects::Nothing => BTreeSet::new(),
        Affects::All => wanted.clone(),
        Affects::Neighbour(a) => wanted
            .iter()
            .copied()
            .filter(|e| match hops.get(e).and_then(|h| h.neighbour_addr(*e)) {
                Some(n) => n == *a,
                None => e == a,
            })
            .collect(),
    }
}

/// Resolver counters, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolverCounters {
    /// Lookups that found a complete next hop.
    pub resolved: u64,
    /// Lookups that did not.
    pub unresolved: u64,
    /// Times an engine's path changed (MAC moved, route changed, resolved, lost); changes
    /// of the neighbour state alone (reachable, stale, ...) do not count.
    pub changes: u64,
    /// Neighbour resolutions asked of the kernel.
    pub triggers: u64,
    /// Netlink notifications received.
    pub notifications: u64,
}

/// What the resolver sends when something changed: every wanted engine's next hop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Every wanted engine's next hop.
    pub hops: BTreeMap<Ipv4Addr, NextHop>,
}

/// The daemon's end of the resolver task: tell it which engines to follow; updates
/// arrive on the receiver [`Resolver::start`] returned.
#[derive(Debug)]
pub struct Resolver {
    wanted: watch::Sender<BTreeSet<Ipv4Addr>>,
    counters: watch::Receiver<ResolverCounters>,
}

impl Resolver {
    /// Starts the resolver task on the current tokio runtime. `configured_router` is the
    /// GRE source used when a route has no preferred source.
    pub fn start(configured_router: Ipv4Addr) -> (Resolver, mpsc::Receiver<Update>) {
        let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
        let (counters_tx, counters) = watch::channel(ResolverCounters::default());
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run(configured_router, wanted_rx, tx, counters_tx));
        (Resolver { wanted, counters }, rx)
    }

    /// The counters now.
    pub fn counters(&self) -> ResolverCounters {
        *self.counters.borrow()
    }

    /// Follows exactly these engines from now on.
    pub fn want(&self, engines: BTreeSet<Ipv4Addr>) {
        self.wanted.send_if_modified(|w| {
            if *w == engines {
                false
            } else {
                *w = engines;
                true
            }
        });
    }
}

struct State {
    configured_router: Ipv4Addr,
    wanted: BTreeSet<Ipv4Addr>,
    hops: BTreeMap<Ipv4Addr, NextHop>,
    /// When a neighbour resolution was last asked for, by engine.
    triggered: BTreeMap<Ipv4Addr, Instant>,
    /// Engines to look at again soon (resolution in progress, or unresolved).
    pending: BTreeSet<Ipv4Addr>,
    counters: ResolverCounters,
}

async fn run(
    configured_router: Ipv4Addr,
    mut wanted_rx: watch::Receiver<BTreeSet<Ipv4Addr>>,
    tx: mpsc::Sender<Update>,
    counters: watch::Sender<ResolverCounters>,
) {
    let mut st = State {
        configured_router,
        wanted: BTreeSet::new(),
        hops: BTreeMap::new(),
        triggered: BTreeMap::new(),
        pending: BTreeSet::new(),
        counters: ResolverCounters::default(),
    };
    let groups = [
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Link,
    ];
    let (mut conn, handle, mut messages) = match rtnetlink::new_multicast_connection(&groups) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot open netlink: engines' next hops stay unresolved (their buckets fail open)");
            // Keep answering with the reason, so `show` says why.
            loop {
                st.wanted = wanted_rx.borrow_and_update().clone();
                let hops = st
                    .wanted
                    .iter()
                    .map(|e| (*e, NextHop::unresolved(format!("netlink unavailable: {e}"))))
                    .collect();
                if tx.send(Update { hops }).await.is_err() || wanted_rx.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    // Room for a burst of neighbour changes (an ARP storm on a busy segment); what still
    // overflows is caught up by the periodic refresh.
    use rtnetlink::sys::AsyncSocket as _;
    if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(1usize << 20) {
        debug!(error = %e, "netlink receive buffer left at its default");
    }
    tokio::spawn(conn);
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: Option<BTreeMap<Ipv4Addr, NextHop>> = None;
    let mut listening = true;
    loop {
        let mut dirty = BTreeSet::new();
        tokio::select! {
            changed = wanted_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted = wanted_rx.borrow_and_update().clone();
                dirty = wanted.difference(&st.wanted).copied().collect();
                st.hops.retain(|e, _| wanted.contains(e));
                st.triggered.retain(|e, _| wanted.contains(e));
                st.pending.retain(|e| wanted.contains(e));
                st.wanted = wanted;
            }
            msg = messages.next(), if listening => {
                let Some((msg, _)) = msg else {
                    error!("netlink notifications ended: next hops are now refreshed every {}s only", REFRESH.as_secs());
                    listening = false;
                    continue;
                };
                note(&mut st, &msg, &mut dirty);
                // Take whatever else is queued, so a burst costs one pass.
                while let Ok((msg, _)) = messages.try_recv() {
                    note(&mut st, &msg, &mut dirty);
                }
                counters.send_replace(st.counters);
            }
            _ = retry.tick() => {
                dirty = st.pending.clone();
                dirty.extend(st.wanted.iter().filter(|e| !st.hops.get(e).is_some_and(NextHop::is_resolved)));
            }
            _ = refresh.tick() => dirty = st.wanted.clone(),
        }
        if dirty.is_empty() {
            continue;
        }
        for engine in dirty {
            resolve(&mut st, &handle, engine).await;
        }
        counters.send_replace(st.counters);
        let hops: BTreeMap<Ipv4Addr, NextHop> = st
            .wanted
            .iter()
            .map(|e| {
                (
                    *e,
                    st.hops
                        .get(e)
                        .cloned()
                        .unwrap_or_else(|| NextHop::unresolved("resolving")),
                )
            })
            .collect();
        if sent.as_ref() != Some(&hops) {
            if let Some(old) = &sent {
                let changed = hops
                    .iter()
                    .filter(|(e, h)| old.get(e).is_some_and(|o| o.path(false) != h.path(false)))
                    .count();
                st.counters.changes = st.counters.changes.saturating_add(changed as u64);
                counters.send_replace(st.counters);
            }
            sent = Some(hops.clone());
            if tx.send(Update { hops }).await.is_err() {
                return;
            }
        }
    }
}

fn note(st: &mut State, msg: &NetlinkMessage<RouteNetlinkMessage>, dirty: &mut BTreeSet<Ipv4Addr>) {
    st.counters.notifications = st.counters.notifications.saturating_add(1);
    match &msg.payload {
        NetlinkPayload::InnerMessage(m) => {
            dirty.extend(affected(&affects(m), &st.wanted, &st.hops));
        }
        // An overrun (ENOBUFS) loses notifications: look at everything again.
        NetlinkPayload::Error(_) | NetlinkPayload::Overrun(_) => {
            dirty.extend(st.wanted.iter().copied());
        }
        _ => {}
    }
}

async fn resolve(st: &mut State, handle: &Handle, engine: Ipv4Addr) {
    let previous = st.hops.get(&engine).cloned();
    let (hop, follow) = match lookup(handle, engine, st.configured_router, previous.as_ref()).await
    {
        Ok(r) => r,
        Err(reason) => (NextHop::unresolved(reason), Follow::Nothing),
    };
    if hop.is_resolved() {
        st.counters.resolved = st.counters.resolved.saturating_add(1);
    } else {
        st.counters.unresolved = st.counters.unresolved.saturating_add(1);
    }
    match follow {
        Follow::Nothing => {
            st.pending.remove(&engine);
        }
        Follow::Retry => {
            st.pending.insert(engine);
        }
        Follow::Trigger => {
            st.pending.insert(engine);
            let now = Instant::now();
            // A failed entry is asked again at most every TRIGGER_EVERY (each request is
            // a few ARP probes); an absent or stale one at once, since the request itself
            // moves it on (incomplete, delay), so it is not asked twice.
            let due = hop.neighbour != Some("failed")
                || st
                    .triggered
                    .get(&engine)
                    .is_none_or(|t| now.duration_since(*t) >= TRIGGER_EVERY);
            if let (true, Some(nh)) = (due, hop.neighbour_addr(engine)) {
                st.triggered.insert(engine, now);
                st.counters.triggers = st.counters.triggers.saturating_add(1);
                trigger(handle, hop.ifindex, nh).await;
            }
        }
    }
    if previous.as_ref() != Some(&hop) {
        debug!(%engine, ?hop, "next hop looked up");
    }
    st.hops.insert(engine, hop);
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "netlink {what}: no answer within {REQUEST_TIMEOUT:?}"
        )),
    }
}

fn nl_error(what: &str, e: rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => format!("{what}: {}", m.to_io()),
        other => format!("{what}: {other}"),
    }
}

/// One engine's lookup: route, link, neighbour.
async fn lookup(
    handle: &Handle,
    engine: Ipv4Addr,
    configured_router: Ipv4Addr,
    previous: Option<&NextHop>,
) -> Result<(NextHop, Follow), String> {
    let route = timed("route lookup", async {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(engine, 32)
            .build();
        let mut routes = handle.route().get(msg).execute();
        match routes.try_next().await {
            Ok(Some(r)) => Ok(route_facts(&r)),
            Ok(None) => Err(format!("no route to {engine}")),
            Err(e) => Err(nl_error(&format!("no route to {engine}"), e)),
        }
    })
    .await?;
    if let Some(reason) = route_refusal(engine, route.kind) {
        return Ok((NextHop::unresolved(reason), Follow::Nothing));
    }
    let Some(oif) = route.oif else {
        return Ok((
            NextHop::unresolved(format!("the route to {engine} has no output interface")),
            Follow::Nothing,
        ));
    };
    let link = timed("link lookup", get_link(handle, oif))
        .await?
        .ok_or_else(|| format!("interface {oif} not found"))?;
    // A VLAN device's frames leave by its parent, whose state matters too.
    let parent = match (link.kind.as_deref(), link.parent) {
        (Some("vlan"), Some(index)) => timed("link lookup", get_link(handle, index)).await?,
        _ => None,
    };
    let nh = route.gateway.filter(|g| *g != engine).unwrap_or(engine);
    let neigh = timed("neighbour lookup", get_neighbour(handle, oif, nh)).await?;
    Ok(assemble(
        engine,
        configured_router,
        &route,
        &link,
        parent.as_ref(),
        neigh.as_ref(),
        previous,
    ))
}

/// The facts of interface `index`, or `None` when there is no such interface.
async fn get_link(handle: &Handle, index: u32) -> Result<Option<LinkFacts>, String> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| link_facts(&l))),
        Err(e) => Err(nl_error(&format!("interface {index}"), e)),
    }
}

/// The neighbour entry of `addr` on interface `ifindex` (RTM_GETNEIGH for one entry, not a
/// dump), or `None` when there is none.
async fn get_neighbour(
    handle: &Handle,
    ifindex: u32,
    addr: Ipv4Addr,
) -> Result<Option<NeighFacts>, String> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut handle = handle.clone();
    let mut answers = handle
        .request(req)
        .map_err(|e| format!("neighbour lookup: {e}"))?;
    while let Some(m) = answers.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                return Ok(Some(neigh_facts(&n)))
            }
            NetlinkPayload::Error(e) if e.raw_code() == -ENOENT => return Ok(None),
            NetlinkPayload::Error(e) => {
                return Err(format!("neighbour {addr}: {}", e.to_io()));
            }
            _ => {}
        }
    }
    Ok(None)
}

const ENOENT: i32 = 2;

/// Asks the kernel to resolve (or confirm) neighbour `addr` on `ifindex`, as a packet to
/// it would: RTM_NEWNEIGH with NTF_USE creates the entry if needed and starts ARP. Where
/// the kernel refuses that, a UDP datagram to the discard port does the same.
async fn trigger(handle: &Handle, ifindex: u32, addr: Ipv4Addr) {
    let asked = handle
        .neighbours()
        .add(ifindex, IpAddr::V4(addr))
        .flags(NeighbourFlags::Use)
        .state(NeighbourState::None)
        .replace()
        .execute();
    match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
        Ok(Ok(())) => debug!(%addr, ifindex, "neighbour resolution requested"),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            warn!(%addr, ifindex, error = %why, "NTF_USE refused; resolving with a UDP datagram");
            let sent = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|s| s.send_to(&[], (addr, 9)));
            if let Err(e) = sent {
                warn!(%addr, error = %e, "could not send the resolving datagram");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
    const R: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 254);
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn route(gateway: Option<Ipv4Addr>) -> RouteFacts {
        RouteFacts {
            kind: RouteType::Unicast,
            oif: Some(7),
            gateway,
            prefsrc: Some(R),
            mtu: None,
        }
    }

    fn link() -> LinkFacts {
        LinkFacts {
            index: 7,
            name: "r1".into(),
            mac: Some(SRC),
            mtu: 1500,
            up: true,
            lower_up: true,
            noarp: false,
            kind: Some("veth".into()),
            parent: None,
            vlan: None,
        }
    }

    fn neigh(state: NeighbourState, mac: Option<[u8; 6]>) -> NeighFacts {
        NeighFacts { state, mac }
    }

    #[test]
    fn on_link_engine_resolves_with_every_field() {
        let (hop, follow) = assemble(
            E,
            Ipv4Addr::new(192, 0, 2, 1),
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Reachable, Some(MAC))),
            None,
        );
        assert_eq!(follow, Follow::Nothing);
        assert_eq!(hop.reason, None);
        assert_eq!(hop.neighbour, Some("reachable"));
        let p = hop.path(false).unwrap();
        assert_eq!(
            p,
            Path {
                ifindex: 7,
                router_addr: R,
                src_mac: SRC,
                dst_mac: MAC,
                mtu: 1500,
                vlan: None,
            }
        );
        assert_eq!(hop.path(true).unwrap(), p, "on-link: L2 is fine");
        assert_eq!(hop.neighbour_addr(E), Some(E));
    }

    #[test]
    fn router_address_falls_back_to_the_configured_one_and_route_mtu_wins() {
        let mut r = route(None);
        r.prefsrc = None;
        r.mtu = Some(1400);
        let cfg = Ipv4Addr::new(192, 0, 2, 1);
        let (hop, _) = assemble(
            E,
            cfg,
            &r,
            &link(),
            None,
            Some(&neigh(NeighbourState::Permanent, Some(MAC))),
            None,
        );
        let p = hop.path(false).unwrap();
        assert_eq!(p.router_addr, cfg);
        assert_eq!(p.mtu, 1400);
        let mut big = link();
        big.mtu = 65536;
        let (hop, _) = assemble(
            E,
            cfg,
            &route(None),
            &big,
            None,
            Some(&neigh(NeighbourState::Noarp, Some(MAC))),
            None,
        );
        assert_eq!(hop.path(false).unwrap().mtu, u16::MAX, "clamped");
    }

    #[test]
    fn behind_a_gateway_gre_uses_the_gateway_mac_and_l2_is_refused() {
        let (hop, _) = assemble(
            E,
            R,
            &route(Some(GW)),
            &link(),
            None,
            Some(&neigh(NeighbourState::Reachable, Some(MAC))),
            None,
        );
        assert_eq!(hop.gateway, Some(GW));
        assert_eq!(hop.neighbour_addr(E), Some(GW));
        assert_eq!(hop.path(false).unwrap().dst_mac, MAC);
        let err = hop.path(true).unwrap_err();
        assert!(
            err.contains("on-link") && err.contains("10.3.0.254"),
            "{err}"
        );
    }

    #[test]
    fn routes_that_lead_nowhere_are_refused_with_the_reason() {
        for (kind, words) in [
            (RouteType::Local, "address of this router"),
            (RouteType::Unreachable, "unreachable"),
            (RouteType::BlackHole, "blackhole"),
            (RouteType::Prohibit, "prohibit"),
            (RouteType::Broadcast, "Broadcast"),
        ] {
            let mut r = route(None);
            r.kind = kind;
            let (hop, follow) = assemble(E, R, &r, &link(), None, None, None);
            assert_eq!(follow, Follow::Nothing);
            let reason = hop.reason.clone().unwrap();
            assert!(reason.contains(words), "{kind:?}: {reason}");
            assert!(hop.path(false).is_err());
        }
    }

    /// A VLAN device "r1.20" (index 9) on `link()` (index 7).
    fn vlan_link(id: u16, dot1q: bool) -> LinkFacts {
        LinkFacts {
            index: 9,
            name: "r1.20".into(),
            kind: Some("vlan".into()),
            parent: Some(7),
            vlan: Some((id, dot1q)),
            ..link()
        }
    }

    #[test]
    fn an_engine_behind_a_vlan_device_is_reached_tagged_through_its_parent() {
        let reachable = neigh(NeighbourState::Reachable, Some(MAC));
        let (hop, follow) = assemble(
            E,
            R,
            &route(None),
            &vlan_link(20, true),
            Some(&link()),
            Some(&reachable),
            None,
        );
        assert_eq!((hop.reason.clone(), follow), (None, Follow::Nothing));
        assert_eq!(hop.ifindex, 9, "neighbours are the VLAN device's");
        assert_eq!(hop.neighbour_addr(E), Some(E));
        let p = hop.path(true).unwrap();
        assert_eq!(
            (p.ifindex, p.vlan),
            (7, Some(20)),
            "out of the parent, tagged"
        );
        assert_eq!(hop.path(false).unwrap(), p);
    }

    #[test]
    fn vlan_devices_that_cannot_carry_the_redirect_are_refused() {
        let reachable = neigh(NeighbourState::Reachable, Some(MAC));
        let bridge = LinkFacts {
            kind: Some("bridge".into()),
            ..link()
        };
        let down = LinkFacts {
            lower_up: false,
            ..link()
        };
        let cases: [(LinkFacts, Option<&LinkFacts>, &str); 4] = [
            (vlan_link(20, false), Some(&link()), "802.1ad"),
            (vlan_link(20, true), None, "parent device was not found"),
            (vlan_link(20, true), Some(&bridge), "on r1, a bridge device"),
            (vlan_link(20, true), Some(&down), "down or has no carrier"),
        ];
        for (vlan, parent, words) in cases {
            let (hop, _) = assemble(E, R, &route(None), &vlan, parent, Some(&reachable), None);
            let reason = hop.reason.clone().unwrap_or_default();
            assert!(reason.contains(words), "{words}: {reason}");
            assert!(hop.path(false).is_err());
        }
    }

    #[test]
    fn interfaces_that_cannot_carry_the_redirect_are_refused() {
        type Change = fn(&mut LinkFacts);
        let cases: [(Change, &str); 6] = [
            (|l| l.kind = Some("vlan".into()), "did not say its VLAN id"),
            (|l| l.kind = Some("bridge".into()), "bridge device"),
            (|l| l.up = false, "is down"),
            (|l| l.lower_up = false, "no carrier"),
            (|l| l.mac = None, "not Ethernet"),
            (|l| l.noarp = true, "NOARP"),
        ];
        for (change, words) in cases {
            let mut l = link();
            change(&mut l);
            let (hop, follow) = assemble(
                E,
                R,
                &route(None),
                &l,
                None,
                Some(&neigh(NeighbourState::Reachable, Some(MAC))),
                None,
            );
            assert_eq!(follow, Follow::Nothing);
            let reason = hop.reason.clone().unwrap();
            assert!(reason.contains(words), "{reason}");
            assert_eq!(
                hop.iface.as_deref(),
                Some("r1"),
                "the interface is still shown"
            );
        }
    }

    #[test]
    fn missing_or_failed_neighbours_trigger_resolution() {
        let (hop, follow) = assemble(E, R, &route(None), &link(), None, None, None);
        assert_eq!(follow, Follow::Trigger);
        assert!(hop.reason.clone().unwrap().contains("resolving"), "{hop:?}");
        assert_eq!(hop.neighbour, None);
        let (hop, follow) = assemble(
            E,
            R,
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Failed, None)),
            None,
        );
        assert_eq!(follow, Follow::Trigger);
        assert!(hop.reason.clone().unwrap().contains("does not answer ARP"));
        assert_eq!(hop.neighbour, Some("failed"));
        let (hop, follow) = assemble(
            E,
            R,
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Incomplete, None)),
            None,
        );
        assert_eq!(follow, Follow::Retry);
        assert!(!hop.is_resolved());
        // Stale: usable at once, and confirmed.
        let (hop, follow) = assemble(
            E,
            R,
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Stale, Some(MAC))),
            None,
        );
        assert_eq!(follow, Follow::Trigger);
        assert!(hop.is_resolved());
    }

    #[test]
    fn a_previous_mac_bridges_a_re_resolution_but_not_a_failure_or_a_new_path() {
        let (prev, _) = assemble(
            E,
            R,
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Reachable, Some(MAC))),
            None,
        );
        for n in [None, Some(neigh(NeighbourState::Incomplete, None))] {
            let (hop, _) = assemble(E, R, &route(None), &link(), None, n.as_ref(), Some(&prev));
            assert!(hop.is_resolved(), "{hop:?}");
            assert_eq!(hop.mac, Some(MAC));
        }
        let (hop, _) = assemble(
            E,
            R,
            &route(None),
            &link(),
            None,
            Some(&neigh(NeighbourState::Failed, None)),
            Some(&prev),
        );
        assert!(!hop.is_resolved());
        // Another gateway: the old MAC is not lent.
        let (hop, _) = assemble(E, R, &route(Some(GW)), &link(), None, None, Some(&prev));
        assert!(!hop.is_resolved());
    }

    #[test]
    fn notifications_affect_the_engines_they_concern() {
        let wanted: BTreeSet<Ipv4Addr> = [E, Ipv4Addr::new(10, 3, 0, 9), GW].into();
        let mut hops = BTreeMap::new();
        let (on_link, _) = assemble(E, R, &route(None), &link(), None, None, None);
        let (behind, _) = assemble(
            Ipv4Addr::new(10, 3, 0, 9),
            R,
            &route(Some(GW)),
            &link(),
            None,
            None,
            None,
        );
        hops.insert(E, on_link);
        hops.insert(Ipv4Addr::new(10, 3, 0, 9), behind);
        // GW is wanted (an engine too) but not looked up yet: its own address counts.
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(GW)));
        let what = affects(&RouteNetlinkMessage::NewNeighbour(n.clone()));
        assert_eq!(what, Affects::Neighbour(GW));
        assert_eq!(
            affected(&what, &wanted, &hops),
            [Ipv4Addr::new(10, 3, 0, 9), GW].into()
        );
        let what = affects(&RouteNetlinkMessage::DelNeighbour(n.clone()));
        assert_eq!(what, Affects::Neighbour(GW));
        n.header.family = AddressFamily::Inet6;
        assert_eq!(
            affects(&RouteNetlinkMessage::NewNeighbour(n)),
            Affects::Nothing
        );
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        let what = affects(&RouteNetlinkMessage::DelRoute(r.clone()));
        assert_eq!(affected(&what, &wanted, &hops), wanted);
        r.header.address_family = AddressFamily::Inet6;
        assert_eq!(affects(&RouteNetlinkMessage::NewRoute(r)), Affects::Nothing);
        assert_eq!(
            affects(&RouteNetlinkMessage::NewLink(LinkMessage::default())),
            Affects::All
        );
    }

    #[test]
    fn facts_are_read_from_netlink_messages() {
        let mut r = RouteMessage::default();
        r.header.kind = RouteType::Unicast;
        r.attributes = vec![
            RouteAttribute::Oif(7),
            RouteAttribute::Gateway(RouteAddress::Inet(GW)),
            RouteAttribute::PrefSource(RouteAddress::Inet(R)),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)]),
        ];
        assert_eq!(
            route_facts(&r),
            RouteFacts {
                kind: RouteType::Unicast,
                oif: Some(7),
                gateway: Some(GW),
                prefsrc: Some(R),
                mtu: Some(1400)
            }
        );
        let mut l = LinkMessage::default();
        l.header.index = 7;
        l.header.link_layer_type = LinkLayerType::Ether;
        l.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        l.attributes = vec![
            LinkAttribute::IfName("r1".into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::Address(SRC.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                rtnetlink::packet_route::link::InfoKind::Veth,
            )]),
        ];
        assert_eq!(link_facts(&l), link());
        l.header.link_layer_type = LinkLayerType::Loopback;
        assert_eq!(link_facts(&l).mac, None, "only Ethernet addresses are MACs");
        // A VLAN device: its parent and its id, 802.1Q or not.
        let vlan = |protocol| {
            let mut v = LinkMessage::default();
            v.header.index = 9;
            v.header.link_layer_type = LinkLayerType::Ether;
            v.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
            v.attributes = vec![
                LinkAttribute::IfName("r1.20".into()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::Address(SRC.to_vec()),
                LinkAttribute::Link(7),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(rtnetlink::packet_route::link::InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![
                        InfoVlan::Id(20),
                        InfoVlan::Protocol(protocol),
                    ])),
                ]),
            ];
            link_facts(&v)
        };
        assert_eq!(vlan(VlanProtocol::Ieee8021Q), vlan_link(20, true));
        assert_eq!(vlan(VlanProtocol::Ieee8021Ad), vlan_link(20, false));
        let mut n = NeighbourMessage::default();
        n.header.state = NeighbourState::Stale;
        n.attributes = vec![NeighbourAttribute::LinkLayerAddress(MAC.to_vec())];
        assert_eq!(neigh_facts(&n), neigh(NeighbourState::Stale, Some(MAC)));
        assert_eq!(mac_string(&MAC), "02:00:00:00:00:02");
    }
}
