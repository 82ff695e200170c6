//! The operator's view of a running controller: the stable JSON of `show --json`, and
//! the text `show` prints (laid out like `show ip wccp` and `show ip wccp N detail`, which
//! is what router operators read first).
//!
//! Field names here are a published interface (documented in the README's "Running the
//! router" section): add fields, never rename or remove them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use wccp::proto::{Assignment, Counters, ServiceId};
use wccp::router::{EngineStatus as WccpEngineStatus, ServiceState};
use wccp::wire::{AssignmentMethods, ForwardingMethods, ReturnMethods};

use crate::config::Service;
use crate::dataplane::{PlaneCounters, ServiceCounters};
use crate::nexthop::{mac_string, NextHop, ResolverCounters};

/// The whole controller.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Router ID (also the UDP source address).
    pub router_id: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Milliseconds since the controller started.
    pub uptime_ms: u64,
    /// The data plane.
    pub dataplane: DataplaneStatus,
    /// Service groups, in configuration order.
    pub services: Vec<ServiceStatus>,
    /// Counters of the whole controller.
    pub stats: Stats,
}

/// The data plane as the controller drives it.
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneStatus {
    /// `xdp` or `memory` (`--no-dataplane`: nothing is redirected).
    pub kind: String,
    /// Interfaces redirected on, and how (`native`, `generic`, `adopted`, `recorded`).
    pub interfaces: Vec<Interface>,
    /// Interfaces never redirected on.
    pub excluded: Vec<String>,
    /// Interfaces whose outbound traffic is redirected (tc egress).
    pub redirect_out: Vec<String>,
    /// The last data-plane error, if any.
    pub last_error: Option<String>,
}

/// One redirect-in interface.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// How it is attached.
    pub mode: String,
}

/// One service group.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// `standard/0` or `dynamic/N`: the selector `show` accepts.
    pub service: String,
    /// Service id.
    pub id: u8,
    /// Dynamic (type 1) or well-known (type 0).
    pub dynamic: bool,
    /// `idle` (no engine), `forming` (engines, nothing programmed) or `active`
    /// (a table is programmed).
    pub state: &'static str,
    /// The engine whose assignment is in force.
    pub designated: Option<Ipv4Addr>,
    /// Member change number.
    pub member_change: u32,
    /// Last Receive ID sent.
    pub receive_id: u32,
    /// `none` or `md5`.
    pub security: &'static str,
    /// The multicast group engines announce to, if any.
    pub multicast: Option<Ipv4Addr>,
    /// The traffic the service matches, once known.
    pub definition: Option<Definition>,
    /// Prefixes redirected (empty: all) and skipped.
    pub redirect: Vec<String>,
    /// Prefixes never redirected.
    pub skip: Vec<String>,
    /// Routers the engines report.
    pub routers: Vec<Ipv4Addr>,
    /// Engines, usable or not.
    pub engines: Vec<EngineStatus>,
    /// The programmed assignment.
    pub assignment: Option<AssignmentStatus>,
    /// Data-plane packet counters of the service.
    pub packets: ServiceCounters,
    /// Protocol counters of the service (`drop.<reason>`, `flush.<reason>`).
    pub counters: BTreeMap<String, u64>,
}

/// A service's traffic description.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    /// IP protocol number.
    pub protocol: u8,
    /// Priority.
    pub priority: u8,
    /// Flag names.
    pub flags: Vec<&'static str>,
    /// Ports (non-zero only).
    pub ports: Vec<u16>,
}

/// One engine in one service.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// Its address.
    pub address: Ipv4Addr,
    /// `usable`, `waiting` (has not reflected a Receive ID: not in its view yet) or
    /// `queried` (silent, Removal-Query sent).
    pub state: &'static str,
    /// Announced weight.
    pub weight: u16,
    /// Buckets or mask values it holds.
    pub slots: usize,
    /// Here-I-Am interval T in milliseconds.
    pub interval_ms: u64,
    /// Milliseconds since it was last heard.
    pub last_heard_ms_ago: u64,
    /// `gre` or `l2`.
    pub forwarding: &'static str,
    /// `hash` or `mask`.
    pub assignment: &'static str,
    /// `gre` or `l2`.
    pub returns: &'static str,
    /// Packets the data plane redirected to it.
    pub packets_redirected: u64,
    /// Packets it returned.
    pub packets_returned: u64,
    /// How the data plane reaches it.
    pub next_hop: NextHopStatus,
    /// The Receive ID its last Here-I-Am reported for this router; null when it does not
    /// list this router in its view.
    pub reflected_receive_id: Option<u32>,
    /// The Receive ID of the last I-See-You sent to it.
    pub sent_receive_id: u32,
    /// For a waiting engine, why it is not usable yet, in words; null otherwise.
    pub waiting_reason: Option<String>,
}

