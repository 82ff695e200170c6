//! Two engine-agents and one in-test router on loopback: the lower address is the
//! designated engine and splits the buckets by weight; when one stops (`engine-agent
//! stop`, which sends SHUTDOWN), the other ends up holding all 256 buckets.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::{web_cache, Agent, TestRouter};

fn config(addr: &str, port: u16, weight: u16) -> String {
    format!(
        "address = \"{addr}\"\nrouters = [\"127.0.4.1\"]\nport = {port}\n[timers]\nhere_i_am_ms = 300\n[[service]]\nid = 0\nweight = {weight}\n"
    )
}

#[test]
fn buckets_split_by_weight_then_move_to_the_survivor() {
    let port = 20_483;
    let a = Ipv4Addr::new(127, 0, 4, 2);
    let b = Ipv4Addr::new(127, 0, 4, 3);
    let dir = common::scratch("two");
    let mut router = TestRouter::new(Ipv4Addr::new(127, 0, 4, 1), port, web_cache(None));
    let agent_a = Agent::start(&dir, "a", &config("127.0.4.2", port, 1));
    let mut agent_b = Agent::start(&dir, "b", &config("127.0.4.3", port, 3));

    let split = router.pump(Duration::from_secs(15), |r| {
        let s = r.slots();
        s.get(&a) == Some(&64) && s.get(&b) == Some(&192)
    });
    assert!(
        split,
        "buckets {:?}\nA: {}\nB: {}",
        router.slots(),
        agent_a.log_text(),
        agent_b.log_text()
    );
    assert_eq!(router.designated(), Some(a));
    router.pump(Duration::from_millis(900), |_| false);
    let sb = agent_b.show("services");
    assert_eq!(sb["services"][0]["designated"], "127.0.4.2");
    assert_eq!(sb["services"][0]["designated_is_us"], false);
    assert_eq!(sb["services"][0]["assignment"]["bucket_count"], 192);

    // Stop B: the router drops it at once (SHUTDOWN), A reassigns everything to itself.
    let stopper = std::thread::spawn({
        let sock = agent_b.socket.clone();
        move || {
            Command::new(common::bin())
                .args(["stop", "-s"])
                .arg(sock)
                .output()
                .expect("stop")
        }
    });
    let all = router.pump(Duration::from_secs(10), |r| {
        let s = r.slots();
        s.get(&a) == Some(&256) && !s.contains_key(&b)
    });
    let out = stopper.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all, "buckets {:?}: {}", router.slots(), agent_a.log_text());
    assert!(agent_b
        .wait(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}
