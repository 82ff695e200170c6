//! Prometheus metrics, served as text on an optional HTTP address.
//!
//! The counters are atomics updated by the daemon's one protocol task; the HTTP task only
//! encodes them, so a slow scraper never holds up the protocol. The HTTP side is a minimal
//! GET handler (no framework): it answers `/metrics` and nothing else, and reads at most a
//! few kilobytes per request, so no input can make it allocate without bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Labels of a message counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The service group (`standard/0`, `dynamic/90`).
    pub service: String,
    /// Message type (`here_i_am`, `i_see_you`, ...).
    pub r#type: String,
    /// `in` or `out`.
    pub direction: String,
}

/// Labels of an error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The service group, or `none` for datagrams no service claims.
    pub service: String,
    /// The error's stable kind.
    pub kind: String,
}

/// Labels of a per-service gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service group.
    pub service: String,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// WCCP messages by service, type and direction.
    pub messages: Family<MessageLabels, Counter>,
    /// Errors by service and kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Hash buckets (or mask values) this engine holds, per service.
    pub buckets_held: Family<ServiceLabels, Gauge>,
    /// 1 when this engine is the designated engine of the service.
    pub designated: Family<ServiceLabels, Gauge>,
    /// Routers that answer this engine, per service.
    pub routers: Family<ServiceLabels, Gauge>,
    /// 1 while the local proxy answers the liveness check (absent without the check).
    pub proxy_up: Gauge,
    /// The engine data plane's packet counters, by counter name.
    pub dataplane: Family<CounterLabels, Counter>,
}

/// Label of a data-plane counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    /// Its name (`proxied_syn`, `return_no_socket`, `stranger`, ...).
    pub counter: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered (prefix `wccp_engine`).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wccp_engine");
        let messages = Family::<MessageLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let buckets_held = Family::<ServiceLabels, Gauge>::default();
        let designated = Family::<ServiceLabels, Gauge>::default();
        let routers = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "messages",
            "WCCP messages by service, type and direction",
            messages.clone(),
        );
        registry.register(
            "errors",
            "Errors by service and kind (dropped messages, send failures)",
            errors.clone(),
        );
        registry.register(
            "buckets_held",
            "Hash buckets or mask values assigned to this engine",
            buckets_held.clone(),
        );
        registry.register(
            "designated",
            "1 when this engine is the service's designated engine",
            designated.clone(),
        );
        registry.register("routers", "Routers answering this engine", routers.clone());
        let proxy_up = Gauge::default();
        registry.register(
            "proxy_up",
            "1 while the local proxy answers its liveness check",
            proxy_up.clone(),
        );
        let dataplane = Family::<CounterLabels, Counter>::default();
        registry.register(
            "dataplane_packets",
            "Packets the engine data plane counted, by counter",
            dataplane.clone(),
        );
        Metrics {
            proxy_up,
            dataplane,
            registry,
            messages,
            errors,
            buckets_held,
            designated,
            routers,
        }
    }

    /// Counts one message.
    pub fn message(&self, service: &str, kind: &str, direction: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                service: service.to_string(),
                r#type: kind.to_string(),
                direction: direction.to_string(),
            })
            .inc();
    }

    /// Counts one error.
    pub fn error(&self, service: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                service: service.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Sets the per-service gauges.
    pub fn service(&self, service: &str, buckets: usize, designated: bool, routers: usize) {
        let l = ServiceLabels {
            service: service.to_string(),
        };
        self.buckets_held
            .get_or_create(&l)
            .set(i64::try_from(buckets).unwrap_or(i64::MAX));
        self.designated.get_or_create(&l).set(i64::from(designated));
        self.routers
            .get_or_create(&l)
            .set(i64::try_from(routers).unwrap_or(i64::MAX));
    }

    /// Drops a removed service's gauges, so a scrape never shows a group we left.
    pub fn forget(&self, service: &str) {
        let l = ServiceLabels {
            service: service.to_string(),
        };
        self.buckets_held.remove(&l);
        self.designated.remove(&l);
        self.routers.remove(&l);
    }

    /// The text exposition.
    /// Brings the data-plane counters up to `now` (the program's totals), given what was
    /// exported before; a total that went down (a new program) starts over from it.
    pub fn dataplane(&self, now: &BTreeMap<String, u64>, exported: &mut BTreeMap<String, u64>) {
        for (name, &total) in now {
            let before = exported.get(name).copied().unwrap_or(0);
            let delta = if total >= before {
                total - before
            } else {
                total
            };
            if delta > 0 {
                self.dataplane
                    .get_or_create(&CounterLabels {
                        counter: name.clone(),
                    })
                    .inc_by(delta);
            }
            exported.insert(name.clone(), total);
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("");
            let (status, body, ctype) = if path == "/metrics" {
                (
                    "200 OK",
                    metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                ("404 Not Found", "not found\n".to_string(), "text/plain")
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
