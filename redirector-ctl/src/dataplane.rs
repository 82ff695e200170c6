//! Where the controller's decisions go: a [`DataPlane`] takes complete per-service tables
//! and interface changes, keeps the dead-man heartbeat fresh, and reports per-engine
//! packet counters for `show` and metrics.
//!
//! Two implementations: [`XdpPlane`] wraps `redirector_ebpf::Redirector` (pinned maps and
//! links, so the data plane outlives the controller), and [`MemoryPlane`] records what it
//! is told, for tests and for hosts without XDP (`run --no-dataplane`). The controller
//! never knows which one it drives.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use redirector_ebpf::layout::{
    STATS_ENGINE_BASE, STATS_ENGINE_REDIRECTED, STATS_ENGINE_RETURNED, STATS_PER_ENGINE,
    STATS_PER_SERVICE, STATS_SERVICE_BASE, STATS_SERVICE_FAILED_OPEN, STATS_SERVICE_REDIRECTED,
};
use redirector_ebpf::table as dp;
use redirector_ebpf::{PinRoot, Redirector};
use serde::Serialize;
use wccp::assign::Mask;
use wccp::proto::{Assignment, ServiceId, Table};
use wccp::wire::{ForwardingMethods, ReturnMethods, ServiceInfo};

use crate::config::Prefix;
use crate::nexthop::NextHop;

/// Packet counters the data plane keeps, by engine and by service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlaneCounters {
    /// Per engine: packets redirected to it, and packets it returned.
    pub engines: BTreeMap<Ipv4Addr, EngineCounters>,
    /// Per service (`standard/0`, `dynamic/90`): packets redirected and failed open.
    pub services: BTreeMap<String, ServiceCounters>,
}

/// One engine's data-plane counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineCounters {
    /// Packets sent to the engine.
    pub redirected: u64,
    /// Packets the engine returned (packet return) and the router forwarded.
    pub returned: u64,
}

/// One service's data-plane counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCounters {
    /// Packets redirected.
    pub redirected: u64,
    /// Packets that matched but were forwarded normally (no usable engine for the bucket).
    pub failed_open: u64,
}

/// A data-plane failure, as text: the controller logs it and counts it, and keeps going.
pub type PlaneError = String;

/// What the controller needs from a data plane. Each call is complete in itself (a
/// program replaces the service's whole table), so a failed call can simply be retried
/// by the next one.
pub trait DataPlane {
    /// A short name for logs and `show`: `xdp` or `memory`.
    fn kind(&self) -> &'static str;
    /// Redirects `service`'s traffic as `table` says; `definition` is the traffic the
    /// service matches (protocol, ports, flags, priority), which the router learnt or was
    /// configured with.
    fn program(
        &mut self,
        service: ServiceId,
        definition: Option<&ServiceInfo>,
        table: &Table,
    ) -> Result<(), PlaneError>;
    /// Stops redirecting `service` (fail open).
    fn clear(&mut self, service: ServiceId) -> Result<(), PlaneError>;
    /// Refreshes the dead-man switch: the data plane stops redirecting `grace` after the
    /// last heartbeat.
    fn heartbeat(&mut self, grace: Duration) -> Result<(), PlaneError>;
    /// Current counters.
    fn counters(&mut self) -> Result<PlaneCounters, PlaneError>;
    /// Starts redirecting traffic that arrives on `iface`.
    fn attach(&mut self, iface: &str) -> Result<String, PlaneError>;
    /// Stops redirecting on `iface`.
    fn detach(&mut self, iface: &str) -> Result<(), PlaneError>;
    /// Starts redirecting traffic the router forwards out of `iface` (tc egress).
    fn attach_out(&mut self, iface: &str) -> Result<(), PlaneError>;
    /// Stops redirecting out of `iface`.
    fn detach_out(&mut self, iface: &str) -> Result<(), PlaneError>;
    /// Interfaces redirected out of.
    fn interfaces_out(&self) -> Vec<String>;
    /// Marks `iface` as never redirected on (the engine-facing side, management), so that
    /// the program passes its traffic even when attached there.
    fn exclude(&mut self, iface: &str) -> Result<(), PlaneError>;
    /// Interfaces redirected on, with how (`native`, `generic`, `recorded`).
    fn interfaces(&self) -> Vec<(String, String)>;
    /// Removes redirection entirely and at once (`stop --clear`). Without this call the
    /// data plane stays as it is when the controller exits, under its dead-man grace.
    fn clear_all(&mut self) -> Result<(), PlaneError>;
    /// The engines' next hops (see [`crate::nexthop`]), complete each time: an engine
    /// whose next hop is unresolved (or absent here) is installed not usable, so its
    /// buckets fail open. Reprograms at once when what the tables hold changes.
    fn set_next_hops(&mut self, hops: &BTreeMap<Ipv4Addr, NextHop>) -> Result<(), PlaneError>;
    /// The operator's redirect and skip lists of `service` (complete each time; both empty
    /// for none): a skip match on either address is never redirected, and a non-empty
    /// redirect list redirects only traffic whose source or destination it lists.
    /// Reprograms at once when a programmed service's lists change.
    fn set_lists(
        &mut self,
        service: ServiceId,
        redirect: &[Prefix],
        skip: &[Prefix],
    ) -> Result<(), PlaneError>;
}