/// An engine's next hop, as resolved through netlink for its forwarding method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHopStatus {
    /// `resolved` (the data plane redirects to it) or `unresolved` (its buckets fail open).
    pub state: &'static str,
    /// Why it is unresolved.
    pub reason: Option<String>,
    /// Egress interface.
    pub interface: Option<String>,
    /// Egress interface index.
    pub ifindex: Option<u32>,
    /// The gateway (null: the engine is on-link).
    pub gateway: Option<Ipv4Addr>,
    /// The MAC frames go to: the engine's when on-link, else the gateway's.
    pub mac: Option<String>,
    /// The egress interface's MAC.
    pub src_mac: Option<String>,
    /// The router's address on that side (the GRE source).
    pub router_address: Option<Ipv4Addr>,
    /// Largest IP packet the path takes.
    pub mtu: Option<u32>,
    /// The kernel's neighbour state (`reachable`, `stale`, `failed`, ...).
    pub neighbour: Option<&'static str>,
    /// When `interface` is a VLAN device: its 802.1Q id, which the frames carry.
    pub vlan: Option<u16>,
    /// When `interface` is a VLAN device: its parent, which the frames leave by.
    pub vlan_parent: Option<String>,
}

impl NextHopStatus {
    /// The status of `hop` for an engine forwarding with L2 (`l2`) or GRE; `None` (not
    /// looked up yet) is unresolved.
    pub fn of(hop: Option<&NextHop>, l2: bool) -> Self {
        let Some(h) = hop else {
            return Self::of(Some(&NextHop::unresolved("not looked up yet")), l2);
        };
        let reason = h.path(l2).err();
        NextHopStatus {
            state: if reason.is_none() {
                "resolved"
            } else {
                "unresolved"
            },
            reason,
            interface: h.iface.clone(),
            ifindex: (h.ifindex != 0).then_some(h.ifindex),
            gateway: h.gateway,
            mac: h.mac.as_ref().map(mac_string),
            src_mac: h.src_mac.as_ref().map(mac_string),
            router_address: h.router_addr,
            mtu: (h.mtu != 0).then_some(h.mtu),
            neighbour: h.neighbour,
            vlan: h.vlan.as_ref().map(|v| v.id),
            vlan_parent: h.vlan.as_ref().map(|v| v.parent.clone()),
        }
    }
}

/// The assignment in force.
#[derive(Debug, Clone, Serialize)]
pub struct AssignmentStatus {
    /// `hash` or `mask`.
    pub method: &'static str,
    /// Slots per engine.
    pub slots: BTreeMap<Ipv4Addr, usize>,
    /// Hash: the owner of each of the 256 buckets (null: unassigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Option<Ipv4Addr>>>,
    /// Mask: each mask with its values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<Vec<MaskStatus>>,
}

/// One mask/value set.
#[derive(Debug, Clone, Serialize)]
pub struct MaskStatus {
    /// Masks as hex: source address, destination address, source port, destination port.
    pub mask: [String; 4],
    /// Values (same order, hex) and their engines.
    pub values: Vec<([String; 4], Ipv4Addr)>,
}

/// Controller-wide counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Messages received, by type (`here_i_am`, `redirect_assign`, ...).
    pub messages_in: BTreeMap<String, u64>,
    /// Messages sent, by type (`i_see_you`, `removal_query`).
    pub messages_out: BTreeMap<String, u64>,
    /// Errors by kind: dropped messages (`security`, `unknown_service`, wire errors...),
    /// socket errors (`socket_send`, `socket_recv`), data-plane errors (`dataplane`).
    pub errors: BTreeMap<String, u64>,
    /// Protocol events by kind (`engine_usable`, `engine_removed`, ...).
    pub events: BTreeMap<String, u64>,
    /// Data-plane packet counters.
    pub dataplane: PlaneCounters,
    /// Next-hop resolution: lookups `resolved` and `unresolved`, `changes` of an engine's
    /// path (MAC, interface, gateway, resolved or not), neighbour resolutions asked of the
    /// kernel (`triggers`), netlink `notifications` received.
    pub next_hops: ResolverCounters,
}

