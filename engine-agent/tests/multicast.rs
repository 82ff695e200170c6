//! A multicast service group on loopback: the agent announces to the group address, hears
//! the router's group I-See-You on its group socket, and as the only engine assigns all
//! 256 buckets; `show` reflects it.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{web_cache, Agent, TestRouter};
use wccp::wire::MessageType;

#[test]
fn joins_a_multicast_group() {
    let port = 20_486;
    let group = Ipv4Addr::new(224, 0, 1, 86);
    let engine = Ipv4Addr::new(127, 0, 8, 2);
    let dir = common::scratch("multicast");
    let mut svc = web_cache(None);
    svc.multicast = Some(group);
    svc.timers.multicast_interval = Duration::from_millis(300);
    let mut router = TestRouter::multicast(Ipv4Addr::new(127, 0, 8, 1), group, port, svc);
    let agent = Agent::start(
        &dir,
        "agent",
        &format!("address = \"127.0.8.2\"\nmulticast = \"{group}\"\nport = {port}\n[timers]\nhere_i_am_ms = 300\n[[service]]\nid = 0\nweight = 5\n"),
    );
    assert!(
        router.pump(Duration::from_secs(10), |r| r.slots().get(&engine)
            == Some(&256)),
        "{}",
        agent.log_text()
    );
    assert!(router
        .messages(MessageType::HereIAm)
        .iter()
        .all(|(_, from, _, _)| *from == engine));
    router.pump(Duration::from_millis(700), |_| false);
    let s = agent.show("services");
    assert_eq!(s["multicast"], group.to_string());
    assert_eq!(s["services"][0]["designated_is_us"], true);
    assert_eq!(s["services"][0]["assignment"]["bucket_count"], 256);
}
