//! End to end, return rules that change or copy what the engine sees (see `e2e_common`):
//!
//! 8. `rewrite_to`: flows to 10.9.0.3:80 are returned by the engine with the destination
//!    rewritten to the server's second address 10.9.0.2; the router decapsulates and
//!    forwards them there. The server host counts their arrival at 10.9.0.2 (nftables)
//!    and, so that the flow can complete, maps them statelessly to a third local address
//!    10.9.0.3 the client expects its answers from;
//!    `copy` (copy only, the proxy still takes the flow): the flow completes with the
//!    server through the proxy, and a copy of every redirected frame leaves
//!    `copy_interface` (`cp0`, a veth whose peer `cp1` in another host is read with
//!    AF_PACKET): the client's bytes reassembled from the copies are the bytes it sent.

mod e2e_common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use e2e_common::*;

const SERVER3: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);

#[test]
fn rewrite_reaches_the_new_destination_and_copies_hold_the_flow() {
    if let Err(e) = World::new("e2erules", 1).and_then(|w| w.run(rules)) {
        panic!("{e:#}");
    }
}

/// Packets the server's nftables rule counted.
fn nft_packets(w: &World) -> Result<u64> {
    let out = w.server_host.run(
        w.server_host
            .command("nft")?
            .args(["list", "table", "ip", "e2e"]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|t| *t != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no counter in {text}"))
}

fn rules(w: &World) -> Result<()> {
    let tap = w.lab.host("tap")?;
    w.lab.link(&w.engines[0], "cp0", &tap, "cp1")?;
    w.engines[0].set_mtu("cp0", LAN_MTU)?;
    tap.set_mtu("cp1", LAN_MTU)?;
    // The server host: a third address, and a stateless mapping of what arrives for the
    // rewrite target back to it, counted.
    w.server_host.add_addr("s0", &format!("{SERVER3}/24"))?;
    let third = Server::start(&w.server_host, &[SERVER3])?;
    let nft = format!(
        "table ip e2e {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n  \
         ip saddr {CLIENT} ip daddr {SERVER2} tcp dport 80 counter ip daddr set {SERVER3} notrack\n }}\n}}\n"
    );
    let nft_file = w.lab.scratch_dir().join("server.nft");
    std::fs::write(&nft_file, nft)?;
    w.server_host
        .run(w.server_host.command("nft")?.arg("-f").arg(&nft_file))?;

    let ctl = start_ctl(w, "r", 30_000)?;
    let extra = AgentExtra {
        dataplane: "copy_interface = \"cp0\"".into(),
        tables: format!(
            "[[return_rule]]\nprefix = \"{SERVER3}/32\"\nport = 80\nrewrite_to = \"{SERVER2}\"\n\n\
             [[return_rule]]\nprefix = \"{SERVER}/32\"\nport = 80\ncopy = true\nreturn = false\n"
        ),
        ..AgentExtra::default()
    };
    let e1 = Engine::start(w, 0, &extra)?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;

    // Rewrite.
    let c0 = e1.counters()?;
    let n0 = nft_packets(w)?;
    let (body, me) = http_get(
        &w.client,
        0,
        SocketAddrV4::new(SERVER3, HTTP_PORT),
        "/",
        Duration::from_secs(5),
    )
    .with_context(|| logs(Some(&ctl), &[&e1]))?;
    let c1 = e1.counters()?;
    let n1 = nft_packets(w)?;
    let get = |c: &std::collections::BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
    println!(
        "(8) rewrite: {}; engine rewritten {} return_rule {}; packets arriving for {SERVER2}: {}",
        body.trim_end(),
        get(&c1, "rewritten") - get(&c0, "rewritten"),
        get(&c1, "return_rule") - get(&c0, "return_rule"),
        n1 - n0
    );
    ensure!(
        body.trim_end() == format!("hello {me} -> {SERVER3}:80"),
        "{body:?}"
    );
    ensure!(get(&c1, "rewritten") - get(&c0, "rewritten") >= 3, "{c1:?}");
    ensure!(
        n1 - n0 >= get(&c1, "rewritten") - get(&c0, "rewritten"),
        "every rewritten packet reached {SERVER2}: {} < {}",
        n1 - n0,
        get(&c1, "rewritten") - get(&c0, "rewritten")
    );
    ensure!(!e1.proxy().saw(me), "not proxied");
    ensure!(
        third.accepted_from(me) == 1,
        "served by {SERVER3} after the mapping"
    );

    // Copy.
    let capture = RawSocket::open(&tap, "cp1")?;
    let stop = Arc::new(AtomicBool::new(false));
    let frames = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(f) = capture.recv() {
                    if !f.is_empty() {
                        out.push(f);
                    }
                }
            }
            // Drain what is left.
            while let Some(f) = capture.recv() {
                if !f.is_empty() {
                    out.push(f);
                }
            }
            out
        })
    };
    let copied0 = e1.counter("copied");
    let port = 46_100u16;
    let body: Vec<u8> = (0..100_000u64).map(|i| b'a' + (i % 26) as u8).collect();
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {SERVER}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut s = connect_from(
        &w.client,
        port,
        SocketAddrV4::new(SERVER, HTTP_PORT),
        Duration::from_secs(5),
    )?;
    s.write_all(&request)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let frames = frames.join().expect("capture thread");
    let copied = e1.counter("copied") - copied0;
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    ensure!(
        answer.ends_with(&format!("got {} sum {sum}\n", body.len())),
        "the server got the whole body: {answer:?}"
    );
    ensure!(
        e1.proxy().saw(SocketAddr::from((CLIENT, port))),
        "the proxy still took the copied flow"
    );
    let bytes = reassemble(&frames, port)
        .with_context(|| format!("{} frames, no SYN or a gap", frames.len()))?;
    println!(
        "(8) copy: flow completed through the proxy ({}), {} frames copied by the engine, {} \
         captured on the copy interface's peer, {} client bytes reassembled from them",
        answer.lines().last().unwrap_or(""),
        copied,
        frames.len(),
        bytes.len()
    );
    ensure!(
        bytes == request,
        "the copies hold the client's bytes ({} of {}; first difference at {:?})",
        bytes.len(),
        request.len(),
        bytes.iter().zip(&request).position(|(a, b)| a != b)
    );
    ensure!(copied >= frames.len() as u64, "copied {copied}");
    ensure!(e1.counter("copy_failed") == 0);
    drop(third);
    Ok(())
}

