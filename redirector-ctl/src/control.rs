//! The control socket protocol: one JSON request per line, one JSON response per line, on
//! a Unix stream socket only root (or the daemon's own user) may use.
//!
//! Requests (`command` names the request):
//!
//! ```text
//! {"command":"show","section":"engines","service":"90","format":"json"}
//! {"command":"stop","clear":false}
//! {"command":"attach","iface":"eth0"}
//! {"command":"detach","iface":"eth0"}
//! {"command":"reload"}
//! ```
//!
//! Responses: `{"ok":true,"result":<JSON>}`, `{"ok":true,"text":"..."}` or
//! `{"ok":false,"error":"..."}`. A connection may carry any number of requests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::Section;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The `show` view.
    Show {
        /// Which part.
        #[serde(default = "all")]
        section: Section,
        /// One service (`0`, `web-cache`, `90`, `dynamic/90`).
        #[serde(default)]
        service: Option<String>,
        /// `json` (default) or `text`.
        #[serde(default)]
        format: Format,
    },
    /// Stop the controller; with `clear`, remove redirection at once.
    Stop {
        /// Fail open now instead of leaving the data plane under its grace.
        #[serde(default)]
        clear: bool,
    },
    /// Start redirecting inbound traffic of an interface.
    Attach {
        /// Interface name.
        iface: String,
    },
    /// Stop redirecting on an interface.
    Detach {
        /// Interface name.
        iface: String,
    },
    /// Re-read the configuration file (what SIGHUP does).
    Reload,
}

fn all() -> Section {
    Section::All
}

/// How `show` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Structured (`result`).
    #[default]
    Json,
    /// Operator text (`text`).
    Text,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Structured result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Text result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// Success with a JSON result.
    pub fn json(v: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(v),
            text: None,
            error: None,
        }
    }

    /// Success with text.
    pub fn text(t: String) -> Response {
        Response {
            ok: true,
            result: None,
            text: Some(t),
            error: None,
        }
    }

    /// Failure.
    pub fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            text: None,
            error: Some(e.into()),
        }
    }
}

/// Sends one request and waits for its response (the client side of every subcommand
/// but `run`, `check` and `decode`).
pub fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to {} ({e}): is redirector-ctl running, and are you root?",
            socket.display()
        )
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = &stream;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|e| format!("writing to {}: {e}", socket.display()))?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    if answer.is_empty() {
        return Err("the daemon closed the connection without answering".into());
    }
    serde_json::from_str(&answer).map_err(|e| format!("bad response from the daemon: {e}"))
}
