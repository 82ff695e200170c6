//! Bridges: a router and two engines on one L2 segment, as WCCP's L2 forwarding needs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Result;
use netns_tests::netns::{Host, Lab};

/// Connects from `from` to `addr` and reads the greeting the listener sends.
fn greeting(from: &Host, addr: &str) -> Result<String> {
    let addr: std::net::SocketAddr = addr.parse()?;
    Ok(from.in_ns(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })??)
}

/// Starts a thread in `host` that greets `n` connections on `addr` with the host's name.
fn greeter(host: &Host, addr: &str, n: usize) -> Result<netns_tests::netns::NsThread<()>> {
    let addr = addr.to_string();
    let listener = host.in_ns(move || TcpListener::bind(addr))??;
    let name = host.name().to_string();
    host.thread(move || {
        for _ in 0..n {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(name.as_bytes()).expect("write");
        }
    })
}

#[test]
fn switch_joins_router_and_two_engines() -> Result<()> {
    let lab = Lab::new("hbridge")?;
    let router = lab.host("router")?;
    let e1 = lab.host("engine1")?;
    let e2 = lab.host("engine2")?;
    let lan = lab.switch("lan", &[(&router, "eth1"), (&e1, "eth0"), (&e2, "eth0")])?;
    let mut ports = lan.interfaces()?;
    ports.sort();
    assert_eq!(ports, ["br0", "lo", "p0", "p1", "p2"]);
    router.add_addr("eth1", "10.77.3.1/24")?;
    e1.add_addr("eth0", "10.77.3.11/24")?;
    e2.add_addr("eth0", "10.77.3.12/24")?;

    let t1 = greeter(&e1, "10.77.3.11:7002", 2)?;
    let t2 = greeter(&e2, "10.77.3.12:7002", 1)?;
    assert_eq!(greeting(&router, "10.77.3.11:7002")?, "engine1");
    assert_eq!(greeting(&router, "10.77.3.12:7002")?, "engine2");
    // Engine to engine across the bridge, too.
    assert_eq!(greeting(&e2, "10.77.3.11:7002")?, "engine1");
    t1.join();
    t2.join();
    Ok(())
}

#[test]
fn bridge_on_the_router_itself() -> Result<()> {
    let lab = Lab::new("hbridge")?;
    let router = lab.host("router")?;
    let e1 = lab.host("engine1")?;
    let e2 = lab.host("engine2")?;
    lab.link(&router, "eth1", &e1, "eth0")?;
    lab.link(&router, "eth2", &e2, "eth0")?;
    lab.bridge(&router, "br0", &["eth1", "eth2"])?;
    router.add_addr("br0", "10.77.4.1/24")?;
    e1.add_addr("eth0", "10.77.4.11/24")?;
    e2.add_addr("eth0", "10.77.4.12/24")?;
    let t1 = greeter(&e1, "10.77.4.11:7003", 1)?;
    let t2 = greeter(&e2, "10.77.4.12:7003", 1)?;
    assert_eq!(greeting(&router, "10.77.4.11:7003")?, "engine1");
    assert_eq!(greeting(&e1, "10.77.4.12:7003")?, "engine2");
    t1.join();
    t2.join();
    Ok(())
}