/// A data plane that only records: what `--no-dataplane` runs and what the tests use.
/// Its counters stay at zero.
#[derive(Debug, Default)]
pub struct MemoryPlane {
    /// The programmed tables.
    pub tables: BTreeMap<ServiceId, Table>,
    /// Interfaces "attached".
    pub ifaces: Vec<String>,
    /// Interfaces "attached" at egress.
    pub ifaces_out: Vec<String>,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Interfaces excluded.
    pub excluded: Vec<String>,
    /// The last next hops received.
    pub next_hops: BTreeMap<Ipv4Addr, NextHop>,
    /// Redirect and skip lists by service.
    pub lists: BTreeMap<ServiceId, (Vec<Prefix>, Vec<Prefix>)>,
}

impl DataPlane for MemoryPlane {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn program(
        &mut self,
        service: ServiceId,
        _definition: Option<&ServiceInfo>,
        table: &Table,
    ) -> Result<(), PlaneError> {
        self.tables.insert(service, table.clone());
        Ok(())
    }

    fn clear(&mut self, service: ServiceId) -> Result<(), PlaneError> {
        self.tables.remove(&service);
        Ok(())
    }

    fn heartbeat(&mut self, _grace: Duration) -> Result<(), PlaneError> {
        self.heartbeats = self.heartbeats.saturating_add(1);
        Ok(())
    }

    fn counters(&mut self) -> Result<PlaneCounters, PlaneError> {
        Ok(PlaneCounters::default())
    }

    fn attach(&mut self, iface: &str) -> Result<String, PlaneError> {
        if self.ifaces.iter().any(|i| i == iface) {
            return Err(format!("{iface} is already attached"));
        }
        self.ifaces.push(iface.to_string());
        Ok("recorded".into())
    }

    fn detach(&mut self, iface: &str) -> Result<(), PlaneError> {
        let before = self.ifaces.len();
        self.ifaces.retain(|i| i != iface);
        if self.ifaces.len() == before {
            return Err(format!("{iface} is not attached"));
        }
        Ok(())
    }

    fn attach_out(&mut self, iface: &str) -> Result<(), PlaneError> {
        if self.ifaces_out.iter().any(|i| i == iface) {
            return Err(format!("{iface} is already attached (egress)"));
        }
        self.ifaces_out.push(iface.to_string());
        Ok(())
    }

    fn detach_out(&mut self, iface: &str) -> Result<(), PlaneError> {
        let before = self.ifaces_out.len();
        self.ifaces_out.retain(|i| i != iface);
        if self.ifaces_out.len() == before {
            return Err(format!("{iface} is not attached (egress)"));
        }
        Ok(())
    }

    fn interfaces_out(&self) -> Vec<String> {
        self.ifaces_out.clone()
    }

    fn exclude(&mut self, iface: &str) -> Result<(), PlaneError> {
        if !self.excluded.iter().any(|i| i == iface) {
            self.excluded.push(iface.to_string());
        }
        Ok(())
    }

    fn interfaces(&self) -> Vec<(String, String)> {
        self.ifaces
            .iter()
            .map(|i| (i.clone(), "recorded".to_string()))
            .collect()
    }

    fn clear_all(&mut self) -> Result<(), PlaneError> {
        self.tables.clear();
        self.ifaces.clear();
        Ok(())
    }

    fn set_next_hops(&mut self, hops: &BTreeMap<Ipv4Addr, NextHop>) -> Result<(), PlaneError> {
        self.next_hops = hops.clone();
        Ok(())
    }

    fn set_lists(
        &mut self,
        service: ServiceId,
        redirect: &[Prefix],
        skip: &[Prefix],
    ) -> Result<(), PlaneError> {
        self.lists
            .insert(service, (redirect.to_vec(), skip.to_vec()));
        Ok(())
    }
}

