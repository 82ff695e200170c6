//! The `show` document: what the control socket returns and `show --json` prints.
//!
//! This JSON is an interface (scripts and the integration tests read it), so fields are
//! only ever added, never renamed or removed; addresses are dotted strings, times are
//! milliseconds.
//!
//! ```json
//! { "address": "192.0.2.10", "port": 2048, "multicast": null, "proxy_port": 3129,
//!   "uptime_ms": 12345, "errors": { "malformed.truncated": 1 },
//!   "services": [ {
//!     "service": "standard/0", "id": 0, "dynamic": false, "weight": 100, "password": true,
//!     "forwarding": "gre", "return": "gre", "assignment_method": "hash", "interval_ms": 10000,
//!     "routers": [ { "address": "192.0.2.1", "receive_id": 7, "member_change": 2,
//!                    "key_engine": "192.0.2.10", "key_change": 1,
//!                    "engines": ["192.0.2.10"], "last_heard_ms_ago": 800 } ],
//!     "group_routers": ["192.0.2.1"], "engines": ["192.0.2.10"],
//!     "designated": "192.0.2.10", "designated_is_us": true,
//!     "change_number": 2, "assignment_change": 1, "left": false,
//!     "assignment": { "buckets": [0, 1, ...], "bucket_count": 256, "mask_values": [] },
//!     "messages_in": { "i_see_you": 12 }, "messages_out": { "here_i_am": 12, "redirect_assign": 1 },
//!     "errors": { "security": 1 }, "events": { "router_up": 1, "designated": 1 } } ],
//!   "mode": "wccp+dataplane",
//!   "dataplane": { "interface": "eth0", "routers": ["192.0.2.1"], "service_ports": [80],
//!                  "proxy_port": 3129, "return_rules": ["192.0.2.0/24 return"],
//!                  "counters": { "proxied_syn": 12, "established": 340 }, "last_error": null },
//!   "proxy": { "state": "up", "since_ms": 5000, "withdrawals": 0, "check": "127.0.0.1:3129" } }
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

/// The whole agent.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The engine's address.
    pub address: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Multicast group, when configured.
    pub multicast: Option<Ipv4Addr>,
    /// Local proxy port (for the data plane).
    pub proxy_port: u16,
    /// Milliseconds since the agent started.
    pub uptime_ms: u64,
    /// One entry per service group.
    pub services: Vec<ServiceStatus>,
    /// Errors no service claims (unparsable datagrams, unknown services), by kind.
    pub errors: BTreeMap<String, u64>,
    /// `wccp+dataplane`, `wccp` (no `[dataplane]`: a proxy that takes GRE itself) or
    /// `dataplane-only` (`run --dataplane-only`: the proxy speaks WCCP itself).
    pub mode: &'static str,
    /// The packet side, when this agent runs it.
    pub dataplane: Option<crate::dataplane::DataplaneStatus>,
    /// The local proxy as the liveness check sees it, when it runs.
    pub proxy: Option<ProxyStatus>,
}

/// The liveness check of the local proxy: while it fails, the agent is out of its groups.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// `up`, `down`, or `unknown` before the first check.
    pub state: &'static str,
    /// Milliseconds since the state last changed.
    pub since_ms: u64,
    /// Times the agent left its groups because the proxy stopped answering.
    pub withdrawals: u64,
    /// Where the check connects.
    pub check: String,
}

/// One service group, as `show ip wccp N detail` would tell it from the engine's side.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// `standard/N` or `dynamic/N`.
    pub service: String,
    /// Service id.
    pub id: u8,
    /// Dynamic (type 1) or well-known.
    pub dynamic: bool,
    /// Weight announced.
    pub weight: u16,
    /// Whether MD5 security is configured (the password itself is never shown).
    pub password: bool,
    /// Forwarding method: `gre` or `l2`.
    pub forwarding: &'static str,
    /// Packet-return method: `gre` or `l2`.
    #[serde(rename = "return")]
    pub returns: &'static str,
    /// `hash` or `mask`.
    pub assignment_method: &'static str,
    /// Here-I-Am interval T.
    pub interval_ms: u64,
    /// Routers that answer us (usable routers), with what each last said.
    pub routers: Vec<RouterStatus>,
    /// Routers of the group, heard or reported by others.
    pub group_routers: Vec<Ipv4Addr>,
    /// Engines every router lists (the engine view).
    pub engines: Vec<Ipv4Addr>,
    /// The designated engine, when this engine can tell.
    pub designated: Option<Ipv4Addr>,
    /// Whether the designated engine is this one.
    pub designated_is_us: bool,
    /// This engine's view change number.
    pub change_number: u32,
    /// Change number of the last assignment this engine sent (0: never).
    pub assignment_change: u32,
    /// True once every router acknowledged our SHUTDOWN.
    pub left: bool,
    /// What this engine holds.
    pub assignment: Assignment,
    /// Received messages by type.
    pub messages_in: BTreeMap<String, u64>,
    /// Sent messages by type.
    pub messages_out: BTreeMap<String, u64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Engine events by kind.
    pub events: BTreeMap<String, u64>,
}

/// One router as this engine knows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouterStatus {
    /// The router's identity.
    pub address: Ipv4Addr,
    /// Its last Receive ID.
    pub receive_id: u32,
    /// Its member change number.
    pub member_change: u32,
    /// Designated engine of the assignment it has accepted (0.0.0.0: none).
    pub key_engine: Ipv4Addr,
    /// That assignment's change number.
    pub key_change: u32,
    /// Engines it lists as usable.
    pub engines: Vec<Ipv4Addr>,
    /// Milliseconds since its last I-See-You.
    pub last_heard_ms_ago: u64,
}

/// The traffic this engine takes.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    /// Hash buckets the routers report for us (hash mode).
    pub buckets: Vec<u8>,
    /// `buckets.len()`.
    pub bucket_count: usize,
    /// Mask values our last Redirect-Assign gave us (mask mode, when designated).
    pub mask_values: Vec<String>,
}
