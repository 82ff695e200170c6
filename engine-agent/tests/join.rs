//! One engine-agent and an in-test router (`wccp::router::Router`) on loopback: the
//! Here-I-Am is what the config says, the agent joins, becomes the designated engine,
//! assigns after 1.5 T, `show --json` reflects it; SIGHUP changes the weight without
//! leaving; a bad reload is refused; SIGTERM leaves with SHUTDOWN.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{web_cache, Agent, TestRouter};
use wccp::wire::{
    md5_is_valid, AssignmentData, AssignmentMethods, Command, Component, ForwardingMethods,
    Message, MessageType, ReturnMethods,
};

const T_MS: u64 = 300;

fn config(port: u16, weight: u16) -> String {
    format!(
        "address = \"127.0.3.2\"\nrouters = [\"127.0.3.1\"]\nport = {port}\n[timers]\nhere_i_am_ms = {T_MS}\n[[service]]\nid = 0\npassword = \"pw\"\nweight = {weight}\n"
    )
}

fn weight_of(m: &Message) -> Option<u16> {
    m.components.iter().find_map(|c| match c {
        Component::WebCacheIdentity(w) => match &w.identity.assignment {
            AssignmentData::Hash(h) => Some(h.weight),
            _ => None,
        },
        _ => None,
    })
}

fn lists_router(m: &Message, r: Ipv4Addr) -> bool {
    m.components.iter().any(|c| match c {
        Component::WebCacheView(v) => v.routers.iter().any(|x| x.address.ipv4() == Some(r)),
        _ => false,
    })
}

#[test]
fn join_assign_show_reload_and_shutdown() {
    let port = 20_482;
    let engine = Ipv4Addr::new(127, 0, 3, 2);
    let rid = Ipv4Addr::new(127, 0, 3, 1);
    let dir = common::scratch("join");
    let mut router = TestRouter::new(rid, port, web_cache(Some("pw")));
    let mut agent = Agent::start(&dir, "agent", &config(port, 7));

    // The first Here-I-Am: service, weight, capabilities, MD5 with the password.
    assert!(router.pump(Duration::from_secs(5), |r| !r
        .messages(MessageType::HereIAm)
        .is_empty()));
    let (_, from, hia, bytes) = router.messages(MessageType::HereIAm).remove(0);
    assert_eq!(from, engine);
    assert_eq!(hia.service().map(|s| s.service_id), Some(0));
    assert_eq!(weight_of(&hia), Some(7));
    let caps = hia.capabilities().expect("capabilities");
    assert_eq!(caps.forwarding(), Some(ForwardingMethods::GRE));
    assert_eq!(caps.assignment(), Some(AssignmentMethods::HASH));
    assert_eq!(caps.return_methods(), Some(ReturnMethods::GRE));
    assert!(md5_is_valid(&bytes, b"pw"));
    assert!(!md5_is_valid(&bytes, b"wrong"));

    // The only engine is designated: a Redirect-Assign, no sooner than 1.5 T after the
    // view settled, and the router programs all 256 buckets to it.
    assert!(
        router.pump(Duration::from_secs(10), |r| r.designated() == Some(engine)
            && r.slots().get(&engine) == Some(&256)),
        "no assignment: {}",
        agent.log_text()
    );
    let first_isy_answered = router
        .messages(MessageType::HereIAm)
        .into_iter()
        .find(|(_, _, m, _)| lists_router(m, rid))
        .map(|x| x.0)
        .expect("a Here-I-Am reflecting the router");
    let (ra_at, _, ra, ra_bytes) = router.messages(MessageType::RedirectAssign).remove(0);
    assert!(md5_is_valid(&ra_bytes, b"pw"));
    assert!(ra.service().is_some());
    let waited = ra_at.saturating_since(first_isy_answered);
    assert!(
        waited >= Duration::from_millis(T_MS * 15 / 10 - 50),
        "assigned after {waited:?}, expected >= 1.5 T"
    );

    // show --json reflects it (after the router's next I-See-You carries our buckets).
    router.pump(Duration::from_millis(3 * T_MS), |_| false);
    let st = agent.show("services");
    let s = &st["services"][0];
    assert_eq!(s["service"], "standard/0");
    assert_eq!(s["designated"], "127.0.3.2");
    assert_eq!(s["designated_is_us"], true);
    assert_eq!(s["routers"][0]["address"], "127.0.3.1");
    assert_eq!(s["assignment"]["bucket_count"], 256);
    assert!(s["messages_out"]["redirect_assign"].as_u64().unwrap_or(0) >= 1);
    assert!(s["messages_in"]["i_see_you"].as_u64().unwrap_or(0) >= 1);
    let a = agent.show("assignment");
    assert_eq!(a["services"][0]["designated_is_us"], true);
    let stats = agent.show("stats");
    assert!(
        stats["services"][0]["messages_out"]["here_i_am"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );

    // SIGHUP with a new weight: the next Here-I-Am carries it and still lists the router
    // (the engine never drops out of the group).
    let before = router.received.len();
    agent.rewrite(&config(port, 42));
    agent.signal(libc::SIGHUP);
    assert!(router.pump(Duration::from_secs(5), |r| r.received[before..]
        .iter()
        .filter_map(|(_, _, b)| Message::parse(b).ok())
        .any(|m| weight_of(&m) == Some(42))));
    let after: Vec<Message> = router.received[before..]
        .iter()
        .filter_map(|(_, _, b)| Message::parse(b).ok())
        .filter(|m| m.message_type == MessageType::HereIAm)
        .collect();
    let first_new = after
        .iter()
        .find(|m| weight_of(m) == Some(42))
        .expect("new weight");
    assert!(lists_router(first_new, rid), "reload dropped the view");
    assert_eq!(
        router.router.state().services[0].engines[0].weight,
        42,
        "router sees the new weight"
    );
    assert!(router.designated() == Some(engine));

    // A bad file on SIGHUP is refused; the agent keeps running with the old weight.
    std::fs::write(&agent.config, "address = [\n").unwrap();
    agent.signal(libc::SIGHUP);
    let before = router.received.len();
    router.pump(Duration::from_millis(3 * T_MS), |_| false);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent died on a bad reload"
    );
    assert!(router.received[before..]
        .iter()
        .filter_map(|(_, _, b)| Message::parse(b).ok())
        .any(|m| weight_of(&m) == Some(42)));
    assert!(agent.log_text().contains("reload refused"));

    // SIGTERM: a Here-I-Am with the Command Extension's SHUTDOWN; the router removes the
    // engine at once and answers; the agent exits cleanly.
    let before = router.received.len();
    agent.signal(libc::SIGTERM);
    let shut = router.pump(Duration::from_secs(5), |r| {
        r.received[before..].iter().any(|(_, _, b)| {
            Message::parse(b).is_ok_and(|m| {
                m.components.iter().any(|c| matches!(c, Component::CommandExtension(x)
                    if x.commands.iter().any(|c| matches!(c, Command::Shutdown(a) if a.ipv4() == Some(engine)))))
            })
        })
    });
    assert!(shut, "no SHUTDOWN: {}", agent.log_text());
    router.pump(Duration::from_millis(200), |_| false);
    assert!(router.router.state().services[0].engines.is_empty());
    let status = agent.wait(Duration::from_secs(5)).expect("agent exits");
    assert!(status.success());
    assert!(
        agent.log_text().contains("left the group"),
        "{}",
        agent.log_text()
    );
    assert!(!agent.socket.exists());
}
