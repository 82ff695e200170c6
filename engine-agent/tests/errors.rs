//! Errors are counted by kind and never stop the agent: a datagram that does not parse,
//! and an I-See-You signed with the wrong password (made by a real `wccp::router::Router`
//! talking to an in-process engine that shares the agent's address but not its password).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use common::{web_cache, Agent};
use wccp::engine::{self, Engine, EngineConfig};
use wccp::router::{self, Router, RouterConfig};
use wccp::time::Instant;
use wccp::wire::{MessageType, ServiceInfo};

#[test]
fn garbage_and_wrong_password_are_counted() {
    let port = 20_485;
    let engine_addr = Ipv4Addr::new(127, 0, 6, 2);
    let router_addr = Ipv4Addr::new(127, 0, 6, 1);
    let dir = common::scratch("errors");
    let rsock = UdpSocket::bind(SocketAddrV4::new(router_addr, port)).unwrap();
    let agent = Agent::start(
        &dir,
        "agent",
        &format!("address = \"127.0.6.2\"\nrouters = [\"127.0.6.1\"]\nport = {port}\n[[service]]\nid = 0\npassword = \"pw\"\n"),
    );
    let to = SocketAddrV4::new(engine_addr, port);
    rsock
        .send_to(b"\x00\x00\x00\x0b\x02\x00\xff\xff", to)
        .unwrap();

    // An I-See-You for the agent's address, signed with "zz".
    let mut rcfg = web_cache(Some("zz"));
    rcfg.password = Some(b"zz".to_vec());
    let mut r = Router::new(RouterConfig {
        router_id: router_addr,
        services: vec![rcfg],
        jitter_seed: 1,
    });
    let mut ecfg = EngineConfig::new(engine_addr, ServiceInfo::web_cache(), vec![router_addr]);
    ecfg.password = Some(b"zz".to_vec());
    let mut e = Engine::new(ecfg);
    let hia = e
        .start(Instant::ZERO)
        .into_iter()
        .find_map(|a| match a {
            engine::Action::Send(t) => Some(t.bytes),
            _ => None,
        })
        .unwrap();
    let isy = r
        .handle_message(engine_addr, &hia, Instant::ZERO)
        .into_iter()
        .find_map(|a| match a {
            router::Action::Send(t) if t.message.message_type == MessageType::ISeeYou => {
                Some(t.bytes)
            }
            _ => None,
        })
        .unwrap();
    rsock.send_to(&isy, to).unwrap();

    let mut ok = false;
    for _ in 0..100 {
        let st = agent.show("stats");
        let malformed: u64 = st["errors"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("malformed."))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        if malformed == 1 && st["services"][0]["errors"]["security"] == 1 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "{}", agent.show("stats"));
    let s = agent.show("services");
    assert_eq!(
        s["services"][0]["routers"].as_array().map(Vec::len),
        Some(0)
    );
    assert!(
        agent.log_text().contains("\"reason\":\"security\""),
        "{}",
        agent.log_text()
    );
}
