//! A real Squid against our router: `redirector-ctl run` with the XDP data plane attached
//! to the router's client-facing veth, Squid in an engine namespace on the router's LAN.
//!
//! With Debian's Squid 5.7 plus `tests/squid/wccp2-64bit.patch` (built by
//! `scripts/build-squid.sh`) Squid completes the join: it reflects our Receive ID, becomes
//! usable, is the designated engine and sends a Redirect-Assign about 15 s after the first
//! I-See-You; `show --json` lists it usable with what it assigned, and the pinned data-plane
//! maps hold the same. Covered: GRE + hash and L2 + mask (each with the web-cache service and
//! a dynamic one), MD5 with the right password, and a wrong password (never usable, the
//! error counted and logged). Debian's unpatched `/usr/sbin/squid` gets our I-See-You but
//! never reflects it, and `show` says so (the engine stays `waiting`).
//!
//! Squid's Here-I-Am interval is 10 s, so a join takes 25 to 30 s; the variants run
//! concurrently, each in its own lab, and a second test (Squid beside fast-timer
//! engine-agents) runs alongside them.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use common::{engine, engine_ip, poll, router_ip, slots, Net};
use netns_tests::daemons::{patched_squid, tail, Agent, Ctl, CtlConfig, Squid, DEBIAN_SQUID};

/// How long a Squid join may take: its first Here-I-Am about 1 s after start, the one
/// that reflects our Receive ID 10 s later, its Redirect-Assign 15 s after our first
/// I-See-You; with slack for a loaded machine.
const JOIN: Duration = Duration::from_secs(60);

/// Waits until the service shows `address` usable, designated, and holding `count`
/// slots of an assignment of `method`; returns the service and how long it took.
fn wait_assigned(
    ctl: &Ctl,
    squid: &Squid,
    service: &str,
    address: Ipv4Addr,
    method: &str,
    count: u64,
) -> Result<(Value, Duration)> {
    let t0 = Instant::now();
    let s = ctl
        .wait_service(
            service,
            &format!("{address} to assign {service}"),
            JOIN,
            |s| {
                engine(s, address).is_some_and(|e| e["state"] == "usable")
                    && s["designated"] == address.to_string()
                    && s["state"] == "active"
                    && s["assignment"]["method"] == method
                    && slots(s).get(&address.to_string()) == Some(&count)
            },
        )
        .with_context(|| format!("squid cache.log:\n{}", tail(&squid.cache_log(), 40)))?;
    Ok((s, t0.elapsed()))
}

/// The common checks on a joined Squid's service: the engine's methods, the data plane's
/// kind and interface, and the pinned maps against `show`.
fn check_joined(
    ctl: &Ctl,
    s: &Value,
    address: Ipv4Addr,
    forwarding: &str,
    assignment: &str,
) -> Result<()> {
    let e = engine(s, address).context("engine listed")?;
    ensure!(e["forwarding"] == forwarding, "forwarding: {e}");
    ensure!(e["assignment"] == assignment, "assignment: {e}");
    ensure!(e["interval_ms"] == 10_000, "Squid's T is 10 s: {e}");
    ensure!(
        s["routers"] == serde_json::json!([router_ip(0).to_string()]),
        "routers: {s}"
    );
    common::check_plane_matches(&ctl.pin_root, s)
        .with_context(|| format!("data plane vs show for {}", s["service"]))?;
    Ok(())
}

fn check_dataplane_attached(ctl: &Ctl) -> Result<()> {
    let st = ctl.show_cli(&[])?;
    ensure!(
        st["dataplane"]["kind"] == "xdp",
        "dataplane: {}",
        st["dataplane"]
    );
    ensure!(
        st["dataplane"]["interfaces"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["name"] == "cli0")),
        "XDP on cli0: {}",
        st["dataplane"]
    );
    ensure!(
        st["dataplane"]["last_error"].is_null(),
        "dataplane: {}",
        st["dataplane"]
    );
    Ok(())
}

/// A two-service join: Squid with forwarding (and return) method `fwd` and assignment
/// method `asg` joins service 0 and dynamic service `dynamic`, described by `info`, and
/// assigns `count` slots of each.
struct TwoServices {
    prefix: &'static str,
    fwd: &'static str,
    asg: &'static str,
    dynamic: u8,
    info: &'static str,
    count: u64,
}

fn join_two_services(squid_bin: &Path, v: &TwoServices) -> Result<String> {
    Net::new(v.prefix, 1, 1)?.run(|net| join_two_services_in(net, squid_bin, v))
}

