//! Shared by the daemon integration tests: the lab topology (routers and engines on one
//! switched LAN, a client behind the first router), polling helpers, and a reader of a
//! controller's pinned data-plane maps.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use netns_tests::netns::{Host, Lab};

/// The engines' and routers' LAN.
pub const LAN: &str = "10.77.0";
/// The client side of router `i` (0-based): 10.77.1.0/24, 10.77.2.0/24, ...
pub fn client_net(i: usize) -> String {
    format!("10.77.{}", i + 1)
}

/// Router `i` (0-based): 10.77.0.1, .2, ...
pub fn router_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + i as u8)
}

/// Engine `i` (0-based): 10.77.0.11, .12, ... (engine 0 has the lowest address: it is
/// the designated engine whenever it is usable).
pub fn engine_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

/// A lab: routers `r1..` and engines `e1..` with `eth0` on one bridge (host `sw`, multicast
/// snooping off so group traffic floods like on a hub), a multicast route on every LAN
/// member, and a client `clN` on each router's `cli0` (the interface the XDP program is
/// attached to: traffic from clients is what gets redirected).
pub struct Net {
    /// The lab (declare guards of processes after it, so they go first).
    pub lab: Lab,
    /// The routers.
    pub routers: Vec<Host>,
    /// The engines.
    pub engines: Vec<Host>,
    /// One client per router, on its `cli0`.
    pub clients: Vec<Host>,
}

impl Net {
    /// Builds the topology with `routers` routers and `engines` engines.
    pub fn new(prefix: &str, routers: usize, engines: usize) -> Result<Net> {
        let lab = Lab::new(prefix)?;
        let mut rs = Vec::new();
        for i in 0..routers {
            rs.push(lab.host(&format!("r{}", i + 1))?);
        }
        let mut es = Vec::new();
        for i in 0..engines {
            es.push(lab.host(&format!("e{}", i + 1))?);
        }
        let members: Vec<(&Host, &str)> = rs.iter().chain(es.iter()).map(|h| (h, "eth0")).collect();
        let sw = lab.switch("sw", &members)?;
        sw.run(Command::new("ip").args([
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]))?;
        for (i, r) in rs.iter().enumerate() {
            r.add_addr("eth0", &format!("{}/24", router_ip(i)))?;
            r.add_route_dev("224.0.0.0/4", "eth0")?;
            r.sysctl("net.ipv4.ip_forward", "1")?;
        }
        for (i, e) in es.iter().enumerate() {
            e.add_addr("eth0", &format!("{}/24", engine_ip(i)))?;
            e.add_route_dev("224.0.0.0/4", "eth0")?;
        }
        let mut clients = Vec::new();
        for (i, r) in rs.iter().enumerate() {
            let client = lab.host(&format!("cl{}", i + 1))?;
            lab.link(r, "cli0", &client, "eth0")?;
            r.add_addr("cli0", &format!("{}.1/24", client_net(i)))?;
            client.add_addr("eth0", &format!("{}.2/24", client_net(i)))?;
            client.add_route("default", &format!("{}.1", client_net(i)))?;
            clients.push(client);
        }
        Ok(Net {
            lab,
            routers: rs,
            engines: es,
            clients,
        })
    }
}

