//! End to end, the controller's lifetime (see `e2e_common` for the lab):
//!
//! 6. `kill -9` of `redirector-ctl` during a proxied transfer: the transfer completes
//!    (the pinned data plane keeps redirecting); a restarted controller on the same pin
//!    root adopts the links and maps (no re-attach, the engine re-joins it, new flows
//!    are proxied) and the transfer outlives the first controller's grace; then the
//!    controller is killed and left dead: after the dead-man grace (`grace_ms`, short
//!    here) redirection fails open and new flows go straight to the server.

mod e2e_common;

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e_common::*;
use nix::sys::signal::Signal;

const GRACE_MS: u64 = 2000;

#[test]
fn killed_controller_keeps_traffic_and_fails_open_after_its_grace() {
    if let Err(e) = World::new("e2erestart", 1).and_then(|w| w.run(kill_restart)) {
        panic!("{e:#}");
    }
}

/// Kills the controller and keeps its guard from clearing the shared pin root.
fn kill9(ctl: &mut netns_tests::daemons::Ctl) -> Result<()> {
    ctl.process.signal(Signal::SIGKILL)?;
    ctl.process.wait_timeout(Duration::from_secs(5))?;
    ctl.pin_root = PathBuf::new();
    Ok(())
}

/// Removes the shared pin root however the test ends (the guards of killed controllers
/// are told not to).
struct PinCleanup(PathBuf);

