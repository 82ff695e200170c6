//! The agent's TOML configuration: parsed strictly (`deny_unknown_fields`), checked whole
//! before anything starts, and turned into one [`wccp::engine::EngineConfig`] per service.
//!
//! An operator's typo must never start a half-configured engine that joins a group with the
//! wrong weight or no password, so every error names the key and the line it is on, and
//! the caller exits with code 2 before binding any socket.
//!
//! ```toml
//! address = "192.0.2.10"          # this engine's address (Web-Cache Identity)
//! routers = ["192.0.2.1"]         # unicast routers, or: multicast = "224.0.1.50"
//! # port = 2048                   # UDP port (tests use another)
//! # proxy_port = 3129             # local proxy for intercepted traffic (data plane)
//! # control_socket = "/run/wccp-redirector/engine-agent.sock"
//! # metrics = "127.0.0.1:9478"
//!
//! [timers]
//! here_i_am_ms = 10000            # T
//! # fast_transmit_ms = 500        # revision 1 fast timers: T offered as Transmit_T
//! # timeout_scale = 2             # and removal after scale × T
//!
//! [[service]]
//! id = 0
//! type = "standard"               # the well-known web-cache service
//! password = "secret"             # MD5, at most 8 bytes
//! weight = 100
//!
//! [dataplane]                     # optional: take redirected packets without ip_gre
//! interface = "eth0"              # where the routers' GRE (or L2) traffic arrives
//! # proxy_check_ms = 1000         # TCP connect to the proxy; 0: never withdraw
//! # proxy_check_address = "127.0.0.1"
//! # accept_from = ["192.0.2.254"] # more router addresses GRE is taken from
//! # copy_interface = "dummy0"     # where copies asked for by return rules go
//! # mark = 0x0cc2, table = 2048, rule_priority = 2048  # local delivery by policy routing
//!
//! [[return_rule]]                 # flows the proxy must not take (packet return)
//! prefix = "192.0.2.0/24"         # destination prefix
//! # port = 443                    # destination port; every port when absent
//! # rewrite_to = "198.51.100.9"   # new destination of the returned packets
//! # copy = true                   # and send a copy out of copy_interface
//! # return = false                # with copy: copy only, the proxy still takes it
//! ```

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use redirector_ebpf::engine_plane::{DEFAULT_MARK, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE};
use serde::Deserialize;
use wccp::assign::Mask;
use wccp::engine::{EngineConfig, FastTimers};
use wccp::wire::{
    AssignmentMethods, ForwardingMethods, ReturnMethods, ServiceFlags, ServiceInfo, Version,
};

/// Where `engine-agent show` and `stop` find the daemon when nothing else is said.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/wccp-redirector/engine-agent.sock";

/// The WCCP control port.
pub const WCCP_PORT: u16 = 2048;