/// The XDP data plane, pinned under the configured pin root.
///
/// Every program or clear recompiles the tables of all services into one consistent
/// slot and installs it with one generation flip, because the maps hold one table for
/// all services.
pub struct XdpPlane {
    redirector: Option<Redirector>,
    services: BTreeMap<ServiceId, (Option<ServiceInfo>, Table)>,
    /// Engine order of the last install: the index of each engine in the counters map.
    engines: Vec<Ipv4Addr>,
    /// The engines' next hops, as last resolved.
    next_hops: BTreeMap<Ipv4Addr, NextHop>,
    /// What the last install held, so that an unchanged next hop costs nothing.
    installed: Option<dp::TableConfig>,
    /// Per service, the buckets (or mask values) whose owner has changed while this
    /// controller ran:
    /// installed sticky, so that TCP flows there follow the connection table (the engine
    /// that took their SYN, while it is usable) instead of breaking on the new owner.
    moved: BTreeMap<ServiceId, Vec<bool>>,
    /// The data plane was adopted from a previous run with a table in force: the first
    /// table of each service marks every bucket sticky, since that run's moves (and the
    /// flows its connection table keeps) are unknown here.
    adopted: bool,
    /// Per service, the operator's redirect and skip lists.
    lists: BTreeMap<ServiceId, (Vec<Prefix>, Vec<Prefix>)>,
    /// The data plane counts per engine index, and an install may give an engine another
    /// index: what each engine's index had counted when its layout ended...
    engine_totals: BTreeMap<Ipv4Addr, EngineCounters>,
    /// ...and what each index held when the current layout began, so that an engine's
    /// counters are its own across joins and leaves.
    engine_base: Vec<EngineCounters>,
}

impl std::fmt::Debug for XdpPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPlane")
            .field("services", &self.services.len())
            .field("engines", &self.engines)
            .finish()
    }
}

impl XdpPlane {
    /// Opens (or adopts) the data plane pinned under `pin_root`.
    pub fn open(pin_root: &std::path::Path) -> Result<XdpPlane, PlaneError> {
        let root = PinRoot::at(pin_root);
        let redirector = Redirector::open(&root).map_err(|e| e.to_string())?;
        let adopted = redirector.control().flags & redirector_ebpf::layout::CONTROL_ENABLED != 0;
        Ok(XdpPlane::with(Some(redirector), adopted))
    }

    /// A plane with nothing programmed yet; `adopted`: its program already carries tables
    /// from a previous process, whose flows the first install must keep.
    fn with(redirector: Option<Redirector>, adopted: bool) -> XdpPlane {
        XdpPlane {
            redirector,
            services: BTreeMap::new(),
            engines: Vec::new(),
            next_hops: BTreeMap::new(),
            installed: None,
            moved: BTreeMap::new(),
            adopted,
            lists: BTreeMap::new(),
            engine_totals: BTreeMap::new(),
            engine_base: Vec::new(),
        }
    }

    /// [`compile`], with the moved buckets of each hash service marked sticky.
    fn compiled(&self) -> (dp::TableConfig, Vec<Ipv4Addr>) {
        let (mut config, engines) = compile(&self.services, &self.next_hops);
        for svc in &mut config.services {
            let key = ServiceId {
                dynamic: svc.dynamic,
                id: svc.id,
            };
            if let Some((redirect, skip)) = self.lists.get(&key) {
                let conv = |p: &Prefix| dp::Prefix {
                    addr: p.addr,
                    len: p.len,
                };
                svc.redirect_list = redirect.iter().map(conv).collect();
                svc.skip_list = skip.iter().map(conv).collect();
            }
            let id = self
                .moved
                .iter()
                .find(|(k, _)| k.id == svc.id && k.dynamic == svc.dynamic)
                .map(|(_, m)| m);
            let slots = match &mut svc.assignment {
                dp::Assignment::Hash(slots) => slots,
                dp::Assignment::Mask { values, .. } => values,
            };
            if let Some(moved) = id {
                for (slot, m) in slots.iter_mut().zip(moved) {
                    slot.sticky = *m && slot.engine.is_some();
                }
            }
        }
        (config, engines)
    }

