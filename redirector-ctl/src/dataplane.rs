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
use wccp::wire::{ForwardingMethods, ServiceInfo};

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
    /// Marks `iface` as never redirected on (the engine-facing side, management), so that
    /// the program passes its traffic even when attached there.
    fn exclude(&mut self, iface: &str) -> Result<(), PlaneError>;
    /// Interfaces redirected on, with how (`native`, `generic`, `recorded`).
    fn interfaces(&self) -> Vec<(String, String)>;
    /// Removes redirection entirely and at once (`stop --clear`). Without this call the
    /// data plane stays as it is when the controller exits, under its dead-man grace.
    fn clear_all(&mut self) -> Result<(), PlaneError>;
}

/// A data plane that only records: what `--no-dataplane` runs and what the tests use.
/// Its counters stay at zero.
#[derive(Debug, Default)]
pub struct MemoryPlane {
    /// The programmed tables.
    pub tables: BTreeMap<ServiceId, Table>,
    /// Interfaces "attached".
    pub ifaces: Vec<String>,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Interfaces excluded.
    pub excluded: Vec<String>,
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
        Ok(XdpPlane {
            redirector: Some(redirector),
            services: BTreeMap::new(),
            engines: Vec::new(),
        })
    }

    fn redirector(&mut self) -> Result<&mut Redirector, PlaneError> {
        self.redirector
            .as_mut()
            .ok_or_else(|| "the data plane was cleared".to_string())
    }

    fn install(&mut self) -> Result<(), PlaneError> {
        let (config, engines) = compile(&self.services);
        let table = config.compile().map_err(|e| e.to_string())?;
        self.redirector()?
            .install(&table)
            .map_err(|e| e.to_string())?;
        self.engines = engines;
        Ok(())
    }
}

/// The data plane's view of every programmed service.
fn compile(
    services: &BTreeMap<ServiceId, (Option<ServiceInfo>, Table)>,
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
        let mut index = |addr: Ipv4Addr, fwd: ForwardingMethods| -> Option<u8> {
            if let Some(i) = engines.iter().position(|e| *e == addr) {
                return u8::try_from(i).ok();
            }
            let i = u8::try_from(engines.len()).ok()?;
            engines.push(addr);
            engine_cfgs.push(dp::EngineConfig {
                addr,
                router_addr: Ipv4Addr::UNSPECIFIED,
                dst_mac: [0; 6],
                src_mac: [0; 6],
                ifindex: 0,
                mtu: 0,
                method: if fwd.contains(ForwardingMethods::L2) {
                    dp::Method::L2
                } else {
                    dp::Method::Gre
                },
                // TODO(next hop): an engine becomes usable in the data plane once its
                // next hop (egress interface, MACs, router address on that side) is
                // resolved through netlink. Until then its buckets fail open.
                usable: false,
                ..dp::EngineConfig::default()
            });
            Some(i)
        };
        let fwd_of = |addr: Ipv4Addr| {
            table
                .engines
                .iter()
                .find(|e| e.address == addr)
                .map_or(ForwardingMethods::GRE, |e| e.forwarding)
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
        let mut out = PlaneCounters::default();
        for (i, addr) in engines.iter().enumerate() {
            let base = STATS_ENGINE_BASE + i * STATS_PER_ENGINE;
            out.engines.insert(
                *addr,
                EngineCounters {
                    redirected: get(base + STATS_ENGINE_REDIRECTED),
                    returned: get(base + STATS_ENGINE_RETURNED),
                },
            );
        }
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

    fn exclude(&mut self, iface: &str) -> Result<(), PlaneError> {
        // The kernel's index of the interface, without netlink: sysfs has it.
        let path = format!("/sys/class/net/{iface}/ifindex");
        let index: u32 = std::fs::read_to_string(&path)
            .map_err(|e| format!("{iface}: no such interface ({e})"))?
            .trim()
            .parse()
            .map_err(|e| format!("{path}: {e}"))?;
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
}
