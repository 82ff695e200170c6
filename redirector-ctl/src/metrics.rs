//! Prometheus metrics, rendered from the same [`Status`] that `show` prints, so that the
//! two never disagree. A fresh registry per scrape: every value is a snapshot of counters
//! the controller already keeps, and scrapes are rare.
//!
//! Metrics (all prefixed `wccp_`):
//! - `wccp_messages_total{direction="in"|"out",type}`: WCCP messages by type.
//! - `wccp_errors_total{kind}`: dropped messages and driver errors by kind.
//! - `wccp_events_total{kind}`: protocol events by kind.
//! - `wccp_usable_engines{service}`: usable engines per service group.
//! - `wccp_engines{service}`: engines per service group, usable or not.
//! - `wccp_engine_slots{service,engine}`: buckets or mask values each engine holds.
//! - `wccp_dataplane_engine_packets_total{engine,what="redirected"|"returned"}`.
//! - `wccp_dataplane_service_packets_total{service,what="redirected"|"failed_open"}`.
//! - `wccp_engine_next_hop_resolved{service,engine}`: 1 when the data plane can reach the
//!   engine (next hop resolved for its forwarding method), 0 when its buckets fail open.
//! - `wccp_next_hop_lookups_total{result="resolved"|"unresolved"}`: next-hop lookups.
//! - `wccp_next_hop_changes_total`: times an engine's next hop changed (MAC moved, ...).
//! - `wccp_next_hop_triggers_total`: neighbour resolutions asked of the kernel.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::Status;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The Prometheus text exposition of `status`.
pub fn render(status: &Status) -> String {
    let mut reg = Registry::default();
    let messages = Family::<Labels, Counter>::default();
    for (dir, map) in [
        ("in", &status.stats.messages_in),
        ("out", &status.stats.messages_out),
    ] {
        for (t, v) in map {
            messages
                .get_or_create(&labels(&[("direction", dir), ("type", t)]))
                .inc_by(*v);
        }
    }
    reg.register(
        "wccp_messages",
        "WCCP messages by direction and type",
        messages,
    );
    let errors = Family::<Labels, Counter>::default();
    for (k, v) in &status.stats.errors {
        errors.get_or_create(&labels(&[("kind", k)])).inc_by(*v);
    }
    reg.register(
        "wccp_errors",
        "Dropped messages and controller errors by kind",
        errors,
    );
    let events = Family::<Labels, Counter>::default();
    for (k, v) in &status.stats.events {
        events.get_or_create(&labels(&[("kind", k)])).inc_by(*v);
    }
    reg.register("wccp_events", "Protocol events by kind", events);
    let usable = Family::<Labels, Gauge>::default();
    let engines = Family::<Labels, Gauge>::default();
    let slots = Family::<Labels, Gauge>::default();
    let svc_packets = Family::<Labels, Counter>::default();
    for s in &status.services {
        let n = s.engines.iter().filter(|e| e.state == "usable").count();
        usable
            .get_or_create(&labels(&[("service", &s.service)]))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        engines
            .get_or_create(&labels(&[("service", &s.service)]))
            .set(i64::try_from(s.engines.len()).unwrap_or(i64::MAX));
        for e in &s.engines {
            slots
                .get_or_create(&labels(&[
                    ("service", &s.service),
                    ("engine", &e.address.to_string()),
                ]))
                .set(i64::try_from(e.slots).unwrap_or(i64::MAX));
        }
        svc_packets
            .get_or_create(&labels(&[("service", &s.service), ("what", "redirected")]))
            .inc_by(s.packets.redirected);
        svc_packets
            .get_or_create(&labels(&[("service", &s.service), ("what", "failed_open")]))
            .inc_by(s.packets.failed_open);
    }
    reg.register(
        "wccp_usable_engines",
        "Usable engines per service group",
        usable,
    );
    reg.register(
        "wccp_engines",
        "Engines per service group, usable or not",
        engines,
    );
    reg.register(
        "wccp_engine_slots",
        "Buckets or mask values held per engine",
        slots,
    );
    reg.register(
        "wccp_dataplane_service_packets",
        "Data-plane packets per service group",
        svc_packets,
    );
    let eng_packets = Family::<Labels, Counter>::default();
    for (addr, c) in &status.stats.dataplane.engines {
        let a = addr.to_string();
        eng_packets
            .get_or_create(&labels(&[("engine", &a), ("what", "redirected")]))
            .inc_by(c.redirected);
        eng_packets
            .get_or_create(&labels(&[("engine", &a), ("what", "returned")]))
            .inc_by(c.returned);
    }
    reg.register(
        "wccp_dataplane_engine_packets",
        "Data-plane packets per engine",
        eng_packets,
    );
    let resolved = Family::<Labels, Gauge>::default();
    for s in &status.services {
        for e in &s.engines {
            resolved
                .get_or_create(&labels(&[
                    ("service", &s.service),
                    ("engine", &e.address.to_string()),
                ]))
                .set(i64::from(e.next_hop.state == "resolved"));
        }
    }
    reg.register(
        "wccp_engine_next_hop_resolved",
        "1 when the engine's next hop is resolved (the data plane redirects to it), else 0",
        resolved,
    );
    let hops = &status.stats.next_hops;
    let lookups = Family::<Labels, Counter>::default();
    lookups
        .get_or_create(&labels(&[("result", "resolved")]))
        .inc_by(hops.resolved);
    lookups
        .get_or_create(&labels(&[("result", "unresolved")]))
        .inc_by(hops.unresolved);
    reg.register(
        "wccp_next_hop_lookups",
        "Next-hop lookups (route, interface, neighbour) by result",
        lookups,
    );
    let changes = Counter::<u64>::default();
    changes.inc_by(hops.changes);
    reg.register(
        "wccp_next_hop_changes",
        "Times an engine's next hop changed",
        changes,
    );
    let triggers = Counter::<u64>::default();
    triggers.inc_by(hops.triggers);
    reg.register(
        "wccp_next_hop_triggers",
        "Neighbour resolutions asked of the kernel",
        triggers,
    );
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}