    /// Marks the buckets (or mask values) of `service` whose owner `table` changes.
    fn note_moves(&mut self, service: ServiceId, table: &Table) {
        let Some((mask, new)) = slot_owners(table) else {
            return;
        };
        let old = self
            .services
            .get(&service)
            .and_then(|(_, t)| slot_owners(t));
        let Some((old_mask, old)) = old else {
            if self.adopted && !self.moved.contains_key(&service) {
                self.moved.insert(service, vec![true; new.len()]);
            }
            return;
        };
        let moved = self
            .moved
            .entry(service)
            .or_insert_with(|| vec![false; new.len()]);
        if old_mask != mask || old.len() != new.len() || moved.len() != new.len() {
            // Another mask (or method): every flow may have moved.
            *moved = vec![true; new.len()];
            return;
        }
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if o.is_some() && o != n {
                moved[i] = true;
            }
        }
    }

    fn redirector(&mut self) -> Result<&mut Redirector, PlaneError> {
        self.redirector
            .as_mut()
            .ok_or_else(|| "the data plane was cleared".to_string())
    }

    fn install(&mut self) -> Result<(), PlaneError> {
        let (config, engines) = self.compiled();
        let table = config.compile().map_err(|e| e.to_string())?;
        // Forget what was installed until this one is: a failed install is retried whole.
        self.installed = None;
        // Counts up to now belong to the old layout's engines (a packet or two between
        // this read and the switch may be credited to the old owner of an index).
        let raw = if engines != self.engines {
            Some(self.raw_engine_counts()?)
        } else {
            None
        };
        self.redirector()?
            .install(&table)
            .map_err(|e| e.to_string())?;
        if let Some(raw) = raw {
            credit_layout(
                &mut self.engine_totals,
                &self.engines,
                &self.engine_base,
                &raw,
            );
            self.engine_base = raw;
        }
        self.engines = engines;
        self.installed = Some(config);
        Ok(())
    }

    /// The data plane's per-index engine counters, for every index.
    fn raw_engine_counts(&mut self) -> Result<Vec<EngineCounters>, PlaneError> {
        let stats = self.redirector()?.stats().map_err(|e| e.to_string())?;
        let get = |i: usize| stats.get(i).map_or(0, |c| c.packets);
        Ok((0..redirector_ebpf::layout::MAX_ENGINES)
            .map(|i| {
                let base = STATS_ENGINE_BASE + i * STATS_PER_ENGINE;
                EngineCounters {
                    redirected: get(base + STATS_ENGINE_REDIRECTED),
                    returned: get(base + STATS_ENGINE_RETURNED),
                }
            })
            .collect())
    }
}

/// Adds to each engine of `layout` (index = position) what its index counted since the
/// layout began: `raw` now, less `base` then.
fn credit_layout(
    totals: &mut BTreeMap<Ipv4Addr, EngineCounters>,
    layout: &[Ipv4Addr],
    base: &[EngineCounters],
    raw: &[EngineCounters],
) {
    for (i, addr) in layout.iter().enumerate() {
        let now = raw.get(i).copied().unwrap_or_default();
        let then = base.get(i).copied().unwrap_or_default();
        let t = totals.entry(*addr).or_default();
        t.redirected += now.redirected.saturating_sub(then.redirected);
        t.returned += now.returned.saturating_sub(then.returned);
    }
}

/// The owner (if any) of each data-plane slot.
type SlotOwners = Vec<Option<Ipv4Addr>>;

/// The owner of each data-plane slot of `table` (hash: 256 buckets; mask: the values in
/// the order of `Mask::values`, as [`compile`] lays them out) and, for a mask, its fields.
fn slot_owners(table: &Table) -> Option<(Option<[u32; 4]>, SlotOwners)> {
    match &table.assignment {
        Assignment::Hash(t) => Some((None, t.buckets().iter().map(|b| b.owner).collect())),
        Assignment::Mask(rules) => {
            let rule = rules.first()?;
            let m = &rule.mask;
            let mask = Mask::new(m.src_addr, m.dst_addr, m.src_port, m.dst_port).ok()?;
            let owners = mask
                .values()
                .map(|v| {
                    rule.values
                        .iter()
                        .find(|x| {
                            (x.src_addr, x.dst_addr, x.src_port, x.dst_port)
                                == (v.src_addr, v.dst_addr, v.src_port, v.dst_port)
                        })
                        .map(|x| x.engine)
                })
                .collect();
            let key = [
                m.src_addr,
                m.dst_addr,
                u32::from(m.src_port),
                u32::from(m.dst_port),
            ];
            Some((Some(key), owners))
        }
    }
}

