//! Real TCP across namespaces: client — router — server over two veth links, with forwarding
//! on the router and routes on the ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use netns_tests::netns::{Host, Lab};

/// client 10.77.1.2 — eth0 [router] eth1 — 10.77.2.2 server
fn three_hosts(lab: &Lab) -> Result<(Host, Host, Host)> {
    let client = lab.host("client")?;
    let router = lab.host("router")?;
    let server = lab.host("server")?;
    lab.link(&client, "eth0", &router, "eth0")?;
    lab.link(&router, "eth1", &server, "eth0")?;
    client.add_addr("eth0", "10.77.1.2/24")?;
    router.add_addr("eth0", "10.77.1.1/24")?;
    router.add_addr("eth1", "10.77.2.1/24")?;
    server.add_addr("eth0", "10.77.2.2/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    client.add_route("default", "10.77.1.1")?;
    server.add_route("10.77.1.0/24", "10.77.2.1")?;
    Ok((client, router, server))
}

#[test]
fn tcp_from_client_to_server_through_router_in_process() -> Result<()> {
    let lab = Lab::new("hroute")?;
    let (client, router, server) = three_hosts(&lab)?;
    assert_eq!(router.sysctl_get("net.ipv4.ip_forward")?, "1");
    assert_eq!(client.sysctl_get("net.ipv4.ip_forward")?, "0");
    let mut ifs = router.interfaces()?;
    ifs.sort();
    assert_eq!(ifs, ["eth0", "eth1", "lo"]);
    assert_eq!(router.mtu("eth1")?, 1500);
    assert_ne!(router.mac("eth0")?, client.mac("eth0")?);
    assert!(router.ifindex("eth1")? > 1);
    assert_eq!(server.addrs("eth0")?, vec![("10.77.2.2".parse()?, 24)]);

    // The listener is made in the server's namespace and stays there; accepting on a
    // thread of the server's namespace as well.
    let listener = server.in_ns(|| TcpListener::bind("10.77.2.2:7001"))??;
    let echo = server.thread(move || -> std::io::Result<Vec<u8>> {
        let (mut s, peer) = listener.accept()?;
        assert_eq!(peer.ip().to_string(), "10.77.1.2", "no NAT on the way");
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        s.write_all(&got.to_ascii_uppercase())?;
        Ok(got)
    })?;
    server.wait_tcp_listen(7001, Duration::from_secs(5))?;

    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sent = payload.clone();
    let reply = client.in_ns(move || -> std::io::Result<Vec<u8>> {
        let mut s =
            TcpStream::connect_timeout(&"10.77.2.2:7001".parse().unwrap(), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&sent)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        Ok(back)
    })??;
    assert_eq!(echo.join()?, payload);
    assert_eq!(reply, payload.to_ascii_uppercase());
    lab.teardown()
}

#[test]
fn curl_from_client_to_socat_on_server_through_router() -> Result<()> {
    let lab = Lab::new("hroute")?;
    let (client, _router, server) = three_hosts(&lab)?;
    let body = "hello through the router\n";
    let response = lab.scratch_dir().join("response");
    std::fs::write(
        &response,
        format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )?;
    let _srv = server.spawn(Command::new("socat").args([
        "-d",
        "-d",
        "TCP-LISTEN:8080,bind=10.77.2.2,reuseaddr,fork",
        // Read the request (up to its blank line) before answering: a server that closes
        // with request bytes unread sends a RST, which can destroy the response in flight
        // (curl: "Empty reply from server").
        &format!("SYSTEM:sed -n '/^\\r$/q'; cat {}", response.display()),
    ]))?;
    server.wait_tcp_listen(8080, Duration::from_secs(10))?;
    let out = client.run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        "http://10.77.2.2:8080/",
    ]))?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), body);
    Ok(())
}