impl Stats {
    /// Adds a router's counters (`rx.`, `tx.`, `drop.` names) into this.
    pub fn add_router_counters(&mut self, c: &Counters) {
        for (name, v) in &c.0 {
            let (map, key) = if let Some(k) = name.strip_prefix("rx.") {
                (&mut self.messages_in, k)
            } else if let Some(k) = name.strip_prefix("tx.") {
                (&mut self.messages_out, k)
            } else if let Some(k) = name.strip_prefix("drop.") {
                (&mut self.errors, k)
            } else {
                (&mut self.events, name.as_str())
            };
            let e = map.entry(key.to_string()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }
}

fn forwarding(m: ForwardingMethods) -> &'static str {
    if m.contains(ForwardingMethods::L2) {
        "l2"
    } else {
        "gre"
    }
}

fn returns(m: ReturnMethods) -> &'static str {
    if m.contains(ReturnMethods::L2) {
        "l2"
    } else {
        "gre"
    }
}

fn assignment(m: AssignmentMethods) -> &'static str {
    if m.contains(AssignmentMethods::MASK) {
        "mask"
    } else {
        "hash"
    }
}

/// The `show` view of one service, from the state machine's view, the configuration and
/// the data-plane counters.
pub fn service_status(
    cfg: &Service,
    state: &ServiceState,
    now_ms: u64,
    plane: &PlaneCounters,
    hops: &BTreeMap<Ipv4Addr, NextHop>,
) -> ServiceStatus {
    let id: ServiceId = state.service;
    let engines = state
        .engines
        .iter()
        .map(|e| {
            let c = plane.engines.get(&e.address).copied().unwrap_or_default();
            EngineStatus {
                address: e.address,
                state: match e.status {
                    WccpEngineStatus::Waiting => "waiting",
                    WccpEngineStatus::Usable => "usable",
                    WccpEngineStatus::Queried => "queried",
                },
                weight: e.weight,
                slots: e.slots,
                interval_ms: e.interval_ms,
                last_heard_ms_ago: now_ms.saturating_sub(e.last_heard.as_millis()),
                forwarding: forwarding(e.forwarding),
                assignment: assignment(e.assignment),
                returns: returns(e.returns),
                packets_redirected: c.redirected,
                packets_returned: c.returned,
                next_hop: NextHopStatus::of(
                    hops.get(&e.address),
                    e.forwarding.contains(ForwardingMethods::L2),
                ),
                reflected_receive_id: e.reflected_receive_id,
                sent_receive_id: e.sent_receive_id,
                waiting_reason: (e.status == WccpEngineStatus::Waiting)
                    .then(|| waiting_reason(e.reflected_receive_id, e.sent_receive_id)),
            }
        })
        .collect::<Vec<_>>();
    let assignment = state.table.as_ref().map(|t| match &t.assignment {
        Assignment::Hash(b) => AssignmentStatus {
            method: "hash",
            slots: t.assignment.counts(),
            buckets: Some(b.buckets().iter().map(|b| b.owner).collect()),
            masks: None,
        },
        Assignment::Mask(rules) => AssignmentStatus {
            method: "mask",
            slots: t.assignment.counts(),
            buckets: None,
            masks: Some(
                rules
                    .iter()
                    .map(|r| MaskStatus {
                        mask: [
                            format!("{:#010x}", r.mask.src_addr),
                            format!("{:#010x}", r.mask.dst_addr),
                            format!("{:#06x}", r.mask.src_port),
                            format!("{:#06x}", r.mask.dst_port),
                        ],
                        values: r
                            .values
                            .iter()
                            .map(|v| {
                                (
                                    [
                                        format!("{:#010x}", v.src_addr),
                                        format!("{:#010x}", v.dst_addr),
                                        format!("{:#06x}", v.src_port),
                                        format!("{:#06x}", v.dst_port),
                                    ],
                                    v.engine,
                                )
                            })
                            .collect(),
                    })
                    .collect(),
            ),
        },
    });
    ServiceStatus {
        service: id.to_string(),
        id: id.id,
        dynamic: id.dynamic,
        state: if state.table.as_ref().is_some_and(|t| !t.is_empty()) {
            "active"
        } else if engines.is_empty() {
            "idle"
        } else {
            "forming"
        },
        designated: state.designated,
        member_change: state.member_change,
        receive_id: state.receive_id,
        security: if cfg.router.password.is_some() {
            "md5"
        } else {
            "none"
        },
        multicast: cfg.router.multicast,
        definition: state.definition.as_ref().map(|d| Definition {
            protocol: d.protocol,
            priority: d.priority,
            flags: d.flags.names(),
            ports: d.ports.iter().copied().filter(|p| *p != 0).collect(),
        }),
        redirect: cfg.redirect.iter().map(ToString::to_string).collect(),
        skip: cfg.skip.iter().map(ToString::to_string).collect(),
        routers: state.routers.clone(),
        engines,
        assignment,
        packets: plane
            .services
            .get(&id.to_string())
            .copied()
            .unwrap_or_default(),
        counters: state.counters.0.clone(),
    }
}

