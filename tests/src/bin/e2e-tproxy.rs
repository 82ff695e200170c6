//! A small transparent proxy for the end-to-end tests: it listens on the wildcard address
//! with `IP_TRANSPARENT` (what the engine data plane needs to hand it redirected flows),
//! connects to each flow's original destination (its accepted socket's local address)
//! from the engine's own address, and relays both ways. One line per event on stdout:
//!
//! ```text
//! listening 0.0.0.0:3129
//! accept 10.1.0.2:40000 -> 10.9.0.1:80
//! upstream 10.1.0.2:40000 -> 10.9.0.1:80 via 10.2.0.11:51234
//! close 10.1.0.2:40000 -> 10.9.0.1:80 up 77 down 1234
//! failed 10.1.0.2:40000 -> 10.9.0.1:80: connection refused
//! check 127.0.0.1:41000
//! ```
//!
//! A connection to the proxy's own port (engine-agent's liveness check) is closed at once.
//!
//! Usage: `e2e-tproxy PORT`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Copies `from` to `to` until EOF, then half-closes `to`; returns the bytes copied.
fn pump(mut from: TcpStream, mut to: TcpStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n as u64;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    total
}

fn serve(client: TcpStream, peer: SocketAddr, port: u16) {
    let Ok(original) = client.local_addr() else {
        return;
    };
    if original.port() == port {
        // A connection to the proxy's own port (the agent's liveness check): relaying it
        // would connect to ourselves, forever.
        println!("check {peer}");
        return;
    }
    println!("accept {peer} -> {original}");
    let upstream = match TcpStream::connect_timeout(&original, Duration::from_secs(5)) {
        Ok(u) => u,
        Err(e) => {
            println!("failed {peer} -> {original}: {e}");
            return;
        }
    };
    let via = upstream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("upstream {peer} -> {original} via {via}");
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(c2, u2));
    let down = pump(upstream, client);
    let up = up.join().unwrap_or(0);
    println!("close {peer} -> {original} up {up} down {down}");
}

fn main() {
    let port: u16 = match std::env::args().nth(1).and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("usage: e2e-tproxy PORT");
            std::process::exit(2);
        }
    };
    let l = match netns_tests::sockets::wildcard_listener(port, true, true, 512) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("e2e-tproxy: listening on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening 0.0.0.0:{port}");
    for conn in l.incoming() {
        match conn {
            Ok(c) => {
                let peer = match c.peer_addr() {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                std::thread::spawn(move || serve(c, peer, port));
            }
            Err(e) => eprintln!("e2e-tproxy: accept: {e}"),
        }
    }
}
