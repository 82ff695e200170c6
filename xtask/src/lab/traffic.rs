//! The client's traffic: a stream of short HTTP requests (one connection each, so that
//! they spread over the buckets by source port) and a set of long-lived keep-alive
//! connections that send a request every few hundred milliseconds. Every outcome is
//! recorded with its time, so each step of the demo can count its own successes, failures
//! and broken flows.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netns_tests::netns::{Host, NsThread};

use super::procs::find;

/// One short request.
#[derive(Clone, Debug)]
pub struct Req {
    /// Seconds since the lab's start, when the request began.
    pub t: f64,
    /// It got a 200 with a body.
    pub ok: bool,
    /// The peer the server saw: an engine (proxied) or the client (not proxied).
    pub via: Option<Ipv4Addr>,
    /// Where it went.
    pub target: Ipv4Addr,
}

/// One long-lived connection.
#[derive(Clone, Debug, Default)]
pub struct LongFlow {
    /// The client's port, which (with its address) picks the flow's bucket.
    pub port: u16,
    /// The engine whose proxy carries it (from the server's answers).
    pub via: Option<Ipv4Addr>,
    /// Requests answered on it.
    pub requests: u64,
    /// When it broke (seconds since the lab's start), if it did.
    pub broken_at: Option<f64>,
    /// Why it broke.
    pub error: Option<String>,
}

/// The running traffic.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// Every short request so far.
    pub reqs: Arc<Mutex<Vec<Req>>>,
    /// The long-lived connections.
    pub flows: Arc<Mutex<Vec<LongFlow>>>,
    target: Arc<Mutex<Ipv4Addr>>,
    threads: Vec<NsThread<()>>,
}

fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Sends one request on `conn` and reads one answer; the peer the server named.
fn exchange(conn: &mut TcpStream, path: &str, close: bool) -> Result<Ipv4Addr> {
    // The Host is the address itself: an intercepting proxy (Squid) checks the Host against
    // the original destination, and a name would need DNS, which the lab has not.
    let host = conn
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    conn.write_all(req.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let (head_end, length) = loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            bail!("closed before an answer ({} bytes)", got.len());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("answer {:?}", head.lines().next().unwrap_or(""));
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("no content-length")?;
            break (end + 4, length);
        }
    };
    while got.len() < head_end + length {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            bail!("body cut short");
        }
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned();
    // "served PATH to PEER at LOCAL"
    body.split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("bad body {body:?}"))
}

fn connect(target: Ipv4Addr, timeout: Duration) -> Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&SocketAddr::from((target, 80)), timeout)?;
    conn.set_read_timeout(Some(Duration::from_millis(1500)))?;
    conn.set_write_timeout(Some(Duration::from_millis(1500)))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// A client port whose flow to `target` falls in `bucket` under the lab's service (hash of
/// the client's address and port), so that the long-lived flows cover the bucket range
/// evenly and some of them always sit in buckets that move.
fn port_for_bucket(client: Ipv4Addr, target: Ipv4Addr, bucket: u8) -> u16 {
    (20_000..60_000u16)
        .find(|p| {
            wccp::assign::bucket_of(
                wccp::assign::flags::SRC_IP_HASH | wccp::assign::flags::SRC_PORT_HASH,
                client,
                target,
                *p,
                80,
                false,
            ) == bucket
        })
        .unwrap_or(0)
}

/// Connects from `client:port` (0: any port) to `target:80`.
fn connect_from(client: Ipv4Addr, port: u16, target: Ipv4Addr) -> Result<TcpStream> {
    // SAFETY: socket, setsockopt, bind and connect on a descriptor we own; the addresses
    // are initialised and of the sizes passed.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let addr = |ip: Ipv4Addr, port: u16| {
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from(ip).to_be();
            sin
        };
        let local = addr(client, port);
        if libc::bind(
            raw,
            &local as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            bail!("bind {client}:{port}: {}", std::io::Error::last_os_error());
        }
        let remote = addr(target, 80);
        if libc::connect(
            raw,
            &remote as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            bail!(
                "connect to {target}:80: {}",
                std::io::Error::last_os_error()
            );
        }
        fd
    };
    let conn = TcpStream::from(fd);
    conn.set_read_timeout(Some(Duration::from_millis(1500)))?;
    conn.set_write_timeout(Some(Duration::from_millis(1500)))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

impl Traffic {
    /// Starts `long` long-lived connections to `target` and the stream of short requests,
    /// all from `client`. Fails when a long-lived connection cannot be made.
    pub fn start(
        client: &Host,
        client_addr: Ipv4Addr,
        target: Ipv4Addr,
        long: usize,
        t0: Instant,
    ) -> Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let flows = Arc::new(Mutex::new(vec![LongFlow::default(); long]));
        let target_now = Arc::new(Mutex::new(target));
        let mut threads = Vec::new();
        for i in 0..long {
            let bucket = ((i * 256 / long.max(1)) + 256 / (2 * long.max(1))) as u8;
            let port = port_for_bucket(client_addr, target, bucket);
            let conn = client
                .in_ns(|| connect_from(client_addr, port, target))?
                .with_context(|| format!("long-lived connection {i} (bucket {bucket})"))?;
            flows.lock().unwrap()[i].port = conn.local_addr()?.port();
            let (stop, flows) = (stop.clone(), flows.clone());
            threads.push(client.thread(move || {
                let mut conn = conn;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match exchange(&mut conn, &format!("/long/{i}/{n}"), false) {
                        Ok(via) => {
                            let mut f = flows.lock().unwrap();
                            f[i].via = Some(via);
                            f[i].requests += 1;
                        }
                        Err(e) => {
                            let mut f = flows.lock().unwrap();
                            f[i].broken_at = Some(since(t0));
                            f[i].error = Some(format!("{e:#}"));
                            return;
                        }
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
            })?);
        }
        {
            let (stop, reqs, target_now) = (stop.clone(), reqs.clone(), target_now.clone());
            threads.push(client.thread(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let target = *target_now.lock().unwrap();
                    let t = since(t0);
                    let r = connect(target, Duration::from_millis(700))
                        .and_then(|mut c| exchange(&mut c, &format!("/short/{n}"), true));
                    reqs.lock().unwrap().push(Req {
                        t,
                        ok: r.is_ok(),
                        via: r.ok(),
                        target,
                    });
                    n += 1;
                    std::thread::sleep(Duration::from_millis(30));
                }
            })?);
        }
        Ok(Traffic {
            stop,
            reqs,
            flows,
            target: target_now,
            threads,
        })
    }

    /// Sends the short requests to `target` from now on.
    pub fn retarget(&self, target: Ipv4Addr) {
        *self.target.lock().unwrap() = target;
    }

    /// Short requests begun in `[from, to)` seconds: (ok, failed).
    pub fn count(&self, from: f64, to: f64) -> (u64, u64) {
        let r = self.reqs.lock().unwrap();
        let mut ok = 0;
        let mut failed = 0;
        for q in r.iter().filter(|q| q.t >= from && q.t < to) {
            if q.ok {
                ok += 1
            } else {
                failed += 1
            }
        }
        (ok, failed)
    }

    /// A copy of the short requests so far.
    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    /// A copy of the long-lived connections' state.
    pub fn flows(&self) -> Vec<LongFlow> {
        self.flows.lock().unwrap().clone()
    }

    /// Stops every thread and closes every connection (so no socket keeps a namespace).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join();
        }
    }
}