/// The data plane's view of every programmed service, with each engine's next hop: an
/// engine is usable only when its next hop is resolved for its forwarding method.
fn compile(
    services: &BTreeMap<ServiceId, (Option<ServiceInfo>, Table)>,
    hops: &BTreeMap<Ipv4Addr, NextHop>,
) -> (dp::TableConfig, Vec<Ipv4Addr>) {
    let mut engines: Vec<Ipv4Addr> = Vec::new();
    let mut engine_cfgs = Vec::new();
    let mut out = Vec::new();
    for (id, (definition, table)) in services {
        // A service whose traffic is not known yet (a dynamic one no engine defined)
        // cannot be matched: it is left out, which forwards its traffic normally.
        let Some(def) = definition else { continue };
        let protocol = match def.protocol {
            17 => dp::Protocol::Udp,
            6 | 0 => dp::Protocol::Tcp,
            _ => continue,
        };
        let mut index =
            |addr: Ipv4Addr, (fwd, ret): (ForwardingMethods, ReturnMethods)| -> Option<u8> {
                if let Some(i) = engines.iter().position(|e| *e == addr) {
                    return u8::try_from(i).ok();
                }
                let i = u8::try_from(engines.len()).ok()?;
                engines.push(addr);
                let l2 = fwd.contains(ForwardingMethods::L2);
                let path = hops.get(&addr).and_then(|h| h.path(l2).ok());
                engine_cfgs.push(dp::EngineConfig {
                    addr,
                    router_addr: path.map_or(Ipv4Addr::UNSPECIFIED, |p| p.router_addr),
                    dst_mac: path.map_or([0; 6], |p| p.dst_mac),
                    src_mac: path.map_or([0; 6], |p| p.src_mac),
                    ifindex: path.map_or(0, |p| p.ifindex),
                    mtu: path.map_or(0, |p| p.mtu),
                    vlan: path.and_then(|p| p.vlan),
                    method: if l2 { dp::Method::L2 } else { dp::Method::Gre },
                    // Unresolved: listed (its returns are still recognised) but not usable,
                    // so its buckets fail open.
                    usable: path.is_some(),
                    // Packets it returns by L2 (its MAC as the source) pass as returned.
                    return_method: if ret.contains(ReturnMethods::L2) {
                        dp::Method::L2
                    } else {
                        dp::Method::Gre
                    },
                });
                Some(i)
            };
        let fwd_of = |addr: Ipv4Addr| {
            table
                .engines
                .iter()
                .find(|e| e.address == addr)
                .map_or((ForwardingMethods::GRE, ReturnMethods::GRE), |e| {
                    (e.forwarding, e.returns)
                })
        };
        let assignment = match &table.assignment {
            Assignment::Hash(t) => dp::Assignment::Hash(
                t.buckets()
                    .iter()
                    .map(|b| dp::Slot {
                        engine: b.owner.and_then(|a| index(a, fwd_of(a))),
                        alternate: b.alternate,
                        sticky: false,
                    })
                    .collect(),
            ),
            Assignment::Mask(rules) => {
                // The data plane takes one mask; the first rule is the one the designated
                // engine sent (Squid and engine-agent send one).
                let Some(rule) = rules.first() else { continue };
                let Ok(mask) = Mask::new(
                    rule.mask.src_addr,
                    rule.mask.dst_addr,
                    rule.mask.src_port,
                    rule.mask.dst_port,
                ) else {
                    continue;
                };
                let all: Vec<_> = mask.values().collect();
                let mut values = vec![dp::Slot::default(); all.len()];
                for v in &rule.values {
                    let found = all.iter().position(|m| {
                        (m.src_addr, m.dst_addr, m.src_port, m.dst_port)
                            == (v.src_addr, v.dst_addr, v.src_port, v.dst_port)
                    });
                    if let Some(slot) = found.and_then(|i| values.get_mut(i)) {
                        slot.engine = index(v.engine, fwd_of(v.engine));
                    }
                }
                dp::Assignment::Mask { mask, values }
            }
        };
        out.push(dp::ServiceConfig {
            id: id.id,
            dynamic: id.dynamic,
            protocol,
            priority: def.priority,
            flags: if id.dynamic {
                def.flags.bits()
            } else {
                // The web-cache service: TCP port 80, destination hash.
                wccp::assign::flags::DST_IP_HASH | wccp::assign::flags::PORTS_DEFINED
            },
            ports: if id.dynamic {
                def.ports.iter().copied().filter(|p| *p != 0).collect()
            } else {
                vec![80]
            },
            assignment,
            ..dp::ServiceConfig::default()
        });
    }
    (
        dp::TableConfig {
            services: out,
            engines: engine_cfgs,
            ..dp::TableConfig::default()
        },
        engines,
    )
}