impl Net {
    /// Runs `f` on this lab; when it fails the lab's scratch directory (every process's
    /// output, configurations, Squid's cache.log) is kept for the post-mortem.
    pub fn run<T>(self, f: impl FnOnce(&Net) -> Result<T>) -> Result<T> {
        let r = f(&self);
        if r.is_err() {
            self.lab.keep_scratch();
        }
        r
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`; returns the value
/// and the time it took, or `None` on timeout.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, t0.elapsed()));
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `slots` of a service's programmed assignment: engine address → buckets or values.
pub fn slots(service: &Value) -> BTreeMap<String, u64> {
    service["assignment"]["slots"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// The engine entry of `address` in a service of the router's `show`.
pub fn engine(service: &Value, address: Ipv4Addr) -> Option<&Value> {
    service["engines"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == address.to_string())
}

/// The 256 bucket owners of a hash assignment (`None` where unassigned).
pub fn bucket_owners(service: &Value) -> Option<Vec<Option<Ipv4Addr>>> {
    let list = service["assignment"]["buckets"].as_array()?;
    Some(
        list.iter()
            .map(|b| b.as_str().and_then(|s| s.parse().ok()))
            .collect(),
    )
}

/// One service as the data plane holds it in its active table slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneService {
    /// Service id.
    pub id: u8,
    /// Dynamic service.
    pub dynamic: bool,
    /// Mask assignment (else hash).
    pub mask: bool,
    /// Owner of each bucket (hash: 256) or mask value (2^bits), `None` when unassigned.
    pub slots: Vec<Option<Ipv4Addr>>,
    /// Forwarding method of each engine the slots name (`METHOD_GRE`, `METHOD_L2`).
    pub methods: BTreeMap<Ipv4Addr, u8>,
}

/// What a controller's pinned maps hold: the active slot's services.
#[derive(Clone, Debug)]
pub struct PlaneView {
    /// `control.generation`.
    pub generation: u32,
    /// `CONTROL_ENABLED`.
    pub enabled: bool,
    /// Services of the active slot.
    pub services: Vec<PlaneService>,
}

impl PlaneView {
    /// The service with this id and kind.
    pub fn service(&self, id: u8, dynamic: bool) -> Option<&PlaneService> {
        self.services
            .iter()
            .find(|s| s.id == id && s.dynamic == dynamic)
    }
}

/// Reads the active table of the data plane pinned at `pin_root` (the maps the XDP
/// program reads), independently of the controller.
pub fn read_plane(pin_root: &Path) -> Result<PlaneView> {
    use redirector_ebpf::layout::*;
    let (control, table) = redirector_ebpf::read_pinned_table(pin_root)
        .with_context(|| format!("reading the data plane pinned at {}", pin_root.display()))?;
    let mut out = Vec::new();
    for rank in 0..usize::from(table.header.services) {
        let s = table.services[rank];
        let mask = s.options & SERVICE_MASK != 0;
        let count = if mask {
            1usize << s.mask_pos.iter().filter(|&&p| p != NO_POSITION).count()
        } else {
            BUCKETS
        };
        let mut slots = Vec::with_capacity(count);
        let mut methods = BTreeMap::new();
        for e in &table.buckets[rank * BUCKETS..rank * BUCKETS + count] {
            if e.flags & BUCKET_ASSIGNED == 0 {
                slots.push(None);
                continue;
            }
            let eng = table.engines[usize::from(e.engine)];
            let addr = Ipv4Addr::from(eng.addr.to_ne_bytes());
            methods.insert(addr, eng.method);
            slots.push(Some(addr));
        }
        out.push(PlaneService {
            id: s.service_id,
            dynamic: s.options & SERVICE_DYNAMIC != 0,
            mask,
            slots,
            methods,
        });
    }
    Ok(PlaneView {
        generation: control.generation,
        enabled: control.flags & CONTROL_ENABLED != 0,
        services: out,
    })
}

/// Checks that the data plane at `pin_root` holds what `service` (a service of the
/// router's `show`) says is programmed: the same owner for every bucket (hash), or the
/// same number of values per engine (mask), and each engine's forwarding method.
pub fn check_plane_matches(pin_root: &Path, service: &Value) -> Result<()> {
    let id = service["id"].as_u64().ok_or_else(|| anyhow!("no id"))? as u8;
    let dynamic = service["dynamic"].as_bool().unwrap_or(false);
    let view = read_plane(pin_root)?;
    if !view.enabled {
        bail!("data plane at {} is not enabled", pin_root.display());
    }
    let plane = view.service(id, dynamic).ok_or_else(|| {
        anyhow!("service {id} (dynamic {dynamic}) not in the data plane: {view:?}")
    })?;
    match service["assignment"]["method"].as_str() {
        Some("hash") => {
            let shown = bucket_owners(service).ok_or_else(|| anyhow!("no buckets in show"))?;
            if plane.mask || plane.slots != shown {
                bail!(
                    "data plane buckets {:?}\ndiffer from show's {:?}",
                    plane.slots,
                    shown
                );
            }
        }
        Some("mask") => {
            if !plane.mask {
                bail!("show says mask, the data plane has hash: {plane:?}");
            }
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for e in plane.slots.iter().flatten() {
                *counts.entry(e.to_string()).or_default() += 1;
            }
            if counts != slots(service) {
                bail!(
                    "data plane values per engine {counts:?} differ from show's {:?}",
                    slots(service)
                );
            }
        }
        other => bail!("no assignment method in show: {other:?}"),
    }
    // Each engine is reached the way it negotiated (GRE or L2 rewrite).
    for (addr, method) in &plane.methods {
        let shown = engine(service, *addr).map(|e| e["forwarding"].clone());
        let want = match shown.as_ref().and_then(Value::as_str) {
            Some("gre") => redirector_ebpf::layout::METHOD_GRE,
            Some("l2") => redirector_ebpf::layout::METHOD_L2,
            other => bail!("data plane engine {addr} has no forwarding method in show: {other:?}"),
        };
        if *method != want {
            bail!("data plane engine {addr}: method {method}, show says {shown:?}");
        }
    }
    Ok(())
}
