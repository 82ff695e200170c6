//! The lab's own small programs, run as hidden `xtask` subcommands inside the lab's hosts
//! so that each is a process of its own: the demo kills an engine's proxy with SIGKILL, and
//! teardown finds every process by its namespace.
//!
//! - `lab-proxy`: the engine's transparent proxy. Its listener is on the wildcard address
//!   with `IP_TRANSPARENT` (what the engine data plane hands redirected flows to); each
//!   accepted connection's local address is the client's original destination, which the
//!   proxy connects to from the engine's own address, relaying both ways.
//! - `lab-server`: the HTTP server. Each answer names the peer it saw, so the client can
//!   tell a proxied request (peer: an engine) from one that reached the server directly
//!   (peer: the client itself, as for returned packets).
//!
//! Both write their counters to a JSON file (replaced atomically) that the lab's monitor
//! reads; neither needs any other way to talk to the lab.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use netns_tests::sockets;

/// `xtask lab-proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The listener's port (the agent's `proxy_port`).
    #[arg(long)]
    pub port: u16,
    /// Where the counters go.
    #[arg(long)]
    pub stats: PathBuf,
}

/// `xtask lab-server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The port, on every address of the host.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Where the counters go.
    #[arg(long)]
    pub stats: PathBuf,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    upstream_failed: AtomicU64,
}

fn write_stats(path: &Path, c: &Counters) {
    let v = serde_json::json!({
        "connections": c.connections.load(Ordering::Relaxed),
        "requests": c.requests.load(Ordering::Relaxed),
        "upstream_failed": c.upstream_failed.load(Ordering::Relaxed),
    });
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, v.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn stats_writer(path: PathBuf, c: Arc<Counters>) {
    std::thread::spawn(move || loop {
        write_stats(&path, &c);
        std::thread::sleep(Duration::from_millis(100));
    });
}

/// Runs the proxy until killed.
pub fn proxy(args: &ProxyArgs) -> Result<()> {
    let listener = sockets::wildcard_listener(args.port, true, true, 128)?;
    let c = Arc::new(Counters::default());
    write_stats(&args.stats, &c);
    stats_writer(args.stats.clone(), c.clone());
    println!(
        "lab-proxy listening on 0.0.0.0:{} (IP_TRANSPARENT)",
        args.port
    );
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        // The agent's liveness check connects to the listener itself: relaying that to
        // its "original destination" would connect the proxy to itself, forever.
        if client.local_addr().is_ok_and(|a| a.port() == args.port) {
            continue;
        }
        c.connections.fetch_add(1, Ordering::Relaxed);
        let c2 = c.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            if relay(client, &c2).is_err() {
                c2.upstream_failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        if spawned.is_err() {
            c.upstream_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn relay(client: TcpStream, c: &Counters) -> Result<()> {
    // The accepted socket's local address is where the client meant to go.
    let original: SocketAddr = client.local_addr()?;
    let upstream = TcpStream::connect_timeout(&original, Duration::from_secs(3))
        .with_context(|| format!("connecting to {original}"))?;
    let (mut up_w, mut cl_r) = (upstream.try_clone()?, client.try_clone()?);
    let (mut up_r, mut cl_w) = (upstream, client);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut cl_w);
        let _ = cl_w.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match cl_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Requests are small and one per write: counting their starts is exact here.
        let starts = buf[..n].windows(4).filter(|w| w == b"GET ").count() as u64;
        c.requests.fetch_add(starts, Ordering::Relaxed);
        if up_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok(())
}

/// Runs the HTTP server until killed.
pub fn server(args: &ServerArgs) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .with_context(|| format!("binding 0.0.0.0:{}", args.port))?;
    let c = Arc::new(Counters::default());
    write_stats(&args.stats, &c);
    stats_writer(args.stats.clone(), c.clone());
    println!("lab-server listening on 0.0.0.0:{}", args.port);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        c.connections.fetch_add(1, Ordering::Relaxed);
        let c = c.clone();
        // Out of threads: the connection is dropped and the client sees the failure.
        let _ = std::thread::Builder::new().spawn(move || {
            let _ = serve(conn, &c);
        });
    }
    Ok(())
}

fn serve(mut conn: TcpStream, c: &Counters) -> Result<()> {
    let peer = conn.peer_addr()?;
    let local = conn.local_addr()?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = find(&pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            c.requests.fetch_add(1, Ordering::Relaxed);
            let path = head
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("/")
                .to_string();
            let close = head.to_ascii_lowercase().contains("connection: close");
            let body = format!("served {path} to {} at {}\n", peer.ip(), local.ip());
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            conn.write_all(answer.as_bytes())?;
            if close {
                return Ok(());
            }
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a counters file (`requests`, `connections`, `upstream_failed`); zeros when absent.
pub fn read_stats(path: &Path) -> (u64, u64) {
    // Squid's access log: a request a line.
    if path.extension().is_some_and(|e| e == "log") {
        let n = std::fs::read_to_string(path).map_or(0, |t| t.lines().count() as u64);
        return (n, n);
    }
    let v: serde_json::Value = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (
        v["requests"].as_u64().unwrap_or(0),
        v["connections"].as_u64().unwrap_or(0),
    )
}
