//! The packet side of the agent: the engine data plane of `redirector-ebpf` (a tc ingress
//! program that decapsulates the routers' GRE without `ip_gre`, hands each flow to the local
//! proxy with its original addresses, and returns what the proxy must not take), set up
//! from `[dataplane]` and kept in step with the protocol's view of the routers.
//!
//! Everything it creates (the tc attachment, the policy rule and local route that deliver
//! marked packets to the proxy) is removed by [`Dataplane::stop`], by drop, and, for the
//! attachment, by the kernel when the process dies.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Context;
use redirector_ebpf::engine_plane::{
    EngineCounters, EnginePlane, EngineSettings, LocalDelivery, ReturnRule,
};
use serde::Serialize;
use tracing::{info, warn};
use wccp::engine::EngineConfig;
use wccp::wire::ServiceFlags;

use crate::config::{Config, DataplaneConfig, ReturnRuleConfig};

/// The web-cache service (standard id 0) is HTTP by definition.
const WEB_CACHE_PORT: u16 = 80;

/// `show`'s view of the data plane: what it accepts and what it has counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataplaneStatus {
    /// The interface redirected packets arrive on.
    pub interface: String,
    /// Router addresses GRE is taken from now.
    pub routers: Vec<Ipv4Addr>,
    /// Destination ports handed to the proxy.
    pub service_ports: Vec<u16>,
    /// The proxy's port.
    pub proxy_port: u16,
    /// Return rules in force, as written in the configuration.
    pub return_rules: Vec<String>,
    /// Non-zero packet counters by name (`proxied_syn`, `return_no_socket`, `stranger`, ...).
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The last failure to read or write the data plane, if any.
    pub last_error: Option<String>,
}

/// The running engine data plane.
pub struct Dataplane {
    plane: Option<EnginePlane>,
    routing: Option<LocalDelivery>,
    cfg: DataplaneConfig,
    proxy_port: u16,
    /// Routers from the configuration and `accept_from`: always accepted.
    fixed_routers: BTreeSet<Ipv4Addr>,
    accepted: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
    rules: Vec<ReturnRule>,
    last_error: Option<String>,
}

/// The destination ports whose redirected flows go to the proxy: what each service
/// matches on. A service matched by source port, or by every port, has no destination
/// port to listen on; its packets are returned to the router (said once, at start).
pub fn service_ports(services: &[EngineConfig]) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for s in services {
        let info = &s.service;
        let label = wccp::proto::ServiceId::of(info);
        if info.service_type == wccp::wire::ServiceType::Standard {
            if info.service_id == 0 {
                ports.insert(WEB_CACHE_PORT);
            } else {
                warn!(service = %label, "standard service other than web-cache: no ports known, its packets are returned");
            }
            continue;
        }
        if !info.flags.contains(ServiceFlags::PORTS_DEFINED) {
            warn!(service = %label, "service matches every port: the proxy cannot listen on all, its packets are returned");
            continue;
        }
        if info.flags.contains(ServiceFlags::PORTS_SOURCE) {
            warn!(service = %label, "service matches source ports: not proxied here, its packets are returned");
            continue;
        }
        ports.extend(info.ports.iter().copied().filter(|p| *p != 0));
    }
    ports
}

fn rule(r: &ReturnRuleConfig) -> ReturnRule {
    ReturnRule {
        prefix: r.prefix.0,
        prefix_len: r.prefix.1,
        port: r.port,
        return_to_router: r.returns,
        rewrite_dst: r.rewrite_to,
        copy: r.copy,
    }
}