/// A return rule added by `engine-agent reload` while a flow it names is proxied: the
/// live flow stays with the proxy (its socket comes first), new flows are returned and
/// reach the server directly; the rule removed by another reload, new flows are proxied
/// again.
#[test]
fn reloaded_return_rule_spares_live_flows() {
    if let Err(e) = World::new("e2ereload", 1).and_then(|w| w.run(reload_rule)) {
        panic!("{e:#}");
    }
}

fn reload_rule(w: &World) -> Result<()> {
    use netns_tests::daemons::control_request;
    let ctl = start_ctl(w, "r", 30_000)?;
    let e1 = Engine::start(w, 0, &AgentExtra::default())?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;
    let to = SocketAddrV4::new(SERVER, HTTP_PORT);
    let mut live = echo_session(&w.client, 0, Duration::from_secs(5))?;
    let me = live.local_addr()?;
    ensure!(e1.proxy().saw(me), "proxied before the rule");

    let agent = e1.agent();
    let path = w.lab.scratch_dir().join("e1-agent.toml");
    let base = std::fs::read_to_string(&path)?;
    let reload = |text: &str| -> Result<()> {
        std::fs::write(&path, text)?;
        let v = control_request(&agent.socket, &serde_json::json!({"command": "reload"}))?;
        ensure!(v["result"] == "ok", "reload refused: {v}");
        Ok(())
    };
    reload(&format!(
        "{base}\n[[return_rule]]\nprefix = \"{SERVER}/32\"\nport = 80\n"
    ))?;
    let st = agent.status()?;
    ensure!(
        st["dataplane"]["return_rules"][0] == format!("{SERVER}/32 port 80 return"),
        "{:#}",
        st["dataplane"]
    );
    let before = e1.counter("return_rule");
    let got = echo(&mut live, "after the rule")?;
    ensure!(
        got.starts_with("echo after the rule ") && got.contains(&engine_ip(0).to_string()),
        "the live flow is still the proxy's: {got:?}"
    );
    let (body, new) = http_get(&w.client, 0, to, "/", Duration::from_secs(5))
        .with_context(|| format!("{:?}", e1.counters().unwrap_or_default()))?;
    ensure!(
        body.trim_end() == format!("hello {new} -> {SERVER}:80"),
        "a new flow is returned and served directly: {body:?}"
    );
    ensure!(!e1.proxy().saw(new));
    let returned = e1.counter("return_rule") - before;
    ensure!(returned >= 3, "return_rule +{returned}");

    reload(&base)?;
    let (body, again) = http_get(&w.client, 0, to, "/", Duration::from_secs(5))?;
    ensure!(
        body.starts_with(&format!("hello {}:", engine_ip(0))) && e1.proxy().saw(again),
        "proxied again once the rule is gone: {body:?}"
    );
    let got = echo(&mut live, "still")?;
    ensure!(got.starts_with("echo still "), "{got:?}");
    println!(
        "(8') return rule added by reload: the live proxied flow kept answering, a new flow \
         returned ({returned} packets) and served directly; rule removed: proxied again"
    );
    Ok(())
}
