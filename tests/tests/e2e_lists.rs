//! End to end, the router's redirect and skip lists (see `e2e_common`): with
//! `skip = [SERVER2/32]` on the service, flows to the server's second address go straight
//! to it while flows to its first address are proxied; after a reload to
//! `redirect = [SERVER2/32]` (and no skip list), it is the other way round, without
//! restarting the group.

mod e2e_common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e_common::*;
use netns_tests::daemons::control_request;
use redirector_ebpf::layout::STATS_GSO_ENCAPSULATED;

/// Bytes of the upload through redirect out.
const UPLOAD: usize = 4_000_000;

#[test]
fn skip_and_redirect_lists_decide_which_flows_reach_the_proxy() {
    if let Err(e) = World::new("e2elists", 1).and_then(|w| w.run(lists)) {
        panic!("{e:#}");
    }
}

/// One GET to `to`; whether the proxy took it, and whether the server answered.
fn proxied(w: &World, e: &Engine, to: Ipv4Addr) -> Result<bool> {
    let (body, me) = http_get(
        &w.client,
        0,
        SocketAddrV4::new(to, HTTP_PORT),
        "/",
        Duration::from_secs(5),
    )?;
    // The server names who connected to it: the client itself, or the proxy.
    ensure!(
        body.trim_end().ends_with(&format!(" -> {to}:80")),
        "answer from {to}: {body:?}"
    );
    let by_proxy = e.proxy().saw(me);
    ensure!(
        by_proxy != body.starts_with(&format!("hello {me} ")),
        "the proxy's log and the server disagree on {me}: {body:?}"
    );
    Ok(by_proxy)
}

fn lists(w: &World) -> Result<()> {
    let files = ctl_files(w, "r", 30_000)?;
    let base = std::fs::read_to_string(&files.config)?;
    std::fs::write(&files.config, format!("{base}skip = [\"{SERVER2}/32\"]\n"))?;
    let ctl = spawn_ctl(w, &files)?;
    let e1 = Engine::start(w, 0, &AgentExtra::default())?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;

    for _ in 0..3 {
        ensure!(proxied(w, &e1, SERVER)?, "{SERVER} is redirected");
        ensure!(!proxied(w, &e1, SERVER2)?, "{SERVER2} is skipped");
    }
    let shown = shown_service(&ctl)?;
    ensure!(
        shown["skip"] == serde_json::json!([format!("{SERVER2}/32")]),
        "{shown:#}"
    );

    // A reload swaps the lists; the group keeps running (no re-join).
    std::fs::write(
        &files.config,
        format!("{base}redirect = [\"{SERVER2}/32\"]\n"),
    )?;
    let answer = control_request(&files.socket, &serde_json::json!({"command": "reload"}))?;
    ensure!(answer["ok"] == true, "reload: {answer:#}");
    for _ in 0..3 {
        ensure!(
            !proxied(w, &e1, SERVER)?,
            "{SERVER} is not on the redirect list"
        );
        ensure!(
            proxied(w, &e1, SERVER2)?,
            "{SERVER2} is on the redirect list"
        );
    }
    let shown = shown_service(&ctl)?;
    ensure!(
        shown["engines"][0]["state"] == "usable" && slots(&shown).values().sum::<u64>() == 256,
        "still assigned after the reload: {shown:#}"
    );
    println!("lists: skip and redirect lists enforced, swapped by reload with the view kept");
    Ok(())
}

/// `redirect_out` (tc egress, Cisco's `redirect out`) from the configuration, with no
/// `redirect_in` at all: what the router forwards out of its server-facing interface is
/// redirected and served through the proxy; a reload that drops it detaches it.
#[test]
fn redirect_out_serves_flows_through_the_proxy_until_a_reload_drops_it() {
    if let Err(e) = World::new("e2eout", 1).and_then(|w| w.run(redirect_out)) {
        panic!("{e:#}");
    }
}

fn redirect_out(w: &World) -> Result<()> {
    let files = ctl_files_with(
        w,
        "r",
        30_000,
        "redirect_out = [\"r2\"]\nexclude = [\"r1\"]",
    )?;
    let ctl = spawn_ctl(w, &files)?;
    let shown = ctl.status()?;
    ensure!(
        shown["dataplane"]["redirect_out"] == serde_json::json!(["r2"])
            && shown["dataplane"]["last_error"].is_null(),
        "{:#}",
        shown["dataplane"]
    );
    // The egress link is pinned, so that it outlives the controller like the XDP links.
    let pin = files.pin_root.join("links-out").join("r2");
    ensure!(pin.exists(), "{} is pinned", pin.display());
    let e1 = Engine::start(w, 0, &AgentExtra::default())?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;
    for _ in 0..3 {
        ensure!(
            proxied(w, &e1, SERVER).with_context(|| logs(Some(&ctl), &[&e1]))?,
            "redirected at r2's egress"
        );
    }
    // With GRO on the client side, the router forwards an upload's segments merged into
    // GSO packets; at egress they are encapsulated for the kernel to segment, so the
    // whole flow still goes to the engine (none of it leaks past to the server).
    gro_on(&w.router, "r0")?;
    let port = 47_000;
    let body: Vec<u8> = (0..UPLOAD as u64).map(pattern).collect();
    let (whole, answer) = http_post(
        &w.client,
        port,
        SocketAddrV4::new(SERVER, HTTP_PORT),
        &body,
        Duration::from_secs(20),
    )
    .with_context(|| logs(Some(&ctl), &[&e1]))?;
    let reasons = router_reasons(&ctl.pin_root)?;
    ensure!(
        whole && e1.proxy().saw(SocketAddr::from((CLIENT, port))),
        "a {UPLOAD}-byte upload through redirect out, with GRO before it, reached the server \
         through the proxy: {answer:?}; router {reasons:?}"
    );
    let gso = router_counter(&ctl.pin_root, STATS_GSO_ENCAPSULATED)?;
    ensure!(
        gso > 0 && reason(&reasons, "TooBig") + reason(&reasons, "TooBigDf") == 0,
        "GSO packets went to the engine whole ({gso}), none failed open: {reasons:?}"
    );
    let base = std::fs::read_to_string(&files.config)?;
    std::fs::write(&files.config, base.replace("redirect_out = [\"r2\"]\n", ""))?;
    let answer = control_request(&files.socket, &serde_json::json!({"command": "reload"}))?;
    ensure!(answer["ok"] == true, "reload: {answer:#}");
    ensure!(
        ctl.status()?["dataplane"]["redirect_out"] == serde_json::json!([]),
        "detached"
    );
    ensure!(!pin.exists(), "{} removed with the detach", pin.display());
    ensure!(!proxied(w, &e1, SERVER)?, "no redirection left");
    println!(
        "redirect out: flows forwarded out of r2 served through the proxy ({UPLOAD}-byte \
         upload with GRO: {gso} GSO packets redirected); detached by reload"
    );
    Ok(())
}
