//! Runs `cargo xtask lab --non-interactive --json` (root: namespaces, XDP, tc) and checks
//! its summary: every step ok with its figures (buckets moved on the join, failover under
//! the bound, the refused engine never usable, returned packets counted on both sides),
//! the SVG written and one series per engine in it, and a clean teardown.
//!
//! One failure is known and named rather than hidden: redirector-ctl programs every
//! bucket with `sticky = false`, so the XDP program never consults its connection table and
//! long-lived flows in the buckets that move on a join break. The lab reports that join as
//! failed (and exits non-zero); this test accepts exactly that failure while the data plane
//! shows no sticky bucket, and is strict again as soon as it does.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

fn step<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["steps"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {summary:#}"))
}

#[test]
fn lab_demo_runs_every_step_and_tears_down() {
    let dir = std::env::temp_dir().join(format!("xtask-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("buckets.svg");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["lab", "--non-interactive", "--json", "--duration", "8"])
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("running xtask lab");
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON summary ({e}): {}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    println!("lab took {took:.1?}");
    assert_eq!(
        out.status.success(),
        summary["ok"] == true,
        "exit code follows the summary: {}",
        out.status
    );
    assert!(summary["error"].is_null(), "{summary:#}");
    let teardown = &summary["teardown"];
    assert_eq!(
        teardown["ok"], true,
        "teardown left something: {teardown:#}"
    );

    for name in ["baseline", "join", "fail", "refuse", "return", "steady"] {
        let s = step(&summary, name);
        assert_eq!(s["ok"], true, "step {name}: {s:#}");
    }
    let join = step(&summary, "join");
    let f = &join["figures"];
    assert!(f["buckets_moved"].as_u64().unwrap() > 0, "{join:#}");
    assert!(
        f["long_lived_in_moved_buckets"].as_u64().unwrap() > 0,
        "the lab spreads the long-lived flows so that some sit in moved buckets: {join:#}"
    );
    // Buckets that change owner are installed sticky: the flows in them stay with the
    // engine that took their SYN, and none breaks.
    assert_eq!(join["ok"], true, "{join:#}");
    assert_eq!(f["long_lived_broken"], 0, "{join:#}");
    assert!(f["sticky_buckets"].as_u64().unwrap() > 0, "{join:#}");
    let fail = step(&summary, "fail");
    let f = &fail["figures"];
    let bound = f["bound_ms"].as_u64().unwrap();
    assert!(
        f["failover_buckets_ms"].as_u64().unwrap() <= bound,
        "{fail:#}"
    );
    assert!(
        f["failover_requests_ms"].as_u64().unwrap() <= bound,
        "{fail:#}"
    );
    assert_eq!(f["long_lived_broken_others"], 0, "{fail:#}");
    let refuse = &step(&summary, "refuse")["figures"];
    assert_eq!(refuse["ever_usable"], false, "{refuse:#}");
    assert!(refuse["security_drops"].as_u64().unwrap() > 0, "{refuse:#}");
    let ret = &step(&summary, "return")["figures"];
    assert!(
        ret["router_returned_packets"].as_u64().unwrap() > 0,
        "{ret:#}"
    );
    assert!(
        ret["engine_return_rule_packets"].as_u64().unwrap() > 0,
        "{ret:#}"
    );
    assert_eq!(ret["requests_failed"], 0, "{ret:#}");

    // With the patched Squid built (`--squid auto`), it joined and served requests too.
    if let Some(sq) = summary["steps"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "squid"))
    {
        assert_eq!(sq["ok"], true, "{sq:#}");
        assert!(
            sq["figures"]["squid_requests"].as_u64().unwrap() > 0,
            "{sq:#}"
        );
    }

    // Per engine: the survivors served requests and hold all 256 buckets.
    let engines = summary["engines"].as_array().unwrap();
    let held: u64 = engines.iter().map(|e| e["buckets"].as_u64().unwrap()).sum();
    assert_eq!(held, 256, "{engines:#?}");
    for e in engines
        .iter()
        .filter(|e| e["role"] == "running" || e["role"] == "joined")
    {
        assert!(e["requests"].as_u64().unwrap() > 0, "{e:#}");
    }
    // The refused engine was never sent a packet.
    for e in engines.iter().filter(|e| e["role"] == "refused") {
        assert_eq!(e["packets_redirected"], 0, "{e:#}");
    }

    // The SVG: XML, one line series (the 2-pixel polylines) per engine, in distinct
    // colours, each engine named in the legend.
    let text = std::fs::read_to_string(&svg).expect("the SVG is written where --svg says");
    let doc = roxmltree::Document::parse(&text).expect("the SVG is XML");
    let series: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .collect();
    assert_eq!(series.len(), engines.len(), "one series per engine");
    let colours: BTreeSet<_> = series
        .iter()
        .filter_map(|n| n.attribute("stroke"))
        .collect();
    assert_eq!(colours.len(), engines.len(), "{colours:?}");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    for e in engines {
        let addr = e["address"].as_str().unwrap();
        assert!(
            texts.iter().any(|t| t.contains(addr)),
            "{addr} in the legend: {texts:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