fn join_two_services_in(net: &Net, squid_bin: &Path, v: &TwoServices) -> Result<String> {
    let &TwoServices {
        prefix,
        fwd,
        asg,
        dynamic,
        info,
        count,
    } = v;
    let services =
        format!("[[service]]\nid = 0\n\n[[service]]\nid = {dynamic}\ntype = \"dynamic\"\n");
    let ctl = Ctl::start(
        &net.routers[0],
        "r1",
        &CtlConfig::new(router_ip(0), &["cli0"], &services),
    )?;
    check_dataplane_attached(&ctl)?;
    let wccp = format!(
        "wccp2_service standard 0\nwccp2_service dynamic {dynamic}\nwccp2_service_info {dynamic} {info}\n\
         wccp2_forwarding_method {fwd}\nwccp2_return_method {fwd}\nwccp2_assignment_method {asg}\n"
    );
    let t0 = Instant::now();
    let squid = Squid::start(
        &net.engines[0],
        squid_bin,
        prefix,
        engine_ip(0),
        &[router_ip(0)],
        &wccp,
    )?;
    let address = engine_ip(0);
    let (web, _) = wait_assigned(&ctl, &squid, "standard/0", address, asg, count)?;
    let (dynm, _) = wait_assigned(
        &ctl,
        &squid,
        &format!("dynamic/{dynamic}"),
        address,
        asg,
        count,
    )?;
    let took = t0.elapsed();
    check_joined(&ctl, &web, address, fwd, asg)?;
    check_joined(&ctl, &dynm, address, fwd, asg)?;
    if asg == "mask" {
        // Squid's one mask, 0x1741 (six bits of an address), with its 64 values, all Squid's.
        for s in [&web, &dynm] {
            let masks = s["assignment"]["masks"].as_array().context("masks")?;
            ensure!(masks.len() == 1, "one mask: {masks:?}");
            let m = &masks[0];
            ensure!(
                m["mask"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "0x00001741")),
                "mask 0x1741: {m}"
            );
            let values = m["values"].as_array().context("values")?;
            ensure!(
                values.len() == 64 && values.iter().all(|v| v[1] == address.to_string()),
                "64 values, all to Squid: {m}"
            );
        }
    }
    // The dynamic service is the one Squid defined.
    ensure!(
        dynm["definition"]["protocol"] == 6,
        "definition: {}",
        dynm["definition"]
    );
    // The operator's command says the same as the socket.
    let cli = ctl.show_cli(&["assignment", &dynamic.to_string()])?;
    ensure!(
        slots(&cli[0]).get(&address.to_string()) == Some(&count),
        "show assignment {dynamic}: {cli:#}"
    );
    let stats = ctl.show_cli(&["stats"])?;
    ensure!(
        stats["messages_in"]["redirect_assign"].as_u64() >= Some(2),
        "Redirect-Assign for both services: {stats:#}"
    );
    let log = squid.cache_log();
    ensure!(
        !log.contains("Ignoring WCCPv2 message"),
        "Squid refused a message:\n{}",
        tail(&log, 40)
    );
    ensure!(
        ctl.log().contains("data plane programmed"),
        "{}",
        tail(&ctl.log(), 40)
    );
    Ok(format!(
        "{fwd}+{asg}: services 0 and {dynamic} assigned ({count} slots each) after {took:.1?}"
    ))
}

fn gre_hash(squid: &Path) -> Result<String> {
    join_two_services(
        squid,
        &TwoServices {
            prefix: "sqgre",
            fwd: "gre",
            asg: "hash",
            dynamic: 80,
            info: "protocol=tcp flags=src_ip_hash,dst_ip_hash priority=240 ports=80,443,8080",
            count: 256,
        },
    )
}

fn l2_mask(squid: &Path) -> Result<String> {
    // Squid's mask is 0x1741 on the destination (or source) address: 6 bits, 64 values.
    join_two_services(
        squid,
        &TwoServices {
            prefix: "sql2",
            fwd: "l2",
            asg: "mask",
            dynamic: 90,
            info: "protocol=tcp flags=src_ip_hash priority=200 ports=80,443",
            count: 64,
        },
    )
}

const PASSWORD: &str = "Fx8pass!";

fn md5_right(squid_bin: &Path) -> Result<String> {
    Net::new("sqmd5", 1, 1)?.run(|net| md5_right_in(net, squid_bin))
}