/// A configuration error with where it is, so the operator can go straight to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: PathBuf,
    /// Dotted key path (`service[1].weight`), when known.
    pub key: Option<String>,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The file as written. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    address: toml::Spanned<Ipv4Addr>,
    #[serde(default)]
    routers: Option<toml::Spanned<Vec<Ipv4Addr>>>,
    #[serde(default)]
    multicast: Option<toml::Spanned<Ipv4Addr>>,
    #[serde(default)]
    multicast_ttl: Option<u8>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    proxy_port: Option<u16>,
    #[serde(default)]
    control_socket: Option<PathBuf>,
    #[serde(default)]
    metrics: Option<SocketAddr>,
    #[serde(default)]
    timers: Option<toml::Spanned<RawTimers>>,
    #[serde(default)]
    service: Vec<toml::Spanned<RawService>>,
    #[serde(default)]
    dataplane: Option<toml::Spanned<RawDataplane>>,
    #[serde(default)]
    return_rule: Vec<toml::Spanned<RawReturnRule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    interface: toml::Spanned<String>,
    #[serde(default)]
    proxy_check_ms: Option<toml::Spanned<u64>>,
    #[serde(default)]
    proxy_check_address: Option<Ipv4Addr>,
    #[serde(default)]
    accept_from: Vec<Ipv4Addr>,
    #[serde(default)]
    copy_interface: Option<String>,
    #[serde(default)]
    mark: Option<toml::Spanned<u32>>,
    #[serde(default)]
    table: Option<toml::Spanned<u32>>,
    #[serde(default)]
    rule_priority: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReturnRule {
    prefix: toml::Spanned<String>,
    #[serde(default)]
    port: Option<toml::Spanned<u16>>,
    #[serde(default)]
    rewrite_to: Option<Ipv4Addr>,
    #[serde(default)]
    copy: bool,
    #[serde(default, rename = "return")]
    returns: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    #[serde(default)]
    here_i_am_ms: Option<toml::Spanned<u64>>,
    #[serde(default)]
    fast_transmit_ms: Option<toml::Spanned<u64>>,
    #[serde(default)]
    timeout_scale: Option<toml::Spanned<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawServiceType {
    Standard,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawFlag {
    SrcIpHash,
    DstIpHash,
    SrcPortHash,
    DstPortHash,
    PortsSource,
    SrcIpAltHash,
    DstIpAltHash,
    SrcPortAltHash,
    DstPortAltHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawMethod {
    Gre,
    L2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAssignment {
    Hash,
    Mask,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMask {
    #[serde(default)]
    src_addr: u32,
    #[serde(default)]
    dst_addr: u32,
    #[serde(default)]
    src_port: u16,
    #[serde(default)]
    dst_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: u8,
    #[serde(rename = "type", default)]
    service_type: Option<RawServiceType>,
    #[serde(default)]
    protocol: Option<RawProtocol>,
    #[serde(default)]
    ports: Option<toml::Spanned<Vec<u16>>>,
    #[serde(default)]
    flags: Vec<RawFlag>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    password: Option<toml::Spanned<String>>,
    #[serde(default)]
    weight: Option<u16>,
    #[serde(default)]
    forwarding: Option<RawMethod>,
    #[serde(default, rename = "return")]
    returns: Option<RawMethod>,
    #[serde(default)]
    assignment: Option<RawAssignment>,
    #[serde(default)]
    mask: Option<toml::Spanned<RawMask>>,
    #[serde(default)]
    version: Option<toml::Spanned<String>>,
}

/// Everything the agent needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This engine's address: the UDP socket is bound to it and it is the Web-Cache
    /// Identity, so routers answer the address they see.
    pub address: Ipv4Addr,
    /// UDP port (2048 unless a test says otherwise).
    pub port: u16,
    /// Unicast routers (empty with multicast).
    pub routers: Vec<Ipv4Addr>,
    /// Multicast group, when the group announces by multicast.
    pub multicast: Option<Ipv4Addr>,
    /// TTL of multicast Here-I-Ams.
    pub multicast_ttl: u8,
    /// Local proxy port for intercepted traffic (used by the data plane, issue 13).
    pub proxy_port: u16,
    /// The control socket path.
    pub control_socket: PathBuf,
    /// The Prometheus endpoint, if any.
    pub metrics: Option<SocketAddr>,
    /// Here-I-Am interval T.
    pub interval: Duration,
    /// Revision 1 fast timers, when asked for.
    pub fast_timers: Option<FastTimers>,
    /// One engine per service group.
    pub services: Vec<EngineConfig>,
    /// The packet side, when this agent takes redirected traffic itself.
    pub dataplane: Option<DataplaneConfig>,
    /// Flows handed back to the router instead of the proxy.
    pub return_rules: Vec<ReturnRuleConfig>,
}

/// `[dataplane]`: where redirected packets arrive and how they reach the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The interface the routers' GRE (or L2-forwarded) packets arrive on.
    pub interface: String,
    /// How often the proxy is checked; `None`: never, the agent stays in the group even
    /// when the proxy is gone (its SYNs are then returned to the router).
    pub proxy_check: Option<Duration>,
    /// Where the check connects (the proxy's port on this address).
    pub proxy_check_address: Ipv4Addr,
    /// Router addresses GRE is taken from besides the configured routers and those of the
    /// view (a router whose GRE source differs from its Router ID).
    pub accept_from: Vec<Ipv4Addr>,
    /// Interface copies go out of.
    pub copy_interface: Option<String>,
    /// Mark of packets handed to the proxy, and the policy-routing table that delivers them.
    pub mark: u32,
    /// That table.
    pub table: u32,
    /// Priority of the policy rule.
    pub rule_priority: u32,
}

/// One `[[return_rule]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnRuleConfig {
    /// Destination prefix and length.
    pub prefix: (Ipv4Addr, u8),
    /// Destination port, or every port.
    pub port: Option<u16>,
    /// New destination of returned packets.
    pub rewrite_to: Option<Ipv4Addr>,
    /// Send a copy out of the copy interface.
    pub copy: bool,
    /// Return to the router (else only copied).
    pub returns: bool,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: None,
            position: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Checks `text` (the contents of `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| {
            let position = span.map(|s| line_col(text, s.start));
            let key = key.or_else(|| span_key(text, position));
            ConfigError {
                file: path.to_path_buf(),
                key,
                position,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| err(e.span(), None, e.message().trim().to_string()))?;

        let address = *raw.address.get_ref();
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(err(
                Some(raw.address.span()),
                Some("address".into()),
                format!("{address} cannot be an engine's address"),
            ));
        }
        let (routers, multicast) = match (&raw.routers, &raw.multicast) {
            (Some(r), None) => {
                if r.get_ref().is_empty() {
                    return Err(err(
                        Some(r.span()),
                        Some("routers".into()),
                        "at least one router is needed".into(),
                    ));
                }
                if let Some(bad) = r
                    .get_ref()
                    .iter()
                    .find(|a| a.is_multicast() || a.is_unspecified() || a.is_broadcast())
                {
                    return Err(err(
                        Some(r.span()),
                        Some("routers".into()),
                        format!("{bad} is not a router's unicast address (use `multicast`)"),
                    ));
                }
                (r.get_ref().clone(), None)
            }
            (None, Some(m)) => {
                if !m.get_ref().is_multicast() {
                    return Err(err(
                        Some(m.span()),
                        Some("multicast".into()),
                        format!("{} is not a multicast address", m.get_ref()),
                    ));
                }
                (Vec::new(), Some(*m.get_ref()))
            }
            (Some(r), Some(_)) => {
                return Err(err(
                    Some(r.span()),
                    Some("routers".into()),
                    "give `routers` or `multicast`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(err(
                    None,
                    Some("routers".into()),
                    "missing: give `routers` (unicast) or `multicast`".into(),
                ))
            }
        };

        let (interval, fast_timers) = timers(&raw, &err)?;

        if raw.service.is_empty() {
            return Err(err(
                None,
                Some("service".into()),
                "missing: at least one [[service]] table is needed".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut services = Vec::new();
        for (i, s) in raw.service.iter().enumerate() {
            let key = |k: &str| Some(format!("service[{i}].{k}"));
            let span = s.span();
            let s = s.get_ref();
            let cfg = service(s, &key, span.clone(), &err)?;
            let id = wccp::proto::ServiceId::of(&cfg.service);
            if !seen.insert(id) {
                return Err(err(
                    Some(span),
                    key("id"),
                    format!("service {id} is configured twice"),
                ));
            }
            services.push(EngineConfig {
                address,
                routers: routers.clone(),
                multicast,
                interval,
                fast_timers,
                ..cfg
            });
        }

        let dataplane = match &raw.dataplane {
            Some(d) => Some(dataplane(d, &err)?),
            None => None,
        };
        let mut return_rules = Vec::new();
        for (i, r) in raw.return_rule.iter().enumerate() {
            return_rules.push(return_rule(i, r, dataplane.as_ref(), &err)?);
        }
        if dataplane.is_none() && !raw.return_rule.is_empty() {
            return Err(err(
                Some(raw.return_rule[0].span()),
                Some("return_rule".into()),
                "return rules need a [dataplane] section (the data plane applies them)".into(),
            ));
        }

        Ok(Config {
            dataplane,
            return_rules,
            address,
            port: raw.port.unwrap_or(WCCP_PORT),
            routers,
            multicast,
            multicast_ttl: raw.multicast_ttl.unwrap_or(1),
            proxy_port: raw.proxy_port.unwrap_or(3129),
            control_socket: raw
                .control_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
            metrics: raw.metrics,
            interval,
            fast_timers,
            services,
        })
    }
}

type ErrFn<'a> = dyn Fn(Option<std::ops::Range<usize>>, Option<String>, String) -> ConfigError + 'a;

fn timers(raw: &RawConfig, err: &ErrFn<'_>) -> Result<(Duration, Option<FastTimers>), ConfigError> {
    let Some(t) = &raw.timers else {
        return Ok((wccp::proto::DEFAULT_INTERVAL, None));
    };
    let t = t.get_ref();
    let mut interval = wccp::proto::DEFAULT_INTERVAL;
    if let Some(ms) = &t.here_i_am_ms {
        let v = *ms.get_ref();
        if !(100..=60_000).contains(&v) {
            return Err(err(
                Some(ms.span()),
                Some("timers.here_i_am_ms".into()),
                format!("{v} ms is outside 100..=60000"),
            ));
        }
        interval = Duration::from_millis(v);
    }
    let fast = match (&t.fast_transmit_ms, &t.timeout_scale) {
        (Some(ms), scale) => {
            let v = *ms.get_ref();
            // Transmit_T is a 16-bit millisecond count on the wire.
            if !(100..=u64::from(u16::MAX)).contains(&v) {
                return Err(err(
                    Some(ms.span()),
                    Some("timers.fast_transmit_ms".into()),
                    format!("{v} ms is outside 100..=65535"),
                ));
            }
            if let Some(s) = scale {
                if !(2..=10).contains(s.get_ref()) {
                    return Err(err(
                        Some(s.span()),
                        Some("timers.timeout_scale".into()),
                        format!("{} is outside 2..=10", s.get_ref()),
                    ));
                }
            }
            interval = Duration::from_millis(v);
            Some(FastTimers {
                timeout_scale: scale.as_ref().map(|s| *s.get_ref()),
            })
        }
        (None, Some(s)) => {
            return Err(err(
                Some(s.span()),
                Some("timers.timeout_scale".into()),
                "needs `fast_transmit_ms` (a timeout scale is a fast-timer capability)".into(),
            ))
        }
        (None, None) => None,
    };
    Ok((interval, fast))
}

fn dataplane(
    d: &toml::Spanned<RawDataplane>,
    err: &ErrFn<'_>,
) -> Result<DataplaneConfig, ConfigError> {
    let d = d.get_ref();
    let interface = d.interface.get_ref().trim().to_string();
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        return Err(err(
            Some(d.interface.span()),
            Some("dataplane.interface".into()),
            format!("{interface:?} is not an interface name"),
        ));
    }
    let proxy_check = match &d.proxy_check_ms {
        None => Some(Duration::from_secs(1)),
        Some(ms) if *ms.get_ref() == 0 => None,
        Some(ms) if !(100..=60_000).contains(ms.get_ref()) => {
            return Err(err(
                Some(ms.span()),
                Some("dataplane.proxy_check_ms".into()),
                format!(
                    "{} ms is outside 100..=60000 (0 turns the check off)",
                    ms.get_ref()
                ),
            ))
        }
        Some(ms) => Some(Duration::from_millis(*ms.get_ref())),
    };
    for (key, v) in [("mark", &d.mark), ("table", &d.table)] {
        if let Some(v) = v {
            if *v.get_ref() == 0 {
                return Err(err(
                    Some(v.span()),
                    Some(format!("dataplane.{key}")),
                    "0 is not usable here".into(),
                ));
            }
        }
    }
    Ok(DataplaneConfig {
        interface,
        proxy_check,
        proxy_check_address: d.proxy_check_address.unwrap_or(Ipv4Addr::LOCALHOST),
        accept_from: d.accept_from.clone(),
        copy_interface: d.copy_interface.clone(),
        mark: d.mark.as_ref().map_or(DEFAULT_MARK, |m| *m.get_ref()),
        table: d.table.as_ref().map_or(DEFAULT_TABLE, |t| *t.get_ref()),
        rule_priority: d.rule_priority.unwrap_or(DEFAULT_RULE_PRIORITY),
    })
}

fn return_rule(
    i: usize,
    r: &toml::Spanned<RawReturnRule>,
    dataplane: Option<&DataplaneConfig>,
    err: &ErrFn<'_>,
) -> Result<ReturnRuleConfig, ConfigError> {
    let key = |k: &str| Some(format!("return_rule[{i}].{k}"));
    let span = r.span();
    let r = r.get_ref();
    let text = r.prefix.get_ref();
    let bad = || {
        err(
            Some(r.prefix.span()),
            key("prefix"),
            format!("{text:?} is not an IPv4 prefix like 192.0.2.0/24"),
        )
    };
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad())?),
        None => (text.as_str(), 32),
    };
    let addr: Ipv4Addr = addr.trim().parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let masked = if len == 0 {
        0
    } else {
        u32::from(addr) & (u32::MAX << (32 - u32::from(len)))
    };
    if masked != u32::from(addr) {
        return Err(err(
            Some(r.prefix.span()),
            key("prefix"),
            format!(
                "{text} has host bits set (did you mean {}/{len}?)",
                Ipv4Addr::from(masked)
            ),
        ));
    }
    if let Some(p) = &r.port {
        if *p.get_ref() == 0 {
            return Err(err(
                Some(p.span()),
                key("port"),
                "port 0 matches nothing".into(),
            ));
        }
    }
    let returns = r.returns.unwrap_or(true);
    if !returns && !r.copy {
        return Err(err(
            Some(span),
            key("return"),
            "a rule that neither returns nor copies does nothing".into(),
        ));
    }
    if !returns && r.rewrite_to.is_some() {
        return Err(err(
            Some(span),
            key("rewrite_to"),
            "rewrite_to applies to returned packets: it needs return = true".into(),
        ));
    }
    if r.copy && dataplane.is_some_and(|d| d.copy_interface.is_none()) {
        return Err(err(
            Some(span),
            key("copy"),
            "copies need dataplane.copy_interface".into(),
        ));
    }
    Ok(ReturnRuleConfig {
        prefix: (addr, len),
        port: r.port.as_ref().map(|p| *p.get_ref()),
        rewrite_to: r.rewrite_to,
        copy: r.copy,
        returns,
    })
}

fn service(
    s: &RawService,
    key: &dyn Fn(&str) -> Option<String>,
    span: std::ops::Range<usize>,
    err: &ErrFn<'_>,
) -> Result<EngineConfig, ConfigError> {
    let st = s.service_type.unwrap_or(if s.id == 0 {
        RawServiceType::Standard
    } else {
        RawServiceType::Dynamic
    });
    let info = match st {
        RawServiceType::Standard => {
            if s.protocol.is_some() || s.ports.is_some() || !s.flags.is_empty() {
                return Err(err(
                    Some(span),
                    key("type"),
                    "a standard service is known by its id alone: drop protocol, ports and flags, or use type = \"dynamic\"".into(),
                ));
            }
            let mut i = ServiceInfo::web_cache();
            i.service_id = s.id;
            i.priority = s.priority.unwrap_or(0);
            i
        }
        RawServiceType::Dynamic => {
            let protocol = match s.protocol {
                Some(RawProtocol::Tcp) | None => 6,
                Some(RawProtocol::Udp) => 17,
            };
            let mut flags = ServiceFlags::empty();
            for f in &s.flags {
                flags |= match f {
                    RawFlag::SrcIpHash => ServiceFlags::SRC_IP_HASH,
                    RawFlag::DstIpHash => ServiceFlags::DST_IP_HASH,
                    RawFlag::SrcPortHash => ServiceFlags::SRC_PORT_HASH,
                    RawFlag::DstPortHash => ServiceFlags::DST_PORT_HASH,
                    RawFlag::PortsSource => ServiceFlags::PORTS_SOURCE,
                    RawFlag::SrcIpAltHash => ServiceFlags::SRC_IP_ALT_HASH,
                    RawFlag::DstIpAltHash => ServiceFlags::DST_IP_ALT_HASH,
                    RawFlag::SrcPortAltHash => ServiceFlags::SRC_PORT_ALT_HASH,
                    RawFlag::DstPortAltHash => ServiceFlags::DST_PORT_ALT_HASH,
                };
            }
            let ports: Vec<u16> = match &s.ports {
                Some(p) => {
                    let v = p.get_ref();
                    if v.is_empty() || v.len() > 8 || v.contains(&0) {
                        return Err(err(
                            Some(p.span()),
                            key("ports"),
                            "between one and eight ports, none of them 0".into(),
                        ));
                    }
                    flags |= ServiceFlags::PORTS_DEFINED;
                    v.clone()
                }
                None => Vec::new(),
            };
            if !flags.intersects(
                ServiceFlags::SRC_IP_HASH
                    | ServiceFlags::DST_IP_HASH
                    | ServiceFlags::SRC_PORT_HASH
                    | ServiceFlags::DST_PORT_HASH,
            ) {
                // The draft's hash needs a key: default to the destination address.
                flags |= ServiceFlags::DST_IP_HASH;
            }
            ServiceInfo::dynamic(s.id, s.priority.unwrap_or(0), protocol, flags, &ports)
        }
    };
    let password = match &s.password {
        Some(p) => {
            let v = p.get_ref();
            if v.is_empty() || v.len() > 8 {
                return Err(err(
                    Some(p.span()),
                    key("password"),
                    "WCCP MD5 passwords are 1 to 8 bytes".into(),
                ));
            }
            Some(v.as_bytes().to_vec())
        }
        None => None,
    };
    let assignment = match s.assignment {
        Some(RawAssignment::Mask) => AssignmentMethods::MASK,
        Some(RawAssignment::Hash) | None => AssignmentMethods::HASH,
    };
    let mut cfg = EngineConfig::new(Ipv4Addr::UNSPECIFIED, info, Vec::new());
    if let Some(m) = &s.mask {
        if assignment != AssignmentMethods::MASK {
            return Err(err(
                Some(m.span()),
                key("mask"),
                "a mask needs assignment = \"mask\"".into(),
            ));
        }
        let r = m.get_ref();
        cfg.mask = Mask::new(r.src_addr, r.dst_addr, r.src_port, r.dst_port).map_err(|e| {
            err(
                Some(m.span()),
                key("mask"),
                format!("{e} (at most {} bits)", wccp::assign::MAX_MASK_BITS),
            )
        })?;
    }
    cfg.password = password;
    cfg.weight = s.weight.unwrap_or(0);
    cfg.forwarding = match s.forwarding {
        Some(RawMethod::L2) => ForwardingMethods::L2,
        _ => ForwardingMethods::GRE,
    };
    cfg.returns = match s.returns {
        Some(RawMethod::L2) => ReturnMethods::L2,
        _ => ReturnMethods::GRE,
    };
    cfg.assignment = assignment;
    cfg.version = match &s.version {
        None => Version::V2,
        Some(v) => match v.get_ref().as_str() {
            "2" | "2.0" | "v2" => Version::V2,
            "2.01" | "v2rev1" => Version::V2Rev1,
            other => {
                return Err(err(
                    Some(v.span()),
                    key("version"),
                    format!("unknown version {other:?} (\"v2\" or \"v2rev1\")"),
                ))
            }
        },
    };
    Ok(cfg)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The key written on the error's line (`weight = "x"` → `service.weight`), qualified by
/// the table header above it: what toml's own messages leave out for a bad value.
fn span_key(text: &str, position: Option<(usize, usize)>) -> Option<String> {
    let (line, _) = position?;
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?.trim();
    let (k, _) = this.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || k.starts_with('[') || k.starts_with('#') {
        return None;
    }
    let above = lines.get(..line.checked_sub(1)?)?;
    let header = above
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['));
    let table = header.map(|h| {
        let name = h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        if h.starts_with("[[") {
            // An array of tables: say which element, as the checks after parsing do.
            let n = above.iter().filter(|l| l.trim() == h).count();
            format!("{name}[{}]", n.saturating_sub(1))
        } else {
            name
        }
    });
    Some(match table {
        Some(t) => format!("{t}.{k}"),
        None => k.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), s)
    }

    const MIN: &str = "address = \"10.0.0.2\"\nrouters = [\"10.0.0.1\"]\n[[service]]\nid = 0\n";

    #[test]
    fn minimal_is_web_cache_with_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.port, 2048);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].service, ServiceInfo::web_cache());
        assert_eq!(c.services[0].routers, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    }

    #[test]
    fn unknown_key_named_with_line() {
        let e = parse(&format!("{MIN}wieght = 3\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(5));
        assert!(e.to_string().contains("wieght"), "{e}");
    }

    #[test]
    fn bad_value_names_key() {
        let e = parse(&format!("{MIN}weight = \"heavy\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service[0].weight"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(5));
    }

    #[test]
    fn long_password_refused() {
        let e = parse(&format!("{MIN}password = \"123456789\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service[0].password"));
        assert_eq!(e.position, Some((5, 12)));
    }

    #[test]
    fn routers_and_multicast_exclusive() {
        let e = parse("address = \"10.0.0.2\"\nrouters = [\"10.0.0.1\"]\nmulticast = \"224.0.0.9\"\n[[service]]\nid = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("routers"));
    }

    #[test]
    fn dynamic_service_with_ports() {
        let c = parse("address = \"10.0.0.2\"\nmulticast = \"224.0.1.50\"\n[timers]\nfast_transmit_ms = 500\ntimeout_scale = 2\n[[service]]\nid = 90\nports = [80, 443]\nassignment = \"mask\"\nmask = { dst_addr = 0x1741 }\n").unwrap();
        let s = &c.services[0];
        assert_eq!(s.service.protocol, 6);
        assert!(s.service.flags.contains(ServiceFlags::PORTS_DEFINED));
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(
            s.fast_timers,
            Some(FastTimers {
                timeout_scale: Some(2)
            })
        );
        assert_eq!(s.multicast, Some(Ipv4Addr::new(224, 0, 1, 50)));
    }

    #[test]
    fn dataplane_and_return_rules() {
        let dp = "[dataplane]\ninterface = \"eth0\"\n";
        let c = parse(&format!(
            "{MIN}{dp}[[return_rule]]\nprefix = \"192.0.2.0/24\"\nport = 443\nrewrite_to = \"198.51.100.9\"\n"
        ))
        .unwrap();
        let d = c.dataplane.unwrap();
        assert_eq!(d.interface, "eth0");
        assert_eq!(d.proxy_check, Some(Duration::from_secs(1)));
        assert_eq!(
            c.return_rules,
            vec![ReturnRuleConfig {
                prefix: (Ipv4Addr::new(192, 0, 2, 0), 24),
                port: Some(443),
                rewrite_to: Some(Ipv4Addr::new(198, 51, 100, 9)),
                copy: false,
                returns: true,
            }]
        );
        let bad = |extra: &str| parse(&format!("{MIN}{dp}{extra}")).unwrap_err();
        let e = bad("[[return_rule]]\nprefix = \"192.0.2.1/24\"\n");
        assert_eq!(e.key.as_deref(), Some("return_rule[0].prefix"));
        assert!(e.message.contains("host bits"), "{e}");
        let e = bad("[[return_rule]]\nprefix = \"192.0.2.0/24\"\ncopy = true\n");
        assert!(e.message.contains("copy_interface"), "{e}");
        let e = bad("[[return_rule]]\nprefix = \"192.0.2.0/24\"\nreturn = false\n");
        assert!(e.message.contains("does nothing"), "{e}");
        let e = parse(&format!(
            "{MIN}[[return_rule]]\nprefix = \"192.0.2.0/24\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("[dataplane]"), "{e}");
        let e = parse(&format!(
            "{MIN}[dataplane]\ninterface = \"eth0\"\nproxy_check_ms = 5\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("dataplane.proxy_check_ms"));
        let off = parse(&format!(
            "{MIN}[dataplane]\ninterface = \"eth0\"\nproxy_check_ms = 0\n"
        ))
        .unwrap();
        assert_eq!(off.dataplane.unwrap().proxy_check, None);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
