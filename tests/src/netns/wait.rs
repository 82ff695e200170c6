//! Bounded polling: tests wait for conditions, never for fixed sleeps, and never forever.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Polls `check` until it returns `Ok(true)`, backing off from 5 ms to 100 ms between tries.
/// Fails after `timeout` naming `what`, quoting the last error `check` returned, if any;
/// an error from `check` is treated as "not yet", since the thing waited for often errors
/// until it is ready (a connection refused, a file not there yet).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    let mut last_err = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            match last_err {
                Some(e) => {
                    return Err(e)
                        .with_context(|| format!("timed out after {timeout:?} waiting for {what}"))
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Local TCP ports in LISTEN state, read from the calling thread's network namespace
/// (`/proc/thread-self/net/tcp` and `tcp6`; the kernel's own table, not a tool's output).
pub(crate) fn listening_tcp_ports() -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            // No IPv6 in this kernel or namespace: nothing listens there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {file}")),
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(local), Some(_remote), Some(state)) =
                (fields.nth(1), fields.next(), fields.next())
            else {
                continue;
            };
            // State 0A is TCP_LISTEN; the local address is HEXADDR:HEXPORT.
            if state != "0A" {
                continue;
            }
            if let Some(port) = local.rsplit(':').next() {
                if let Ok(p) = u16::from_str_radix(port, 16) {
                    ports.push(p);
                }
            }
        }
    }
    Ok(ports)
}