fn md5_right_in(net: &Net, squid_bin: &Path) -> Result<String> {
    let services = format!("[[service]]\nid = 0\npassword = \"{PASSWORD}\"\n");
    let ctl = Ctl::start(
        &net.routers[0],
        "r1",
        &CtlConfig::new(router_ip(0), &["cli0"], &services),
    )?;
    let wccp = format!(
        "wccp2_service standard 0 password={PASSWORD}\nwccp2_forwarding_method gre\n\
         wccp2_return_method gre\nwccp2_assignment_method hash\n"
    );
    let t0 = Instant::now();
    let squid = Squid::start(
        &net.engines[0],
        squid_bin,
        "sqmd5",
        engine_ip(0),
        &[router_ip(0)],
        &wccp,
    )?;
    let (s, _) = wait_assigned(&ctl, &squid, "standard/0", engine_ip(0), "hash", 256)?;
    let took = t0.elapsed();
    ensure!(s["security"] == "md5", "security: {s}");
    check_joined(&ctl, &s, engine_ip(0), "gre", "hash")?;
    let stats = ctl.show_cli(&["stats"])?;
    ensure!(
        stats["errors"].get("security").is_none(),
        "no security errors: {stats:#}"
    );
    Ok(format!(
        "md5 (right password): usable and assigned after {took:.1?}"
    ))
}

fn md5_wrong(squid_bin: &Path) -> Result<String> {
    Net::new("sqbad", 1, 1)?.run(|net| md5_wrong_in(net, squid_bin))
}

fn md5_wrong_in(net: &Net, squid_bin: &Path) -> Result<String> {
    let services = format!("[[service]]\nid = 0\npassword = \"{PASSWORD}\"\n");
    let ctl = Ctl::start(
        &net.routers[0],
        "r1",
        &CtlConfig::new(router_ip(0), &["cli0"], &services),
    )?;
    let wccp = "wccp2_service standard 0 password=wrongpw\nwccp2_forwarding_method gre\n\
                wccp2_return_method gre\nwccp2_assignment_method hash\n";
    let squid = Squid::start(
        &net.engines[0],
        squid_bin,
        "sqbad",
        engine_ip(0),
        &[router_ip(0)],
        wccp,
    )?;
    // Three Here-I-Ams (about 1 s, 11 s and 21 s after start), and past the 15 s after
    // which a Squid that had been answered would assign: never usable, never listed.
    let t0 = Instant::now();
    let mut errors = 0;
    while t0.elapsed() < Duration::from_secs(24) {
        let s = ctl.service("standard/0")?;
        ensure!(
            s["engines"] == serde_json::json!([]) && s["assignment"].is_null(),
            "an engine with the wrong password is never listed: {s:#}"
        );
        errors = s["counters"]["drop.security"].as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(250));
    }
    ensure!(errors >= 2, "drop.security counted per Here-I-Am: {errors}");
    let stats = ctl.show_cli(&["stats"])?;
    ensure!(
        stats["errors"]["security"].as_u64() >= Some(2),
        "errors.security: {stats:#}"
    );
    ensure!(
        stats["messages_out"].get("i_see_you").is_none(),
        "no answer to a bad digest: {stats:#}"
    );
    let log = ctl.log();
    ensure!(
        log.contains("\"reason\":\"security\""),
        "logged: {}",
        tail(&log, 20)
    );
    let text = ctl.show_text(&["services"])?;
    ensure!(
        text.contains("security="),
        "show's text names the error:\n{text}"
    );
    drop(squid);
    Ok(format!(
        "md5 (wrong password): never usable, {errors} security errors counted and logged"
    ))
}

fn unpatched(_: &Path) -> Result<String> {
    Net::new("sqdeb", 1, 1)?.run(unpatched_in)
}

