//! The control socket protocol and its client (`engine-agent show`, `stop`).
//!
//! A Unix stream socket, mode 0600; one JSON object per line each way:
//!
//! * `{"command":"show"}` → `{"result":"status","data":{...}}` (see [`crate::status`])
//! * `{"command":"reload"}` → `{"result":"ok"}` or `{"result":"error","data":"why"}`
//! * `{"command":"stop"}` → `{"result":"ok"}` once SHUTDOWN has been sent and answered
//!   (or the grace time is over); the daemon then exits.
//!
//! A malformed request gets `{"result":"error","data":"bad request: ..."}` and the
//! connection stays open.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::status::Status;

/// A request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The status document.
    Show,
    /// Re-read the configuration file (as SIGHUP).
    Reload,
    /// Leave the group and exit.
    Stop,
}

/// A response line.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", content = "data", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// The status document.
    Status(Box<Status>),
    /// Refused, with why.
    Error(String),
}

/// Sends one request and returns the response as JSON.
pub fn request(socket: &Path, req: Request) -> anyhow::Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach engine-agent at {} (is it running? root only)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(&req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp).context("reading the answer")?;
    if resp.is_empty() {
        bail!("engine-agent closed the connection without answering");
    }
    let v: serde_json::Value = serde_json::from_str(&resp).context("answer is not JSON")?;
    if v.get("result").and_then(|r| r.as_str()) == Some("error") {
        bail!(
            "engine-agent: {}",
            v.get("data").and_then(|d| d.as_str()).unwrap_or("error")
        );
    }
    Ok(v)
}
