//! The controller's TOML configuration: what an operator writes, checked completely before
//! anything starts, and turned into the `wccp::router` configuration.
//!
//! Every table denies unknown keys, so a misspelt key is an error rather than a silently
//! ignored setting. Every error names the key and its line and column, because an
//! operator editing a file on a router needs to know where to look, not what serde thinks.
//! The schema is documented in `examples/redirector.toml`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use wccp::proto::{Methods, ServiceId};
use wccp::router::{RouterConfig, ServiceConfig, Timers};
use wccp::wire::{
    AssignmentMethods, ForwardingMethods, ReturnMethods, ServiceFlags, ServiceInfo, ServiceType,
};

/// The control socket when the config names none: under /run, where only root writes.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/wccp-redirector/ctl.sock";
/// The pin root when the config names none (one per controller instance).
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/wccp-redirector/default";
/// WCCP's port.
pub const WCCP_PORT: u16 = 2048;

/// A configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    /// The dotted key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The file as written: every key optional unless the router cannot run without it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    router: Spanned<RouterSection>,
    #[serde(default)]
    timers: Option<Spanned<TimersSection>>,
    #[serde(default)]
    methods: Option<Spanned<MethodsSection>>,
    #[serde(default)]
    dataplane: Option<Spanned<DataplaneSection>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<ServiceSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSection {
    address: Spanned<String>,
    #[serde(default)]
    port: Option<Spanned<u16>>,
    #[serde(default)]
    redirect_in: Vec<Spanned<String>>,
    #[serde(default)]
    redirect_out: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    control_socket: Option<Spanned<String>>,
    #[serde(default)]
    metrics: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimersSection {
    here_i_am_ms: Option<Spanned<u64>>,
    query_after_tenths: Option<Spanned<u32>>,
    remove_after_tenths: Option<Spanned<u32>>,
    flush_after_tenths: Option<Spanned<u32>>,
    multicast_interval_ms: Option<Spanned<u64>>,
    multicast_jitter_percent: Option<Spanned<u64>>,
    min_interval_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodsSection {
    forwarding: Option<Spanned<Vec<String>>>,
    assignment: Option<Spanned<Vec<String>>>,
    #[serde(rename = "return")]
    returns: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataplaneSection {
    pin_root: Option<Spanned<String>>,
    grace_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    id: Spanned<u16>,
    #[serde(rename = "type", default)]
    kind: Option<Spanned<String>>,
    protocol: Option<Spanned<toml::Value>>,
    #[serde(default)]
    ports: Option<Spanned<Vec<u16>>>,
    #[serde(default)]
    flags: Option<Spanned<Vec<String>>>,
    priority: Option<Spanned<u8>>,
    password: Option<Spanned<String>>,
    group_list: Option<Vec<Spanned<String>>>,
    multicast: Option<Spanned<String>>,
    #[serde(default)]
    redirect: Vec<Spanned<String>>,
    #[serde(default)]
    skip: Vec<Spanned<String>>,
}

/// An IPv4 prefix of a redirect list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One service group, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// What `wccp::router` runs.
    pub router: ServiceConfig,
    /// Prefixes whose traffic is redirected (empty: all).
    pub redirect: Vec<Prefix>,
    /// Prefixes whose traffic is never redirected.
    pub skip: Vec<Prefix>,
}

/// The data plane's lifetime settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    /// Where maps and links are pinned: one root per controller, so two controllers on
    /// one host never share maps.
    pub pin_root: PathBuf,
    /// How long the data plane keeps redirecting after the controller's last heartbeat.
    pub grace: Duration,
}

/// A checked configuration: every value here has been validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Router ID and the address UDP 2048 is bound to (the source of everything sent).
    pub address: Ipv4Addr,
    /// UDP port, both ours and the engines' (2048; configurable for tests).
    pub port: u16,
    /// Interfaces whose inbound traffic is redirected.
    pub redirect_in: Vec<String>,
    /// Interfaces whose outbound (forwarded) traffic is redirected, by tc egress: what
    /// `ip wccp N redirect out` does on a Cisco router.
    pub redirect_out: Vec<String>,
    /// Interfaces never redirected on.
    pub exclude: Vec<String>,
    /// The control socket path.
    pub control_socket: PathBuf,
    /// The Prometheus endpoint, when enabled.
    pub metrics: Option<SocketAddr>,
    /// Data plane settings.
    pub dataplane: Dataplane,
    /// Service groups, in file order.
    pub services: Vec<Service>,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            at: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Checks `text`, read from `file` (named in errors).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let message = e.message().to_string();
            let key = span.as_ref().and_then(|s| key_at(text, s.start));
            ConfigError {
                file: file.to_owned(),
                at: span.map(|s| line_col(text, s.start)),
                key,
                message,
            }
        })?;
        let cx = Cx { file, text };
        cx.check(raw)
    }

    /// The state machine's configuration. Each service runs in its own `Router` so that a
    /// reload can keep the groups whose settings did not change.
    pub fn router_config(&self, service: &Service, jitter_seed: u64) -> RouterConfig {
        RouterConfig {
            router_id: self.address,
            services: vec![service.router.clone()],
            jitter_seed,
        }
    }
}