fn describe(r: &ReturnRuleConfig) -> String {
    let mut s = format!("{}/{}", r.prefix.0, r.prefix.1);
    if let Some(p) = r.port {
        s.push_str(&format!(" port {p}"));
    }
    if r.returns {
        s.push_str(" return");
    }
    if let Some(to) = r.rewrite_to {
        s.push_str(&format!(" rewrite-to {to}"));
    }
    if r.copy {
        s.push_str(" copy");
    }
    s
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        anyhow::bail!("no interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(index)
}

impl Dataplane {
    /// Loads and attaches the program, installs local delivery and writes the routers,
    /// ports and rules of `cfg`. Nothing is left behind when this fails.
    pub fn start(cfg: &Config, dp: &DataplaneConfig) -> anyhow::Result<Dataplane> {
        let copy_ifindex = match &dp.copy_interface {
            Some(name) => Some(ifindex(name).context("dataplane.copy_interface")?),
            None => None,
        };
        ifindex(&dp.interface).context("dataplane.interface")?;
        let l2 = cfg
            .services
            .iter()
            .any(|s| s.forwarding.contains(wccp::wire::ForwardingMethods::L2));
        let routing =
            LocalDelivery::install(dp.mark, dp.table, dp.rule_priority).with_context(|| {
                format!(
                    "installing local delivery (ip rule fwmark {:#x} lookup {}, local route)",
                    dp.mark, dp.table
                )
            })?;
        let mut plane = EnginePlane::load().context("loading the engine data plane")?;
        plane
            .configure(&EngineSettings {
                addr: Some(cfg.address),
                mark: dp.mark,
                copy_ifindex,
                l2,
            })
            .context("configuring the engine data plane")?;
        let fixed_routers: BTreeSet<Ipv4Addr> = cfg
            .routers
            .iter()
            .chain(dp.accept_from.iter())
            .copied()
            .collect();
        let mut d = Dataplane {
            plane: Some(plane),
            routing: Some(routing),
            cfg: dp.clone(),
            proxy_port: cfg.proxy_port,
            fixed_routers: fixed_routers.clone(),
            accepted: BTreeSet::new(),
            ports: BTreeSet::new(),
            rules: Vec::new(),
            last_error: None,
        };
        d.apply(cfg)?;
        d.set_routers(&BTreeSet::new())?;
        d.plane_mut()?
            .attach(&dp.interface)
            .with_context(|| format!("attaching to {}", dp.interface))?;
        info!(
            interface = %dp.interface,
            proxy_port = cfg.proxy_port,
            ports = ?d.ports,
            routers = ?d.accepted,
            rules = d.rules.len(),
            l2,
            "engine data plane attached"
        );
        Ok(d)
    }

    fn plane_mut(&mut self) -> anyhow::Result<&mut EnginePlane> {
        self.plane
            .as_mut()
            .context("the engine data plane has been stopped")
    }

    /// Writes the service ports and return rules of `cfg` (at start and on reload): only
    /// what changed is touched, so flows in progress are not disturbed.
    pub fn apply(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let ports = service_ports(&cfg.services);
        let proxy_port = cfg.proxy_port;
        let old_ports = std::mem::take(&mut self.ports);
        let old_proxy = self.proxy_port;
        {
            let plane = self.plane_mut()?;
            for p in old_ports.difference(&ports) {
                plane.remove_service_port(*p)?;
            }
            for p in &ports {
                if !old_ports.contains(p) || old_proxy != proxy_port {
                    plane.set_service_port(*p, proxy_port)?;
                }
            }
        }
        self.ports = ports;
        self.proxy_port = proxy_port;
        let rules: Vec<ReturnRule> = cfg.return_rules.iter().map(rule).collect();
        let old_rules = std::mem::take(&mut self.rules);
        {
            let plane = self.plane_mut()?;
            for r in old_rules.iter().filter(|r| !rules.contains(r)) {
                plane.remove_rule(r)?;
            }
            for r in rules.iter().filter(|r| !old_rules.contains(r)) {
                plane.add_rule(r)?;
            }
        }
        self.rules = rules;
        Ok(())
    }

    /// Makes the accepted routers the configured ones plus `view`: the routers the
    /// protocol currently knows (their Router IDs and the addresses they send from).
    pub fn set_routers(&mut self, view: &BTreeSet<Ipv4Addr>) -> anyhow::Result<()> {
        let want: BTreeSet<Ipv4Addr> = self.fixed_routers.union(view).copied().collect();
        if want == self.accepted {
            return Ok(());
        }
        let old = std::mem::take(&mut self.accepted);
        let plane = self.plane_mut()?;
        for r in old.difference(&want) {
            plane.remove_router(*r)?;
        }
        for r in want.difference(&old) {
            plane.add_router(*r)?;
        }
        info!(routers = ?want, "GRE accepted from");
        self.accepted = want;
        Ok(())
    }

    /// Replaces the routers of the configuration (a reload).
    pub fn set_fixed_routers(&mut self, cfg: &Config) {
        self.fixed_routers = cfg
            .routers
            .iter()
            .chain(self.cfg.accept_from.iter())
            .copied()
            .collect();
    }

    /// The program's counters.
    pub fn counters(&mut self) -> anyhow::Result<EngineCounters> {
        Ok(self.plane_mut()?.counters()?)
    }

    /// The `show` document; a failure to read counters is reported in it, not raised.
    pub fn status(&mut self, cfg: &Config) -> DataplaneStatus {
        let counters = match self.counters() {
            Ok(c) => {
                self.last_error = None;
                c.nonzero()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            }
            Err(e) => {
                self.last_error = Some(format!("{e:#}"));
                Default::default()
            }
        };
        DataplaneStatus {
            interface: self.cfg.interface.clone(),
            routers: self.accepted.iter().copied().collect(),
            service_ports: self.ports.iter().copied().collect(),
            proxy_port: self.proxy_port,
            return_rules: cfg.return_rules.iter().map(describe).collect(),
            counters,
            last_error: self.last_error.clone(),
        }
    }

    /// Detaches the program and removes local delivery.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        if let Some(plane) = self.plane.take() {
            if let Err(e) = plane.teardown() {
                first_error.get_or_insert(anyhow::Error::new(e).context("detaching"));
            }
        }
        if let Some(routing) = self.routing.take() {
            if let Err(e) = routing.remove() {
                first_error.get_or_insert(anyhow::Error::new(e).context("removing local delivery"));
            }
        }
        match first_error {
            None => {
                info!(interface = %self.cfg.interface, "engine data plane removed");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if self.plane.is_some() || self.routing.is_some() {
            if let Err(e) = self.stop() {
                warn!(error = %format!("{e:#}"), "engine data plane teardown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wccp::wire::ServiceInfo;

    fn engine(info: ServiceInfo) -> EngineConfig {
        EngineConfig::new(Ipv4Addr::new(10, 0, 0, 2), info, vec![])
    }

    #[test]
    fn ports_come_from_what_each_service_matches() {
        let web = engine(ServiceInfo::web_cache());
        let https = engine(ServiceInfo::dynamic(
            90,
            0,
            6,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::PORTS_DEFINED,
            &[443, 8443],
        ));
        let reverse = engine(ServiceInfo::dynamic(
            91,
            0,
            6,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::PORTS_DEFINED | ServiceFlags::PORTS_SOURCE,
            &[8080],
        ));
        let any = engine(ServiceInfo::dynamic(
            92,
            0,
            6,
            ServiceFlags::DST_IP_HASH,
            &[],
        ));
        assert_eq!(
            service_ports(&[web, https, reverse, any]),
            BTreeSet::from([80, 443, 8443])
        );
    }

    #[test]
    fn rules_read_as_written() {
        let r = ReturnRuleConfig {
            prefix: (Ipv4Addr::new(192, 0, 2, 0), 24),
            port: Some(443),
            rewrite_to: Some(Ipv4Addr::new(198, 51, 100, 9)),
            copy: true,
            returns: true,
        };
        assert_eq!(
            describe(&r),
            "192.0.2.0/24 port 443 return rewrite-to 198.51.100.9 copy"
        );
        let k = rule(&r);
        assert_eq!((k.prefix_len, k.port, k.copy), (24, Some(443), true));
    }
}
