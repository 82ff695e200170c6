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
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: lab\r\n{}\r\n",
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

impl Traffic {
    /// Starts `long` long-lived connections to `target` and the stream of short requests,
    /// all from `client`. Fails when a long-lived connection cannot be made.
    pub fn start(client: &Host, target: Ipv4Addr, long: usize, t0: Instant) -> Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let flows = Arc::new(Mutex::new(vec![LongFlow::default(); long]));
        let target_now = Arc::new(Mutex::new(target));
        let mut threads = Vec::new();
        for i in 0..long {
            let conn = client
                .in_ns(|| connect(target, Duration::from_secs(2)))?
                .with_context(|| format!("long-lived connection {i}"))?;
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
