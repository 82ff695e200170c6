//! What the lab sees, sampled a few times a second from the daemons' own `show` (over
//! their control sockets, as `show --json` prints it) and the proxies' counter files: the
//! picture the live view draws, the figures the steps check, and the history of buckets
//! per engine that becomes the SVG.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns_tests::daemons::control_request;
use serde_json::{json, Value};

use super::procs::read_stats;

/// The router's service the lab uses.
pub const SERVICE: &str = "dynamic/90";

/// One engine of the lab, as the monitor knows it.
#[derive(Clone, Debug, Default)]
pub struct EngineView {
    /// Its name in the lab (e1, e2, ...).
    pub name: String,
    /// Its address.
    pub address: Option<Ipv4Addr>,
    /// What the lab did with it: running, killed, refused, ...
    pub role: String,
    /// The router's state for it (usable, waiting, queried), or "-" when not listed.
    pub router_state: String,
    /// Buckets the router's assignment gives it.
    pub buckets: u64,
    /// Packets the router redirected to it / decapsulated from it.
    pub redirected: u64,
    /// See `redirected`.
    pub returned: u64,
    /// Requests its proxy relayed.
    pub requests: u64,
    /// The engine data plane's packet counters (`proxied_syn`, `return_rule`, ...).
    pub counters: BTreeMap<String, u64>,
    /// The agent's view: usable routers.
    pub agent_routers: u64,
}

/// The lab's state, shared by the steps, the monitor and the view.
#[derive(Debug, Default)]
pub struct State {
    /// Narration, oldest first, with the time in seconds.
    pub log: Vec<(f64, String)>,
    /// The step running now.
    pub step: String,
    /// The service group: state, designated engine.
    pub group_state: String,
    /// See `group_state`.
    pub designated: String,
    /// Engines, in lab order.
    pub engines: Vec<EngineView>,
    /// The 256 bucket owners (index into `engines`), from the router.
    pub owners: Vec<Option<usize>>,
    /// Router counters: security drops, redirected, failed open.
    pub security_drops: u64,
    /// See `security_drops`.
    pub failed_open: u64,
    /// Short requests ok / failed, and long-lived flows alive / broken.
    pub requests_ok: u64,
    /// See `requests_ok`.
    pub requests_failed: u64,
    /// See `requests_ok`.
    pub long_alive: u64,
    /// See `requests_ok`.
    pub long_broken: u64,
    /// Buckets per engine over time: (seconds, per engine index).
    pub history: Vec<(f64, Vec<u64>)>,
    /// The router's last `show` document.
    pub router_doc: Value,
    /// Samples taken.
    pub samples: u64,
}

/// Where the monitor reads each engine from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The agent's control socket, once started.
    pub agent_socket: Option<PathBuf>,
    /// The proxy's counters file.
    pub proxy_stats: PathBuf,
}

/// The monitor thread's handle.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Samples every 250 ms until stopped.
    pub fn start(
        state: Arc<Mutex<State>>,
        router_socket: PathBuf,
        sources: Arc<Mutex<Vec<Source>>>,
        t0: Instant,
    ) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let srcs = sources.lock().unwrap().clone();
                sample(&state, &router_socket, &srcs, t0);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Monitor {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The router's `show` document, or Null.
pub fn router_show(socket: &std::path::Path) -> Value {
    control_request(socket, &json!({"command": "show"}))
        .ok()
        .filter(|v| v["ok"] == true)
        .map(|v| v["result"].clone())
        .unwrap_or(Value::Null)
}

/// The service of the lab in a router document.
pub fn service(doc: &Value) -> Value {
    doc["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["service"] == SERVICE).cloned())
        .unwrap_or(Value::Null)
}

/// Buckets per engine address in a service of the router's `show`.
pub fn bucket_owners(svc: &Value) -> Vec<Option<Ipv4Addr>> {
    svc["assignment"]["buckets"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|b| b.as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_else(|| vec![None; 256])
}

fn sample(state: &Mutex<State>, router: &std::path::Path, srcs: &[Source], t0: Instant) {
    let doc = router_show(router);
    let svc = service(&doc);
    let owners = bucket_owners(&svc);
    let agents: Vec<Value> = srcs
        .iter()
        .map(|s| {
            s.agent_socket
                .as_ref()
                .and_then(|p| control_request(p, &json!({"command": "show"})).ok())
                .filter(|v| v["result"] == "status")
                .map(|v| v["data"].clone())
                .unwrap_or(Value::Null)
        })
        .collect();
    let proxies: Vec<(u64, u64)> = srcs.iter().map(|s| read_stats(&s.proxy_stats)).collect();
    let t = t0.elapsed().as_secs_f64();
    let mut st = state.lock().unwrap();
    st.samples += 1;
    if doc.is_null() {
        return;
    }
    st.group_state = svc["state"].as_str().unwrap_or("-").to_string();
    st.designated = svc["designated"].as_str().unwrap_or("-").to_string();
    st.security_drops = svc["counters"]["drop.security"].as_u64().unwrap_or(0);
    st.failed_open = svc["packets"]["failed_open"].as_u64().unwrap_or(0);
    let index: BTreeMap<Ipv4Addr, usize> = st
        .engines
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.address.map(|a| (a, i)))
        .collect();
    st.owners = owners
        .iter()
        .map(|o| o.and_then(|a| index.get(&a).copied()))
        .collect();
    let listed: BTreeMap<String, Value> = svc["engines"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| (e["address"].as_str().unwrap_or("").to_string(), e.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut per = Vec::new();
    for i in 0..st.engines.len() {
        let addr = st.engines[i].address;
        let buckets = owners
            .iter()
            .filter(|o| **o == addr && addr.is_some())
            .count() as u64;
        let e = &mut st.engines[i];
        e.buckets = buckets;
        per.push(buckets);
        let key = addr.map(|a| a.to_string()).unwrap_or_default();
        match listed.get(&key) {
            Some(r) => {
                e.router_state = r["state"].as_str().unwrap_or("?").to_string();
                // As the router reports them; the last values stay once it stops listing the
                // engine.
                e.redirected = r["packets_redirected"].as_u64().unwrap_or(0);
                e.returned = r["packets_returned"].as_u64().unwrap_or(0);
            }
            None => e.router_state = "-".into(),
        }
        if let Some(a) = agents.get(i).filter(|a| !a.is_null()) {
            if let Some(c) = a["dataplane"]["counters"].as_object() {
                e.counters = c
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect();
            }
            e.agent_routers = a["services"][0]["routers"]
                .as_array()
                .map_or(0, |r| r.len() as u64);
        }
        if let Some((req, _)) = proxies.get(i) {
            e.requests = e.requests.max(*req);
        }
    }
    st.history.push((t, per));
    st.router_doc = doc;
}
