//! The Prometheus endpoint: after a join as the only (so designated) engine, the text
//! exposition counts messages by type and direction, shows 256 buckets held and
//! designated = 1; anything but `/metrics` is a 404.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use common::{web_cache, Agent, TestRouter};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn metrics_reflect_the_join() {
    let port = 20_484;
    let engine = Ipv4Addr::new(127, 0, 5, 2);
    let dir = common::scratch("metrics");
    let mut router = TestRouter::new(Ipv4Addr::new(127, 0, 5, 1), port, web_cache(None));
    let metrics = "127.0.0.1:29484";
    let agent = Agent::start(
        &dir,
        "agent",
        &format!(
            "address = \"127.0.5.2\"\nrouters = [\"127.0.5.1\"]\nport = {port}\nmetrics = \"{metrics}\"\n[timers]\nhere_i_am_ms = 200\n[[service]]\nid = 0\nweight = 1\n"
        ),
    );
    assert!(
        router.pump(Duration::from_secs(10), |r| r.slots().get(&engine)
            == Some(&256)),
        "{}",
        agent.log_text()
    );
    // Let the router's next I-See-You tell the agent which buckets it holds.
    router.pump(Duration::from_millis(600), |_| false);
    let body = get(metrics, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "wccp_engine_messages_total{service=\"standard/0\",type=\"here_i_am\",direction=\"out\"}",
        "wccp_engine_messages_total{service=\"standard/0\",type=\"i_see_you\",direction=\"in\"}",
        "wccp_engine_messages_total{service=\"standard/0\",type=\"redirect_assign\",direction=\"out\"}",
        "wccp_engine_buckets_held{service=\"standard/0\"} 256",
        "wccp_engine_designated{service=\"standard/0\"} 1",
        "wccp_engine_routers{service=\"standard/0\"} 1",
    ] {
        assert!(body.contains(want), "missing {want} in\n{body}");
    }
    assert!(get(metrics, "/other").starts_with("HTTP/1.1 404"));
}