impl DataPlane for XdpPlane {
    fn kind(&self) -> &'static str {
        "xdp"
    }

    fn program(
        &mut self,
        service: ServiceId,
        definition: Option<&ServiceInfo>,
        table: &Table,
    ) -> Result<(), PlaneError> {
        self.note_moves(service, table);
        self.services
            .insert(service, (definition.cloned(), table.clone()));
        self.install()
    }

    fn clear(&mut self, service: ServiceId) -> Result<(), PlaneError> {
        self.services.remove(&service);
        self.install()
    }

    fn heartbeat(&mut self, grace: Duration) -> Result<(), PlaneError> {
        self.redirector()?
            .heartbeat(grace)
            .map_err(|e| e.to_string())
    }

    fn counters(&mut self) -> Result<PlaneCounters, PlaneError> {
        let engines = self.engines.clone();
        let ids: Vec<ServiceId> = self.services.keys().copied().collect();
        let stats = self.redirector()?.stats().map_err(|e| e.to_string())?;
        let get = |i: usize| stats.get(i).map_or(0, |c| c.packets);
        let mut out = PlaneCounters {
            engines: self.engine_totals.clone(),
            ..PlaneCounters::default()
        };
        let raw: Vec<EngineCounters> = (0..engines.len())
            .map(|i| {
                let base = STATS_ENGINE_BASE + i * STATS_PER_ENGINE;
                EngineCounters {
                    redirected: get(base + STATS_ENGINE_REDIRECTED),
                    returned: get(base + STATS_ENGINE_RETURNED),
                }
            })
            .collect();
        credit_layout(&mut out.engines, &engines, &self.engine_base, &raw);
        for id in ids {
            let base = STATS_SERVICE_BASE + usize::from(id.id) * STATS_PER_SERVICE;
            out.services.insert(
                id.to_string(),
                ServiceCounters {
                    redirected: get(base + STATS_SERVICE_REDIRECTED),
                    failed_open: get(base + STATS_SERVICE_FAILED_OPEN),
                },
            );
        }
        Ok(out)
    }

    fn attach(&mut self, iface: &str) -> Result<String, PlaneError> {
        let mode = self
            .redirector()?
            .attach(iface)
            .map_err(|e| e.to_string())?;
        Ok(format!("{mode:?}").to_lowercase())
    }

    fn detach(&mut self, iface: &str) -> Result<(), PlaneError> {
        self.redirector()?.detach(iface).map_err(|e| e.to_string())
    }

    fn attach_out(&mut self, iface: &str) -> Result<(), PlaneError> {
        self.redirector()?
            .attach_out(iface)
            .map_err(|e| e.to_string())
    }

    fn detach_out(&mut self, iface: &str) -> Result<(), PlaneError> {
        self.redirector()?
            .detach_out(iface)
            .map_err(|e| e.to_string())
    }

    fn interfaces_out(&self) -> Vec<String> {
        self.redirector
            .as_ref()
            .map_or_else(Vec::new, |r| r.attached_out())
    }

    fn exclude(&mut self, iface: &str) -> Result<(), PlaneError> {
        // The index in the controller's own network namespace (sysfs would show the one
        // /sys was mounted in, which differs under `setns`).
        let name = std::ffi::CString::new(iface).map_err(|_| format!("{iface}: bad name"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(format!(
                "{iface}: no such interface ({})",
                std::io::Error::last_os_error()
            ));
        }
        self.redirector()?
            .set_iface_flags(index, redirector_ebpf::layout::IFACE_EXCLUDED)
            .map_err(|e| e.to_string())
    }

    fn interfaces(&self) -> Vec<(String, String)> {
        self.redirector.as_ref().map_or_else(Vec::new, |r| {
            r.attached()
                .into_iter()
                .map(|(i, m)| (i, format!("{m:?}").to_lowercase()))
                .collect()
        })
    }

    fn clear_all(&mut self) -> Result<(), PlaneError> {
        match self.redirector.take() {
            Some(r) => r.clear().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn set_next_hops(&mut self, hops: &BTreeMap<Ipv4Addr, NextHop>) -> Result<(), PlaneError> {
        self.next_hops = hops.clone();
        if self.services.is_empty() || self.redirector.is_none() {
            return Ok(());
        }
        let (config, _) = self.compiled();
        if self.installed.as_ref() == Some(&config) {
            return Ok(());
        }
        self.install()
    }

    fn set_lists(
        &mut self,
        service: ServiceId,
        redirect: &[Prefix],
        skip: &[Prefix],
    ) -> Result<(), PlaneError> {
        let lists = (redirect.to_vec(), skip.to_vec());
        if self.lists.get(&service) == Some(&lists) {
            return Ok(());
        }
        self.lists.insert(service, lists);
        if !self.services.contains_key(&service) || self.redirector.is_none() {
            return Ok(());
        }
        self.install()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wccp::assign::BucketTable;
    use wccp::proto::EngineRoute;

    const E: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

    fn services(
        forwarding: ForwardingMethods,
    ) -> BTreeMap<ServiceId, (Option<ServiceInfo>, Table)> {
        let mut buckets = BucketTable::unassigned();
        for b in 0..=255u8 {
            buckets.set_owner(b, Some(E));
        }
        let table = Table {
            assignment: Assignment::Hash(Box::new(buckets)),
            engines: vec![EngineRoute {
                address: E,
                forwarding,
                returns: ReturnMethods::GRE,
            }],
        };
        let id = ServiceId {
            dynamic: false,
            id: 0,
        };
        [(id, (Some(ServiceInfo::web_cache()), table))].into()
    }

    /// A plane without a loaded program (so nothing is installed), with these next hops.
    fn unloaded_plane(next_hops: &[(Ipv4Addr, NextHop)], adopted: bool) -> XdpPlane {
        XdpPlane {
            next_hops: next_hops.iter().cloned().collect(),
            ..XdpPlane::with(None, adopted)
        }
    }

    fn hop(gateway: Option<Ipv4Addr>) -> NextHop {
        NextHop {
            iface: Some("r1".into()),
            ifindex: 7,
            gateway,
            router_addr: Some(Ipv4Addr::new(10, 2, 0, 1)),
            src_mac: Some([2, 0, 0, 0, 0, 1]),
            mac: Some([2, 0, 0, 0, 0, 2]),
            mtu: 1500,
            neighbour: Some("reachable"),
            reason: None,
            vlan: None,
        }
    }

    #[test]
    fn engine_counters_follow_the_engine_not_its_index() {
        let (a, b, c) = (
            Ipv4Addr::new(10, 2, 0, 2),
            Ipv4Addr::new(10, 2, 0, 3),
            Ipv4Addr::new(10, 2, 0, 4),
        );
        let n = |redirected, returned| EngineCounters {
            redirected,
            returned,
        };
        let mut totals = BTreeMap::new();
        // Layout 1: [a, b], from zero; at the switch a's index counted 10, b's 20.
        credit_layout(&mut totals, &[a, b], &[], &[n(10, 1), n(20, 2)]);
        // Layout 2: b left, c joined and took index 1: [a, c]. Since then index 0 counted
        // 5 more, index 1 (now c's) 7.
        let base = [n(10, 1), n(20, 2)];
        let mut shown = totals.clone();
        credit_layout(&mut shown, &[a, c], &base, &[n(15, 1), n(27, 3)]);
        assert_eq!(shown[&a], n(15, 1));
        assert_eq!(shown[&b], n(20, 2), "b keeps its own counts");
        assert_eq!(shown[&c], n(7, 1), "c has only what index 1 counted for it");
    }

    #[test]
    fn buckets_that_change_owner_are_installed_sticky() {
        let other = Ipv4Addr::new(10, 2, 0, 3);
        let mut plane = unloaded_plane(&[(E, hop(None)), (other, hop(None))], false);
        let (id, (def, table)) = services(ForwardingMethods::GRE).into_iter().next().unwrap();
        // First program: nothing moved.
        plane.note_moves(id, &table);
        plane.services.insert(id, (def.clone(), table.clone()));
        let sticky = |p: &XdpPlane| -> Vec<usize> {
            let (cfg, _) = p.compiled();
            match &cfg.services[0].assignment {
                dp::Assignment::Hash(slots) => {
                    (0..slots.len()).filter(|&i| slots[i].sticky).collect()
                }
                _ => panic!("hash"),
            }
        };
        assert!(sticky(&plane).is_empty());
        // Buckets 0..128 move to the other engine: those become sticky, and stay so.
        let mut split = table.clone();
        let Assignment::Hash(b) = &mut split.assignment else {
            unreachable!()
        };
        for i in 0..128u8 {
            b.set_owner(i, Some(other));
        }
        split.engines.push(EngineRoute {
            address: other,
            forwarding: ForwardingMethods::GRE,
            returns: ReturnMethods::GRE,
        });
        plane.note_moves(id, &split);
        plane.services.insert(id, (def.clone(), split.clone()));
        assert_eq!(sticky(&plane), (0..128).collect::<Vec<_>>());
        plane.note_moves(id, &split);
        plane.services.insert(id, (def, split));
        assert_eq!(sticky(&plane), (0..128).collect::<Vec<_>>());
    }

    #[test]
    fn an_adopted_plane_installs_its_first_tables_all_sticky() {
        let mut plane = unloaded_plane(&[(E, hop(None))], true);
        let (id, (def, table)) = services(ForwardingMethods::GRE).into_iter().next().unwrap();
        plane.note_moves(id, &table);
        plane.services.insert(id, (def, table));
        let (cfg, _) = plane.compiled();
        let dp::Assignment::Hash(slots) = &cfg.services[0].assignment else {
            panic!("hash")
        };
        assert!(slots.iter().all(|s| s.sticky));
    }

    #[test]
    fn mask_values_that_change_owner_are_installed_sticky() {
        use wccp::proto::{MaskEntry, MaskRule};
        use wccp::wire::MaskElement;
        let other = Ipv4Addr::new(10, 2, 0, 3);
        let rule = |owner: &dyn Fn(u16) -> Ipv4Addr| MaskRule {
            mask: MaskElement {
                src_port: 0x3,
                ..MaskElement::default()
            },
            values: (0..4u16)
                .map(|v| MaskEntry {
                    src_addr: 0,
                    dst_addr: 0,
                    src_port: v,
                    dst_port: 0,
                    engine: owner(v),
                })
                .collect(),
        };
        let table = |owner: &dyn Fn(u16) -> Ipv4Addr| Table {
            assignment: Assignment::Mask(vec![rule(owner)]),
            engines: [E, other]
                .iter()
                .map(|a| EngineRoute {
                    address: *a,
                    forwarding: ForwardingMethods::GRE,
                    returns: ReturnMethods::GRE,
                })
                .collect(),
        };
        let mut plane = unloaded_plane(&[(E, hop(None)), (other, hop(None))], false);
        let id = ServiceId {
            dynamic: true,
            id: 90,
        };
        let def = ServiceInfo::dynamic(90, 0, 6, wccp::wire::ServiceFlags::PORTS_DEFINED, &[80]);
        for t in [table(&|_| E), table(&|v| if v >= 2 { other } else { E })] {
            plane.note_moves(id, &t);
            plane.services.insert(id, (Some(def.clone()), t));
        }
        let (cfg, _) = plane.compiled();
        let dp::Assignment::Mask { mask, values } = &cfg.services[0].assignment else {
            panic!("mask")
        };
        let sticky: Vec<u16> = mask
            .values()
            .zip(values)
            .filter(|(_, s)| s.sticky)
            .map(|(v, _)| v.src_port)
            .collect();
        assert_eq!(sticky, vec![2, 3]);
    }

    #[test]
    fn an_engine_behind_a_vlan_device_is_installed_tagged_on_the_parent() {
        let tagged = NextHop {
            iface: Some("r1.20".into()),
            ifindex: 9,
            vlan: Some(crate::nexthop::VlanPath {
                id: 20,
                parent: "r1".into(),
                parent_index: 7,
            }),
            ..hop(None)
        };
        let (cfg, _) = compile(&services(ForwardingMethods::GRE), &[(E, tagged)].into());
        assert_eq!(
            (
                cfg.engines[0].usable,
                cfg.engines[0].ifindex,
                cfg.engines[0].vlan
            ),
            (true, 7, Some(20))
        );
        assert!(cfg.compile().is_ok());
    }

    #[test]
    fn engines_without_a_next_hop_are_listed_but_not_usable() {
        let (cfg, order) = compile(&services(ForwardingMethods::GRE), &BTreeMap::new());
        assert_eq!(order, vec![E]);
        assert_eq!(cfg.engines.len(), 1);
        assert!(!cfg.engines[0].usable);
        assert!(cfg.compile().is_ok());
        let unresolved = [(E, NextHop::unresolved("resolving"))].into();
        let (cfg, _) = compile(&services(ForwardingMethods::GRE), &unresolved);
        assert!(!cfg.engines[0].usable);
    }

    #[test]
    fn a_resolved_next_hop_makes_the_engine_usable_with_its_path() {
        let hops = [(E, hop(None))].into();
        let (cfg, _) = compile(&services(ForwardingMethods::GRE), &hops);
        let e = cfg.engines[0];
        assert!(e.usable);
        assert_eq!(e.method, dp::Method::Gre);
        assert_eq!(e.ifindex, 7);
        assert_eq!(e.router_addr, Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(e.src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(e.dst_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(e.mtu, 1500);
        let (cfg, _) = compile(&services(ForwardingMethods::L2), &hops);
        assert!(cfg.engines[0].usable);
        assert_eq!(cfg.engines[0].method, dp::Method::L2);
    }

    #[test]
    fn an_l2_engine_behind_a_gateway_is_not_usable_but_a_gre_one_is() {
        let hops = [(E, hop(Some(Ipv4Addr::new(10, 2, 0, 254))))].into();
        let (cfg, _) = compile(&services(ForwardingMethods::L2), &hops);
        assert!(!cfg.engines[0].usable);
        let (cfg, _) = compile(&services(ForwardingMethods::GRE), &hops);
        assert!(cfg.engines[0].usable);
    }

    #[test]
    fn the_memory_plane_records_next_hops() {
        let mut p = MemoryPlane::default();
        let hops: BTreeMap<_, _> = [(E, hop(None))].into();
        p.set_next_hops(&hops).unwrap();
        assert_eq!(p.next_hops, hops);
    }
}