/// 1-based line and column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose value (or table) is at `offset`: the `[table]` header above it and
/// the `key =` on its line. toml's messages say what is wrong, rarely where in the schema.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let header = text
        .get(..start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn err(
        &self,
        key: impl Into<String>,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            at: Some(line_col(self.text, span.start)),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn ipv4(&self, key: &str, v: &Spanned<String>) -> Result<Ipv4Addr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                key,
                v.span(),
                format!("`{}` is not an IPv4 address", v.get_ref()),
            )
        })
    }

    fn prefix(&self, key: &str, v: &Spanned<String>) -> Result<Prefix, ConfigError> {
        let bad = || {
            self.err(
                key,
                v.span(),
                format!("`{}` is not an IPv4 prefix (a.b.c.d/len)", v.get_ref()),
            )
        };
        let (a, l) = v.get_ref().split_once('/').unwrap_or((v.get_ref(), "32"));
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = l.trim().parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        if u32::from(addr) & !mask != 0 {
            return Err(self.err(
                key,
                v.span(),
                format!("`{}` has host bits set", v.get_ref()),
            ));
        }
        Ok(Prefix { addr, len })
    }

    fn iface(&self, key: &str, v: &Spanned<String>) -> Result<String, ConfigError> {
        let name = v.get_ref();
        // IFNAMSIZ is 16 with the terminating NUL.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            return Err(self.err(key, v.span(), format!("`{name}` is not an interface name")));
        }
        Ok(name.clone())
    }

    fn check(&self, raw: FileConfig) -> Result<Config, ConfigError> {
        let router = raw.router.get_ref();
        let address = self.ipv4("router.address", &router.address)?;
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(self.err(
                "router.address",
                router.address.span(),
                "the router's identity must be a unicast address the engines can reach",
            ));
        }
        let port = match &router.port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(self.err("router.port", p.span(), "port 0 is not a port"))
            }
            Some(p) => *p.get_ref(),
            None => WCCP_PORT,
        };
        let mut redirect_in = Vec::new();
        for v in &router.redirect_in {
            let name = self.iface("router.redirect_in", v)?;
            if redirect_in.contains(&name) {
                return Err(self.err(
                    "router.redirect_in",
                    v.span(),
                    format!("`{name}` listed twice"),
                ));
            }
            redirect_in.push(name);
        }
        let mut redirect_out = Vec::new();
        for v in &router.redirect_out {
            let name = self.iface("router.redirect_out", v)?;
            if redirect_out.contains(&name) {
                return Err(self.err(
                    "router.redirect_out",
                    v.span(),
                    format!("`{name}` listed twice"),
                ));
            }
            redirect_out.push(name);
        }
        let mut exclude = Vec::new();
        for v in &router.exclude {
            let name = self.iface("router.exclude", v)?;
            for (key, list) in [
                ("redirect_in", &redirect_in),
                ("redirect_out", &redirect_out),
            ] {
                if list.contains(&name) {
                    return Err(self.err(
                        "router.exclude",
                        v.span(),
                        format!("`{name}` is also in router.{key}"),
                    ));
                }
            }
            exclude.push(name);
        }
        let control_socket = match &router.control_socket {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(self.err(
                    "router.control_socket",
                    p.span(),
                    "must be an absolute path",
                ))
            }
            Some(p) => PathBuf::from(p.get_ref()),
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        };
        let metrics = match &router.metrics {
            None => None,
            Some(m) => {
                let s = m.get_ref();
                // A bare port means loopback: metrics are not exposed unless asked for.
                let parsed = match s.parse::<u16>() {
                    Ok(port) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
                    Err(_) => s.parse::<SocketAddr>(),
                };
                Some(parsed.map_err(|_| {
                    self.err(
                        "router.metrics",
                        m.span(),
                        format!("`{s}` is not ADDRESS:PORT or PORT"),
                    )
                })?)
            }
        };
        let timers = self.timers(raw.timers.as_ref())?;
        let methods = self.methods(raw.methods.as_ref())?;
        let dataplane = self.dataplane(raw.dataplane.as_ref())?;
        if raw.services.is_empty() {
            return Err(ConfigError {
                file: self.file.to_owned(),
                at: None,
                key: Some("service".into()),
                message: "no [[service]]: a router without service groups has nothing to do".into(),
            });
        }
        let mut services: Vec<Service> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, s) in raw.services.iter().enumerate() {
            let service = self.service(i, s.get_ref(), &timers, methods)?;
            if !seen.insert(service.router.id) {
                return Err(self.err(
                    format!("service[{i}].id"),
                    s.get_ref().id.span(),
                    format!("service {} is configured twice", service.router.id),
                ));
            }
            services.push(service);
        }
        Ok(Config {
            address,
            port,
            redirect_in,
            redirect_out,
            exclude,
            control_socket,
            metrics,
            dataplane,
            services,
        })
    }

    fn timers(&self, t: Option<&Spanned<TimersSection>>) -> Result<Timers, ConfigError> {
        let mut timers = Timers::default();
        let Some(t) = t.map(Spanned::get_ref) else {
            return Ok(timers);
        };
        let ms = |key: &str, v: &Option<Spanned<u64>>, min: u64, out: &mut Duration| {
            if let Some(v) = v {
                if *v.get_ref() < min || *v.get_ref() > 3_600_000 {
                    return Err(self.err(
                        format!("timers.{key}"),
                        v.span(),
                        format!("{} ms is out of range ({min} to 3600000)", v.get_ref()),
                    ));
                }
                *out = Duration::from_millis(*v.get_ref());
            }
            Ok(())
        };
        ms("here_i_am_ms", &t.here_i_am_ms, 100, &mut timers.here_i_am)?;
        ms(
            "multicast_interval_ms",
            &t.multicast_interval_ms,
            100,
            &mut timers.multicast_interval,
        )?;
        ms(
            "min_interval_ms",
            &t.min_interval_ms,
            10,
            &mut timers.min_interval,
        )?;
        let tenths = |key: &str, v: &Option<Spanned<u32>>, out: &mut u32| {
            if let Some(v) = v {
                if !(5..=1000).contains(v.get_ref()) {
                    return Err(self.err(
                        format!("timers.{key}"),
                        v.span(),
                        format!("{} tenths is out of range (5 to 1000)", v.get_ref()),
                    ));
                }
                *out = *v.get_ref();
            }
            Ok(())
        };
        tenths(
            "query_after_tenths",
            &t.query_after_tenths,
            &mut timers.query_after_tenths,
        )?;
        tenths(
            "remove_after_tenths",
            &t.remove_after_tenths,
            &mut timers.remove_after_tenths,
        )?;
        tenths(
            "flush_after_tenths",
            &t.flush_after_tenths,
            &mut timers.flush_after_tenths,
        )?;
        if let Some(v) = &t.multicast_jitter_percent {
            if *v.get_ref() > 50 {
                return Err(self.err("timers.multicast_jitter_percent", v.span(), "at most 50"));
            }
            timers.multicast_jitter_percent = *v.get_ref();
        }
        if timers.query_after_tenths >= timers.remove_after_tenths {
            let span = t
                .query_after_tenths
                .as_ref()
                .or(t.remove_after_tenths.as_ref())
                .map_or(0..0, Spanned::span);
            return Err(self.err(
                "timers.query_after_tenths",
                span,
                "the Removal-Query must come before removal (query_after_tenths < remove_after_tenths)",
            ));
        }
        Ok(timers)
    }

    fn methods(&self, m: Option<&Spanned<MethodsSection>>) -> Result<Methods, ConfigError> {
        let mut methods = Methods::default();
        let Some(m) = m.map(Spanned::get_ref) else {
            return Ok(methods);
        };
        let list = |key: &str, v: &Spanned<Vec<String>>| -> Result<u32, ConfigError> {
            let mut bits = 0;
            for name in v.get_ref() {
                bits |= match name.as_str() {
                    "gre" if key != "assignment" => 1,
                    "l2" if key != "assignment" => 2,
                    "hash" if key == "assignment" => 1,
                    "mask" if key == "assignment" => 2,
                    _ => {
                        let allowed = if key == "assignment" {
                            "hash, mask"
                        } else {
                            "gre, l2"
                        };
                        return Err(self.err(
                            format!("methods.{key}"),
                            v.span(),
                            format!("unknown method `{name}` (allowed: {allowed})"),
                        ));
                    }
                };
            }
            if bits == 0 {
                return Err(self.err(format!("methods.{key}"), v.span(), "at least one method"));
            }
            Ok(bits)
        };
        if let Some(v) = &m.forwarding {
            methods.forwarding = ForwardingMethods(list("forwarding", v)?);
        }
        if let Some(v) = &m.assignment {
            methods.assignment = AssignmentMethods(list("assignment", v)?);
        }
        if let Some(v) = &m.returns {
            methods.returns = ReturnMethods(list("return", v)?);
        }
        Ok(methods)
    }

    fn dataplane(&self, d: Option<&Spanned<DataplaneSection>>) -> Result<Dataplane, ConfigError> {
        let mut out = Dataplane {
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            grace: Duration::from_secs(30),
        };
        let Some(d) = d.map(Spanned::get_ref) else {
            return Ok(out);
        };
        if let Some(p) = &d.pin_root {
            if !p.get_ref().starts_with("/sys/fs/bpf/") {
                return Err(self.err(
                    "dataplane.pin_root",
                    p.span(),
                    "must be a directory under /sys/fs/bpf/",
                ));
            }
            out.pin_root = PathBuf::from(p.get_ref());
        }
        if let Some(g) = &d.grace_ms {
            if !(500..=3_600_000).contains(g.get_ref()) {
                return Err(self.err(
                    "dataplane.grace_ms",
                    g.span(),
                    "out of range (500 to 3600000)",
                ));
            }
            out.grace = Duration::from_millis(*g.get_ref());
        }
        Ok(out)
    }

    fn service(
        &self,
        i: usize,
        s: &ServiceSection,
        timers: &Timers,
        methods: Methods,
    ) -> Result<Service, ConfigError> {
        let key = |k: &str| format!("service[{i}].{k}");
        let dynamic = match s.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None => *s.id.get_ref() != 0,
            Some(("standard", _)) => false,
            Some(("dynamic", _)) => true,
            Some((other, span)) => {
                return Err(self.err(
                    key("type"),
                    span,
                    format!("`{other}`: a service is `standard` or `dynamic`"),
                ))
            }
        };
        let id_raw = *s.id.get_ref();
        let id = match (dynamic, id_raw) {
            (false, 0) => 0u8,
            (false, n) => {
                return Err(self.err(
                    key("id"),
                    s.id.span(),
                    format!("standard service {n} does not exist: the well-known services are 0 (web-cache); use type = \"dynamic\" with ids 51-255"),
                ))
            }
            (true, n @ 51..=255) => n as u8,
            (true, n) => {
                return Err(self.err(
                    key("id"),
                    s.id.span(),
                    format!("dynamic service ids are 51 to 255, got {n}"),
                ))
            }
        };
        let protocol = match &s.protocol {
            None => None,
            Some(p) => Some(match p.get_ref() {
                toml::Value::String(n) if n == "tcp" => 6u8,
                toml::Value::String(n) if n == "udp" => 17,
                toml::Value::Integer(n) if (1..=255).contains(n) => *n as u8,
                _ => {
                    return Err(self.err(
                        key("protocol"),
                        p.span(),
                        "`tcp`, `udp` or an IP protocol number 1-255",
                    ))
                }
            }),
        };
        let mut flags = ServiceFlags::empty();
        if let Some(f) = &s.flags {
            for name in f.get_ref() {
                let bit = match name.as_str() {
                    "src_ip_hash" => ServiceFlags::SRC_IP_HASH,
                    "dst_ip_hash" => ServiceFlags::DST_IP_HASH,
                    "src_port_hash" => ServiceFlags::SRC_PORT_HASH,
                    "dst_port_hash" => ServiceFlags::DST_PORT_HASH,
                    "ports_source" => ServiceFlags::PORTS_SOURCE,
                    "src_ip_alt_hash" => ServiceFlags::SRC_IP_ALT_HASH,
                    "dst_ip_alt_hash" => ServiceFlags::DST_IP_ALT_HASH,
                    "src_port_alt_hash" => ServiceFlags::SRC_PORT_ALT_HASH,
                    "dst_port_alt_hash" => ServiceFlags::DST_PORT_ALT_HASH,
                    _ => {
                        return Err(self.err(
                            key("flags"),
                            f.span(),
                            format!("unknown flag `{name}` (ports_defined is implied by `ports`)"),
                        ))
                    }
                };
                flags |= bit;
            }
        }
        let mut ports = [0u16; 8];
        if let Some(p) = &s.ports {
            if p.get_ref().len() > 8 || p.get_ref().contains(&0) {
                return Err(self.err(key("ports"), p.span(), "one to eight ports, none of them 0"));
            }
            for (slot, port) in ports.iter_mut().zip(p.get_ref()) {
                *slot = *port;
            }
            if !p.get_ref().is_empty() {
                flags |= ServiceFlags::PORTS_DEFINED;
            }
        }
        let described =
            protocol.is_some() || s.ports.is_some() || s.flags.is_some() || s.priority.is_some();
        let definition = if !dynamic {
            if described {
                let span = s.protocol.as_ref().map_or(s.id.span(), Spanned::span);
                return Err(self.err(
                    key("protocol"),
                    span,
                    "the web-cache service is fixed (TCP port 80, destination hash): give no protocol, ports, flags or priority",
                ));
            }
            Some(ServiceInfo::web_cache())
        } else if described {
            let Some(protocol) = protocol else {
                return Err(self.err(
                    key("protocol"),
                    s.id.span(),
                    "a described dynamic service needs `protocol`",
                ));
            };
            if flags.bits() & 0x0f == 0 && flags.bits() & 0x0f00 == 0 {
                flags |= ServiceFlags::DST_IP_HASH;
            }
            Some(ServiceInfo {
                service_type: ServiceType::Dynamic,
                service_id: id,
                priority: s.priority.as_ref().map_or(0, |p| *p.get_ref()),
                protocol,
                flags,
                ports,
            })
        } else {
            // The first engine defines it (draft-01 4.2).
            None
        };
        let password = match &s.password {
            None => None,
            Some(p) if p.get_ref().is_empty() || p.get_ref().len() > 8 => {
                return Err(self.err(
                    key("password"),
                    p.span(),
                    "WCCP MD5 passwords are 1 to 8 bytes (the draft uses at most 8)",
                ))
            }
            Some(p) => Some(p.get_ref().as_bytes().to_vec()),
        };
        let group_list = match &s.group_list {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|a| self.ipv4(&key("group_list"), a))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let multicast = match &s.multicast {
            None => None,
            Some(m) => {
                let a = self.ipv4(&key("multicast"), m)?;
                if !a.is_multicast() {
                    return Err(self.err(
                        key("multicast"),
                        m.span(),
                        format!("{a} is not a multicast group"),
                    ));
                }
                Some(a)
            }
        };
        let redirect = s
            .redirect
            .iter()
            .map(|p| self.prefix(&key("redirect"), p))
            .collect::<Result<Vec<_>, _>>()?;
        let skip = s
            .skip
            .iter()
            .map(|p| self.prefix(&key("skip"), p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Service {
            router: ServiceConfig {
                id: ServiceId { dynamic, id },
                definition,
                password,
                group_list,
                multicast,
                methods,
                timers: timers.clone(),
            },
            redirect,
            skip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[router]
address = "10.0.0.1"
port = 12048

[[service]]
id = 0

[[service]]
id = 90
type = "dynamic"
protocol = "tcp"
ports = [443]
password = "secret"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.port, 12048);
        assert_eq!(c.services.len(), 2);
        let d = c.services[1].router.definition.as_ref().unwrap();
        assert_eq!(d.protocol, 6);
        assert!(d.flags.contains(ServiceFlags::PORTS_DEFINED));
        assert_eq!(c.metrics, None);
    }

    #[test]
    fn unknown_key_named_with_line() {
        let e = parse(&GOOD.replace("port = 12048", "port = 12048\nprot = 1")).unwrap_err();
        assert_eq!(e.at.map(|a| a.0), Some(5), "{e}");
        assert!(e.to_string().contains("prot"), "{e}");
    }

    #[test]
    fn bad_values_named() {
        let e = parse(&GOOD.replace("id = 90", "id = 7")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service[1].id"), "{e}");
        assert_eq!(e.at, Some((10, 6)));
        let e = parse(&GOOD.replace("\"secret\"", "\"much too long\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service[1].password"));
        let e = parse(&GOOD.replace("port = 12048", "port = \"x\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("router.port"), "{e}");
        assert_eq!(e.at.map(|a| a.0), Some(4));
    }

    #[test]
    fn prefixes() {
        let c = Cx {
            file: Path::new("x"),
            text: "",
        };
        let p = |s: &str| c.prefix("k", &Spanned::new(0..0, s.to_string()));
        assert_eq!(p("10.0.0.0/8").unwrap().len, 8);
        assert!(p("10.0.0.1/8").is_err());
        assert!(p("10.0.0.0/33").is_err());
        assert_eq!(p("10.0.0.1").unwrap().len, 32);
    }
}