fn unpatched_in(net: &Net) -> Result<String> {
    let ctl = Ctl::start(
        &net.routers[0],
        "r1",
        &CtlConfig::new(router_ip(0), &["cli0"], "[[service]]\nid = 0\n"),
    )?;
    let wccp = "wccp2_service standard 0\nwccp2_forwarding_method gre\nwccp2_return_method gre\n\
                wccp2_assignment_method hash\n";
    let squid = Squid::start(
        &net.engines[0],
        Path::new(DEBIAN_SQUID),
        "sqdeb",
        engine_ip(0),
        &[router_ip(0)],
        wccp,
    )?;
    let address = engine_ip(0);
    let (_, first) = poll(Duration::from_secs(20), || {
        let s = ctl.service("standard/0").ok()?;
        engine(&s, address).map(|_| ())
    })
    .with_context(|| {
        format!(
            "Debian's Squid never announced itself: {}",
            tail(&ctl.log(), 20)
        )
    })?;
    // Watch past three Here-I-Ams and the 15 s after which a Squid that accepted our
    // I-See-You would assign.
    let t0 = Instant::now();
    let mut last = Value::Null;
    while t0.elapsed() < Duration::from_secs(24) {
        last = ctl.service("standard/0")?;
        let e = engine(&last, address).context("engine stays listed")?;
        ensure!(e["state"] == "waiting", "never usable: {last:#}");
        ensure!(
            last["assignment"].is_null() && last["state"] == "forming",
            "nothing programmed: {last:#}"
        );
        ensure!(
            last["routers"] == serde_json::json!([]),
            "Squid reports no router: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let stats = ctl.show_cli(&["stats"])?;
    let isy = stats["messages_out"]["i_see_you"].as_u64().unwrap_or(0);
    let hia = stats["messages_in"]["here_i_am"].as_u64().unwrap_or(0);
    ensure!(
        isy >= 2 && isy == hia,
        "every Here-I-Am answered: {stats:#}"
    );
    ensure!(
        stats["messages_in"].get("redirect_assign").is_none(),
        "{stats:#}"
    );
    ensure!(
        last["receive_id"].as_u64() >= Some(2),
        "receive id advances: {last:#}"
    );
    // The reason, from Squid's side: it refuses our I-See-You (its 64-bit length fault).
    let log = squid.cache_log();
    ensure!(
        log.contains("Ignoring WCCPv2 message"),
        "Squid's cache.log:\n{}",
        tail(&log, 30)
    );
    let text = ctl.show_text(&["engines"])?;
    Ok(format!(
        "unpatched Debian Squid: listed after {first:.1?}, {isy} I-See-You sent, still waiting after {:.0?} \
         (never reflects our Receive ID)\n{}",
        t0.elapsed(),
        text.trim_end()
    ))
}

/// Every variant runs unless `SQUID_VARIANTS` (comma-separated names) picks some.
#[test]
fn squid_joins_our_router() {
    type Variant = fn(&Path) -> Result<String>;
    let all: [(&str, Variant); 5] = [
        ("gre-hash", gre_hash),
        ("l2-mask", l2_mask),
        ("md5-right", md5_right),
        ("md5-wrong", md5_wrong),
        ("unpatched", unpatched),
    ];
    let picked = std::env::var("SQUID_VARIANTS").ok();
    let variants: Vec<(&str, Variant)> = all
        .into_iter()
        .filter(|(n, _)| {
            picked
                .as_deref()
                .is_none_or(|p| p.split(',').any(|x| x == *n))
        })
        .collect();
    assert!(
        !variants.is_empty(),
        "SQUID_VARIANTS={picked:?} names no variant"
    );
    assert!(
        Path::new(DEBIAN_SQUID).is_file(),
        "Debian's Squid: apt-get install squid (scripts/setup.sh)"
    );
    let squid = if variants.iter().any(|(n, _)| *n != "unpatched") {
        patched_squid().expect("the patched Squid (scripts/build-squid.sh)")
    } else {
        PathBuf::new()
    };
    let t0 = Instant::now();
    let handles: Vec<_> = variants
        .into_iter()
        .map(|(name, f)| {
            let squid = squid.clone();
            (name, std::thread::spawn(move || f(&squid)))
        })
        .collect();
    let mut failures = Vec::new();
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(summary)) => println!("squid {name}: ok: {summary}"),
            Ok(Err(e)) => {
                println!("squid {name}: FAILED: {e:#}");
                failures.push(format!("{name}: {e:#}"));
            }
            Err(_) => failures.push(format!("{name}: panicked")),
        }
    }
    println!("squid variants took {:.1?} together", t0.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// (d) Fast timers beside Squid: two engine-agents negotiate a 500 ms T with timeout scale
/// 2, a Squid in the same group keeps its 10 s; the non-designated agent is killed with
/// SIGKILL and its buckets leave it within 1 s (removal at 2 T after its last Here-I-Am),
/// the designated agent reassigns them, and Squid is never evicted.
#[test]
fn fast_timers_failover_beside_squid() {
    if let Err(e) = fast_timers_beside_squid() {
        panic!("{e:#}");
    }
}

fn fast_timers_beside_squid() -> Result<()> {
    let squid_bin = patched_squid()?;
    Net::new("sqfast", 1, 3)?.run(|net| fast_timers_beside_squid_in(net, &squid_bin))
}

fn fast_timers_beside_squid_in(net: &Net, squid_bin: &Path) -> Result<()> {
    let ctl = Ctl::start(
        &net.routers[0],
        "r1",
        &CtlConfig::new(router_ip(0), &["cli0"], "[[service]]\nid = 0\n"),
    )?;
    let agent_cfg = |i: usize| {
        format!(
            "address = \"{}\"\nrouters = [\"{}\"]\n[timers]\nfast_transmit_ms = 500\ntimeout_scale = 2\n\
             [[service]]\nid = 0\nweight = 100\n",
            engine_ip(i),
            router_ip(0)
        )
    };
    let (a, b, sq) = (engine_ip(0), engine_ip(1), engine_ip(2));
    let _agent_a = Agent::start(&net.engines[0], "a", &agent_cfg(0))?;
    let mut agent_b = Agent::start(&net.engines[1], "b", &agent_cfg(1))?;
    let wccp = "wccp2_service standard 0\nwccp2_forwarding_method gre\nwccp2_return_method gre\n\
                wccp2_assignment_method hash\nwccp2_weight 100\n";
    let squid = Squid::start(
        &net.engines[2],
        squid_bin,
        "sqfast",
        sq,
        &[router_ip(0)],
        wccp,
    )?;
    let all_three = ctl
        .wait_service(
            "standard/0",
            "A, B and Squid usable and assigned",
            JOIN,
            |s| {
                let sl = slots(s);
                [a, b, sq].iter().all(|x| {
                    engine(s, *x).is_some_and(|e| e["state"] == "usable")
                        && sl.get(&x.to_string()).is_some_and(|n| *n > 0)
                }) && s["designated"] == a.to_string()
            },
        )
        .with_context(|| format!("squid cache.log:\n{}", tail(&squid.cache_log(), 30)))?;
    let e_a = engine(&all_three, a).unwrap();
    ensure!(e_a["interval_ms"] == 500, "A negotiated T = 500 ms: {e_a}");
    ensure!(
        engine(&all_three, sq).unwrap()["interval_ms"] == 10_000,
        "Squid keeps 10 s"
    );
    println!("fast timers: split before the kill {:?}", slots(&all_three));
    let squid_buckets = slots(&all_three)[&sq.to_string()];
    common::check_plane_matches(&ctl.pin_root, &all_three)?;

    let removed_before = ctl.status()?["stats"]["events"]["engine_removed"]
        .as_u64()
        .unwrap_or(0);
    agent_b.process.signal(Signal::SIGKILL)?;
    let t0 = Instant::now();
    let mut stripped = None;
    let mut reassigned = None;
    let mut squid_ok = true;
    let mut last = Value::Null;
    // Watch for 12 s: longer than one Squid heartbeat (10 s), so an eviction would show.
    while t0.elapsed() < Duration::from_secs(12) {
        let s = ctl.service("standard/0")?;
        let now = t0.elapsed();
        let sl = slots(&s);
        if stripped.is_none() && !sl.contains_key(&b.to_string()) {
            stripped = Some(now);
        }
        if reassigned.is_none()
            && !sl.contains_key(&b.to_string())
            && sl.values().sum::<u64>() == 256
            && engine(&s, b).is_none()
        {
            reassigned = Some(now);
        }
        if !engine(&s, sq).is_some_and(|e| e["state"] == "usable") {
            squid_ok = false;
        }
        last = s;
        std::thread::sleep(Duration::from_millis(10));
    }
    let stripped = stripped.with_context(|| format!("B's buckets never left it: {last:#}"))?;
    let reassigned = reassigned
        .with_context(|| format!("never reassigned: {last:#}\n{}", tail(&ctl.log(), 30)))?;
    println!(
        "fast timers (T 500 ms, scale 2): SIGKILL of B -> its buckets unassigned after {} ms, \
         all 256 on A and Squid after {} ms; split now {:?}",
        stripped.as_millis(),
        reassigned.as_millis(),
        slots(&last)
    );
    ensure!(squid_ok, "Squid stayed usable throughout: {last:#}");
    ensure!(
        stripped <= Duration::from_millis(1100),
        "B's buckets left it {} ms after SIGKILL (2 T = 1000 ms after its last Here-I-Am)",
        stripped.as_millis()
    );
    ensure!(
        reassigned <= Duration::from_millis(3000),
        "reassigned {} ms after SIGKILL (removal + T + 1.5 T)",
        reassigned.as_millis()
    );
    let stats = ctl.status()?["stats"].clone();
    ensure!(
        stats["events"]["engine_removed"].as_u64() == Some(removed_before + 1),
        "only B was removed: {stats:#}"
    );
    let sl = slots(&last);
    ensure!(
        sl[&sq.to_string()] >= squid_buckets,
        "Squid kept its buckets: {sl:?}"
    );
    common::check_plane_matches(&ctl.pin_root, &last)?;
    if squid.cache_log().contains("Ignoring WCCPv2 message") {
        bail!("Squid refused a message:\n{}", tail(&squid.cache_log(), 30));
    }
    Ok(())
}