/// What `show` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Everything (`show ip wccp`).
    All,
    /// Service groups (`show ip wccp N detail`).
    Services,
    /// Engines of every (or one) service.
    Engines,
    /// Routers the engines report.
    Routers,
    /// The programmed assignment.
    Assignment,
    /// Counters.
    Stats,
}

/// Whether `selector` (`0`, `web-cache`, `90`, `dynamic/90`, `standard/0`) names `s`.
pub fn selects(selector: &str, s: &ServiceStatus) -> bool {
    let sel = selector.trim();
    sel == s.service
        || (sel == "web-cache" && !s.dynamic && s.id == 0)
        || sel
            .parse::<u8>()
            .is_ok_and(|n| n == s.id && (s.dynamic == (n != 0)))
}

impl Status {
    /// The JSON of one section, limited to one service when `service` is given.
    pub fn section_json(
        &self,
        section: Section,
        service: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let services: Vec<&ServiceStatus> = match service {
            None => self.services.iter().collect(),
            Some(sel) => {
                let v: Vec<_> = self.services.iter().filter(|s| selects(sel, s)).collect();
                if v.is_empty() {
                    return Err(format!("no service `{sel}` is configured"));
                }
                v
            }
        };
        let j = |v: &dyn erased::Ser| v.to_json();
        Ok(match section {
            Section::All if service.is_none() => j(self),
            Section::All | Section::Services => j(&services),
            Section::Engines => serde_json::Value::Array(
                services
                    .iter()
                    .flat_map(|s| {
                        s.engines.iter().map(|e| {
                            let mut v = j(e);
                            if let Some(o) = v.as_object_mut() {
                                o.insert("service".into(), s.service.clone().into());
                            }
                            v
                        })
                    })
                    .collect(),
            ),
            Section::Routers => serde_json::Value::Array(
                services
                    .iter()
                    .map(|s| serde_json::json!({"service": s.service, "routers": s.routers}))
                    .collect(),
            ),
            Section::Assignment => serde_json::Value::Array(
                services
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "service": s.service,
                            "designated": s.designated,
                            "assignment": j(&s.assignment),
                        })
                    })
                    .collect(),
            ),
            Section::Stats if service.is_some() => serde_json::Value::Array(
                services
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "service": s.service,
                            "counters": s.counters,
                            "packets": j(&s.packets),
                        })
                    })
                    .collect(),
            ),
            Section::Stats => j(&self.stats),
        })
    }

    /// The text `show` prints.
    pub fn section_text(&self, section: Section, service: Option<&str>) -> Result<String, String> {
        let services: Vec<&ServiceStatus> = match service {
            None => self.services.iter().collect(),
            Some(sel) => {
                let v: Vec<_> = self.services.iter().filter(|s| selects(sel, s)).collect();
                if v.is_empty() {
                    return Err(format!("no service `{sel}` is configured"));
                }
                v
            }
        };
        let mut o = String::new();
        let all = section == Section::All;
        if all {
            let _ = writeln!(o, "Router Identifier:       {}", self.router_id);
            let _ = writeln!(o, "Protocol Version:        2.0 (UDP {})", self.port);
            let ifaces: Vec<String> = self
                .dataplane
                .interfaces
                .iter()
                .map(|i| format!("{} ({})", i.name, i.mode))
                .collect();
            let _ = writeln!(
                o,
                "Data plane:              {}, redirect in: {}{}",
                self.dataplane.kind,
                if ifaces.is_empty() {
                    "none".into()
                } else {
                    ifaces.join(", ")
                },
                if self.dataplane.excluded.is_empty() {
                    String::new()
                } else {
                    format!(", excluded: {}", self.dataplane.excluded.join(", "))
                }
            );
            if !self.dataplane.redirect_out.is_empty() {
                let _ = writeln!(
                    o,
                    "Redirect out:            {}",
                    self.dataplane.redirect_out.join(", ")
                );
            }
            if let Some(e) = &self.dataplane.last_error {
                let _ = writeln!(o, "Data plane last error:   {e}");
            }
            o.push('\n');
        }
        for s in &services {
            if all || section == Section::Services {
                let name = if s.dynamic {
                    format!("Service Identifier: {} (dynamic)", s.id)
                } else {
                    format!("Service Identifier: web-cache ({})", s.id)
                };
                let usable = s.engines.iter().filter(|e| e.state == "usable").count();
                let _ = writeln!(o, "{name}");
                let _ = writeln!(o, "  State:                       {}", s.state);
                let _ = writeln!(o, "  Number of Service Group Clients: {}", s.engines.len());
                let _ = writeln!(o, "  Number of usable clients:    {usable}");
                let _ = writeln!(
                    o,
                    "  Designated engine:           {}",
                    s.designated.map_or("none".to_string(), |d| d.to_string())
                );
                let _ = writeln!(o, "  Member change number:        {}", s.member_change);
                let _ = writeln!(o, "  Security:                    {}", s.security);
                if let Some(d) = s.definition.as_ref().filter(|_| s.dynamic) {
                    let _ = writeln!(
                        o,
                        "  Definition:                  protocol {} priority {} ports {:?} flags {}",
                        d.protocol,
                        d.priority,
                        d.ports,
                        d.flags.join("|")
                    );
                }
                if !s.redirect.is_empty() || !s.skip.is_empty() {
                    let _ = writeln!(
                        o,
                        "  Redirect list:               redirect {:?} skip {:?}",
                        s.redirect, s.skip
                    );
                }
                let _ = writeln!(
                    o,
                    "  Total packets redirected:    {} (failed open {})",
                    s.packets.redirected, s.packets.failed_open
                );
                let errors: Vec<String> = s
                    .counters
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("drop.").map(|k| format!("{k}={v}")))
                    .collect();
                let _ = writeln!(
                    o,
                    "  Errors:                      {}",
                    if errors.is_empty() {
                        "none".into()
                    } else {
                        errors.join(" ")
                    }
                );
            }
            if all || section == Section::Services || section == Section::Engines {
                let _ = writeln!(o, "  Engines of {}:", s.service);
                let _ = writeln!(
                    o,
                    "    {:<15} {:<8} {:>6} {:>5} {:<4} {:<4} {:<4} {:>8} {:>12} {:>10}",
                    "Address",
                    "State",
                    "Weight",
                    "Slots",
                    "Fwd",
                    "Ret",
                    "Asg",
                    "Heard",
                    "Redirected",
                    "Returned"
                );
                for e in &s.engines {
                    let _ = writeln!(
                        o,
                        "    {:<15} {:<8} {:>6} {:>5} {:<4} {:<4} {:<4} {:>7}s {:>12} {:>10}",
                        e.address.to_string(),
                        e.state,
                        e.weight,
                        e.slots,
                        e.forwarding,
                        e.returns,
                        e.assignment,
                        e.last_heard_ms_ago / 1000,
                        e.packets_redirected,
                        e.packets_returned
                    );
                    if let Some(why) = &e.waiting_reason {
                        let _ = writeln!(o, "      waiting: {why}");
                    }
                    let n = &e.next_hop;
                    let via = match n.gateway {
                        Some(g) => format!("via {g}"),
                        None => "on-link".into(),
                    };
                    let _ = writeln!(
                        o,
                        "      next hop: {} {} {} mac {}{}",
                        n.state,
                        n.interface.as_deref().unwrap_or("-"),
                        via,
                        n.mac.as_deref().unwrap_or("-"),
                        n.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                }
            }
            if section == Section::Routers {
                let r: Vec<String> = s.routers.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    o,
                    "{}: routers {}",
                    s.service,
                    if r.is_empty() {
                        "none".into()
                    } else {
                        r.join(", ")
                    }
                );
            }
            if section == Section::Assignment {
                let _ = writeln!(
                    o,
                    "{}: designated {}",
                    s.service,
                    s.designated.map_or("none".to_string(), |d| d.to_string())
                );
                match &s.assignment {
                    None => {
                        let _ = writeln!(o, "  no assignment programmed");
                    }
                    Some(a) => {
                        let _ = writeln!(o, "  method {}", a.method);
                        for (e, n) in &a.slots {
                            let _ = writeln!(
                                o,
                                "  {e:<15} {n} {}",
                                if a.method == "hash" {
                                    "buckets"
                                } else {
                                    "values"
                                }
                            );
                        }
                    }
                }
            }
            if section == Section::Stats {
                let _ = writeln!(o, "{}:", s.service);
                for (k, v) in &s.counters {
                    let _ = writeln!(o, "  {k:<32} {v}");
                }
            }
            if all || section == Section::Services {
                o.push('\n');
            }
        }
        if all || (section == Section::Stats && service.is_none()) {
            let st = &self.stats;
            for (title, map) in [
                ("Messages received", &st.messages_in),
                ("Messages sent", &st.messages_out),
                ("Errors", &st.errors),
                ("Events", &st.events),
            ] {
                let _ = writeln!(o, "{title}:");
                if map.is_empty() {
                    let _ = writeln!(o, "  none");
                }
                for (k, v) in map {
                    let _ = writeln!(o, "  {k:<32} {v}");
                }
            }
        }
        Ok(o)
    }
}