impl Drop for PinCleanup {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn kill_restart(w: &World) -> Result<()> {
    let files = ctl_files(w, "r", GRACE_MS)?;
    let _pins = PinCleanup(files.pin_root.clone());
    let mut ctl = spawn_ctl(w, &files)?;
    let e1 = Engine::start(w, 0, &AgentExtra::default())?;
    wait_slots(&ctl, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl), &[&e1]))?;

    // A 4 MB download spread over 5 s, through the proxy.
    const SIZE: u64 = 4_000_000;
    const SPREAD_MS: u64 = 5000;
    let client = w.client.clone();
    let t0 = Instant::now();
    let transfer = std::thread::spawn(move || {
        http_get_raw(
            &client,
            45_000,
            SocketAddrV4::new(SERVER, HTTP_PORT),
            &format!("/bytes/{SIZE}/{SPREAD_MS}"),
            Duration::from_secs(15),
        )
    });
    let peer = SocketAddr::from((CLIENT, 45_000));
    wait_for(
        "the proxy to take the transfer",
        Duration::from_secs(3),
        || Ok(e1.proxy().saw(peer)),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    kill9(&mut ctl)?;
    println!(
        "(6) controller killed with -9 {} ms into the transfer",
        ms(t0.elapsed())
    );
    std::thread::sleep(Duration::from_millis(GRACE_MS / 2));
    let ctl2 = spawn_ctl(w, &files)?;
    let restarted = killed.elapsed();
    let st = ctl2.status()?;
    let ifaces: Vec<String> = st["dataplane"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    println!(
        "(6) restarted {} ms after the kill; interfaces {ifaces:?}, last_error {}, errors {}",
        ms(restarted),
        st["dataplane"]["last_error"],
        st["stats"]["errors"]
    );
    ensure!(
        st["dataplane"]["last_error"].is_null(),
        "adopting the pinned links is no error: {:#}",
        st["dataplane"]
    );
    ensure!(
        ifaces.contains(&"r0".to_string()) && ifaces.contains(&"r1".to_string()),
        "{st:#}"
    );
    let log = ctl2.log();
    ensure!(
        log.contains("adopt"),
        "the restarted controller says it adopted the pinned data plane:\n{}",
        netns_tests::daemons::tail(&log, 30)
    );
    let (_, rejoined) = wait_slots(&ctl2, &[(engine_ip(0), 256)], Duration::from_secs(20))
        .with_context(|| logs(Some(&ctl2), &[&e1]))?;
    println!(
        "(6) engine back in the restarted controller's table {} ms after its start",
        ms(rejoined)
    );
    let (body, _) = transfer
        .join()
        .expect("transfer thread")
        .with_context(|| logs(Some(&ctl2), &[&e1]))?;
    let done = t0.elapsed();
    ensure!(
        body.len() as u64 == SIZE,
        "received {} of {SIZE} bytes",
        body.len()
    );
    let bad = body
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(i as u64));
    ensure!(bad.is_none(), "byte {bad:?} differs");
    println!(
        "(6) transfer of {SIZE} bytes completed after {} ms ({} ms after the kill, grace {GRACE_MS} ms)",
        ms(done),
        ms(killed.elapsed())
    );
    ensure!(
        killed.elapsed() > Duration::from_millis(GRACE_MS),
        "the transfer outlived the first controller's grace"
    );
    // New flows are proxied under the restarted controller.
    let (body, _) = http_get(
        &w.client,
        45_001,
        SocketAddrV4::new(SERVER, HTTP_PORT),
        "/",
        Duration::from_secs(5),
    )?;
    ensure!(
        body.starts_with(&format!("hello {}:", engine_ip(0))),
        "{body:?}"
    );

    // Killed again and left dead: fails open after the grace.
    let mut ctl2 = ctl2;
    let pin_root = files.pin_root.clone();
    let before = router_reasons(&pin_root)?;
    let killed = Instant::now();
    ctl2.process.signal(Signal::SIGKILL)?;
    ctl2.process.wait_timeout(Duration::from_secs(5))?;
    let mut last_proxied = None;
    let mut straddled = 0u32;
    let mut port = 45_100u16;
    let direct_at = loop {
        ensure!(
            killed.elapsed() < Duration::from_millis(GRACE_MS + 5000),
            "still redirected {} ms after the kill",
            ms(killed.elapsed())
        );
        port += 1;
        let got = http_get(
            &w.client,
            port,
            SocketAddrV4::new(SERVER, HTTP_PORT),
            "/",
            Duration::from_secs(2),
        );
        let at = killed.elapsed();
        let (body, me) = match got {
            Ok(answer) => answer,
            // A flow whose SYN went to the engine just before the switch failed open, and
            // whose next segments went to the server, is reset by the server: the one
            // flow a dead-man switch may cost, so only within moments of the grace.
            Err(e)
                if at.abs_diff(Duration::from_millis(GRACE_MS)) < Duration::from_millis(800)
                    && format!("{e:#}").contains("reset") =>
            {
                straddled += 1;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("{} ms after the kill", ms(at))),
        };
        if body.trim_end() == format!("hello {me} -> {SERVER}:80") {
            break killed.elapsed();
        }
        if !body.starts_with(&format!("hello {}:", engine_ip(0))) {
            bail!("unexpected answer {body:?}");
        }
        last_proxied = Some(killed.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    };
    let after = router_reasons(&pin_root)?;
    println!(
        "(6) left dead: last proxied flow {} ms after the kill, first direct flow {} ms after \
         (grace {GRACE_MS} ms); router fail-open by heartbeat {} -> {}",
        last_proxied.map_or("-".into(), |d| ms(d).to_string()),
        ms(direct_at),
        reason(&before, "Heartbeat"),
        reason(&after, "Heartbeat")
    );
    ensure!(
        direct_at >= Duration::from_millis(GRACE_MS - 600),
        "not before the grace"
    );
    ensure!(reason(&after, "Heartbeat") > reason(&before, "Heartbeat"));
    ensure!(
        straddled <= 1,
        "{straddled} flows reset around the fail-open"
    );
    if straddled > 0 {
        println!("(6) one flow straddled the fail-open instant and was reset");
    }
    drop(e1);
    // ctl2's guard removes the pin root (and with it the links): nothing is left redirecting.
    drop(ctl2);
    drop(ctl);
    Ok(())
}