/// `serde_json::to_value` behind a trait object, so one closure serves every type.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize + ?Sized> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Why an engine that has been answered is still not usable: the draft's rule is that it
/// must reflect this router's Receive ID in its view. An engine that never lists the
/// router usually cannot parse our I-See-You (as Debian's Squid 5.7 on 64-bit hosts).
fn waiting_reason(reflected: Option<u32>, sent: u32) -> String {
    match reflected {
        None => format!(
            "its Here-I-Am does not list this router in its view (I-See-You sent with Receive ID {sent}; the engine may be refusing it)"
        ),
        Some(0) => format!(
            "it lists this router with Receive ID 0: it has not accepted an I-See-You yet (sent: {sent})"
        ),
        Some(r) => format!("it reflects Receive ID {r}, not one this router sent (last: {sent})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(gateway: Option<Ipv4Addr>) -> NextHop {
        NextHop {
            iface: Some("r1".into()),
            ifindex: 3,
            gateway,
            router_addr: Some(Ipv4Addr::new(10, 2, 0, 1)),
            src_mac: Some([2, 0, 0, 0, 0, 1]),
            mac: Some([2, 0, 0, 0, 0, 0xaa]),
            mtu: 1500,
            neighbour: Some("reachable"),
            reason: None,
            vlan: None,
        }
    }

    #[test]
    fn next_hop_json_has_the_documented_fields() {
        let v = serde_json::to_value(NextHopStatus::of(Some(&hop(None)), false)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "state": "resolved",
                "reason": null,
                "interface": "r1",
                "ifindex": 3,
                "gateway": null,
                "mac": "02:00:00:00:00:aa",
                "src_mac": "02:00:00:00:00:01",
                "router_address": "10.2.0.1",
                "mtu": 1500,
                "neighbour": "reachable",
                "vlan": null,
                "vlan_parent": null,
            })
        );
    }

    #[test]
    fn unresolved_next_hops_say_why() {
        let v = NextHopStatus::of(None, false);
        assert_eq!(v.state, "unresolved");
        assert_eq!(v.reason.as_deref(), Some("not looked up yet"));
        let gw = Ipv4Addr::new(10, 2, 0, 254);
        let l2 = NextHopStatus::of(Some(&hop(Some(gw))), true);
        assert_eq!(l2.state, "unresolved");
        assert!(l2.reason.unwrap().contains("on-link"));
        assert_eq!(l2.gateway, Some(gw), "the path is still shown");
        let gre = NextHopStatus::of(Some(&hop(Some(gw))), false);
        assert_eq!(gre.state, "resolved");
    }
}
