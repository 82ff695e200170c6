//! `engine-agent`: the engine side of WCCPv2 — announces this host to the routers of each
//! configured service group, learns the group's view, and, when it is the designated
//! engine, hands the routers the bucket or mask assignment.
//!
//! ```text
//! engine-agent check -c FILE             # parse and check a config; exit 2 when bad
//! engine-agent run -c FILE [--log-format text|json]
//! engine-agent show [services|routers|assignment|stats] [--json] [-s SOCKET | -c FILE]
//! engine-agent reload [-s SOCKET | -c FILE]   # as SIGHUP
//! engine-agent stop [-s SOCKET | -c FILE]     # leave the group (SHUTDOWN) and exit
//! ```
//!
//! Exit codes: 0 success, 1 runtime error (socket in use, daemon unreachable), 2 bad
//! configuration or usage.
//!
//! Signals: SIGTERM/SIGINT leave the group with the Command Extension's SHUTDOWN and wait
//! up to 2 s for every SHUTDOWN RESPONSE; SIGHUP reloads the configuration (weight,
//! password, routers, services) without leaving the group, and a bad file is refused with
//! the old configuration kept.
//!
//! ## Status
//!
//! - [x] TOML config with key + line errors, `check`, example configs tested.
//! - [x] `run`: one UDP socket (plus a group socket for multicast), one `wccp::engine::Engine`
//!   per service, real clock, JSON or text logs, every event logged by kind.
//! - [x] SIGTERM/SIGINT/`stop`: SHUTDOWN, brief wait for SHUTDOWN RESPONSE.
//! - [x] SIGHUP/`reload`: changed services get a new engine primed with the routers' last
//!   I-See-You (re-signed for a new password), so the group never sees the engine leave.
//! - [x] Control socket (0600, line-delimited JSON), `show` sections, `stop`, `reload`.
//! - [x] Prometheus metrics on an optional address.
//! - [x] Integration tests with real processes and an in-test `wccp::router::Router` on
//!   loopback: config errors; join, 1.5 T assignment, `show`, SIGHUP weight, bad reload,
//!   SIGTERM SHUTDOWN (`tests/join.rs`); two agents split by weight, one stops, the other
//!   holds all buckets (`tests/two_engines.rs`); multicast group; metrics; counted errors.
//! - [x] Data plane (`[dataplane]`, [`dataplane`]): the engine tc program of
//!   `redirector-ebpf` decapsulates to the transparent proxy, GRE accepted from the
//!   configured and viewed routers, `[[return_rule]]` with rewrite and copy, local delivery
//!   installed and removed; proxy liveness check (leave with SHUTDOWN while the proxy is
//!   down, re-join when it answers); `run --dataplane-only`. End to end in
//!   `tests/tests/e2e_*.rs`.
//! - [x] Netns tests against `redirector-ctl` and Squid (`tests/tests/agents_failover.rs`,
//!   `multi_router.rs`, `squid_join.rs`).
//! - [ ] Syncookies on the engine: the completing ACK finds no half-open socket and is
//!   returned (breaks that connection).
//! - [ ] The control socket is chmod 0600 just after bind (a moment at the umask's mode);
//!   its directory is the guard (`RuntimeDirectory` in the systemd unit).
//! - [ ] Reload restarts a changed service's assignment change numbers at 1 (a new
//!   engine); routers accept it (they check the key's engine and their own Receive ID and
//!   member change), but a `wccp::engine::Engine::reconfigure` would keep them.

mod config;
mod control;
mod daemon;
mod dataplane;
mod metrics;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_CONTROL_SOCKET};
use crate::control::Request;

#[derive(Parser, Debug)]
#[command(name = "engine-agent", version, about = "Engine-side WCCPv2 agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check a configuration file; print a summary.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the agent.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Run only the packet side (`[dataplane]`), for a proxy that speaks WCCP itself:
        /// no UDP 2048 socket, GRE taken from the configured routers and `accept_from`.
        #[arg(long)]
        dataplane_only: bool,
    },
    /// Ask the running agent what it knows.
    Show {
        /// What to show.
        #[arg(value_enum, default_value = "services")]
        what: Section,
        /// Print JSON (stable; documented in the README).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Re-read the configuration (as SIGHUP).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Leave the group (SHUTDOWN) and stop the agent.
    Stop {
        #[command(flatten)]
        target: Target,
    },
}

/// Where the running agent listens.
#[derive(clap::Args, Debug)]
struct Target {
    /// Control socket path.
    #[arg(short, long)]
    socket: Option<PathBuf>,
    /// Take the control socket path from this configuration file.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Services,
    Routers,
    Assignment,
    Stats,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok: engine {} port {}, {} service(s): {}",
                    config.display(),
                    c.address,
                    c.port,
                    c.services.len(),
                    c.services
                        .iter()
                        .map(|s| wccp::proto::ServiceId::of(&s.service).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            log_format,
            dataplane_only,
        } => run(&config, log_format, dataplane_only),
        Command::Show { what, json, target } => client(&target, |sock| show(sock, what, json)),
        Command::Reload { target } => client(&target, |sock| {
            control::request(sock, Request::Reload).map(|_| println!("reloaded"))
        }),
        Command::Stop { target } => client(&target, |sock| {
            control::request(sock, Request::Stop).map(|_| println!("stopped"))
        }),
    }
}

fn run(path: &Path, log_format: LogFormat, dataplane_only: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(daemon::run(path, cfg, dataplane_only)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "engine-agent failed");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn client(target: &Target, f: impl FnOnce(&Path) -> anyhow::Result<()>) -> ExitCode {
    let sock = match (&target.socket, &target.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => match Config::load(c) {
            Ok(cfg) => cfg.control_socket,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    match f(&sock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Keys of each service object that a section shows (with `service` always first).
fn section_keys(what: Section) -> &'static [&'static str] {
    match what {
        Section::Services => &[],
        Section::Routers => &["routers", "group_routers"],
        Section::Assignment => &[
            "assignment_method",
            "engines",
            "designated",
            "designated_is_us",
            "assignment_change",
            "assignment",
        ],
        Section::Stats => &["messages_in", "messages_out", "errors", "events"],
    }
}

fn show(sock: &Path, what: Section, json: bool) -> anyhow::Result<()> {
    let v = control::request(sock, Request::Show)?;
    let status = v.get("data").cloned().unwrap_or_default();
    let keys = section_keys(what);
    let doc = if keys.is_empty() {
        status.clone()
    } else {
        let services: Vec<serde_json::Value> = status
            .get("services")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let mut o = serde_json::Map::new();
                o.insert(
                    "service".into(),
                    s.get("service").cloned().unwrap_or_default(),
                );
                for k in keys {
                    o.insert((*k).into(), s.get(*k).cloned().unwrap_or_default());
                }
                serde_json::Value::Object(o)
            })
            .collect();
        let mut o = serde_json::Map::new();
        o.insert("services".into(), services.into());
        if what == Section::Stats {
            o.insert(
                "errors".into(),
                status.get("errors").cloned().unwrap_or_default(),
            );
        }
        serde_json::Value::Object(o)
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render_text(&status, what));
    }
    Ok(())
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn render_text(st: &serde_json::Value, what: Section) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "engine {} port {} up {} ms",
        s(&st["address"]),
        s(&st["port"]),
        s(&st["uptime_ms"])
    );
    if what == Section::Stats {
        let _ = write!(o, "agent errors:");
        if let Some(m) = st["errors"].as_object() {
            for (n, c) in m {
                let _ = write!(o, " {n}={c}");
            }
        }
        let _ = writeln!(o);
    }
    for sv in st["services"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(o, "\nservice {}", s(&sv["service"]));
        match what {
            Section::Services => {
                let _ = writeln!(
                    o,
                    "  weight {}  methods {}/{}/{}  T {} ms  password {}",
                    s(&sv["weight"]),
                    s(&sv["forwarding"]),
                    s(&sv["return"]),
                    s(&sv["assignment_method"]),
                    s(&sv["interval_ms"]),
                    s(&sv["password"])
                );
                let routers: Vec<String> = sv["routers"]
                    .as_array()
                    .map(|a| a.iter().map(|r| s(&r["address"])).collect())
                    .unwrap_or_default();
                let _ = writeln!(o, "  usable routers: {}", join(&routers));
                let _ = writeln!(o, "  engines: {}", join_json(&sv["engines"]));
                let _ = writeln!(
                    o,
                    "  designated: {}{}",
                    s(&sv["designated"]),
                    if sv["designated_is_us"].as_bool() == Some(true) {
                        " (this engine)"
                    } else {
                        ""
                    }
                );
                let _ = writeln!(
                    o,
                    "  buckets held: {}",
                    s(&sv["assignment"]["bucket_count"])
                );
            }
            Section::Routers => {
                for r in sv["routers"].as_array().cloned().unwrap_or_default() {
                    let _ = writeln!(
                        o,
                        "  {}  receive-id {}  member-change {}  key {}/{}  heard {} ms ago  engines {}",
                        s(&r["address"]),
                        s(&r["receive_id"]),
                        s(&r["member_change"]),
                        s(&r["key_engine"]),
                        s(&r["key_change"]),
                        s(&r["last_heard_ms_ago"]),
                        join_json(&r["engines"])
                    );
                }
                let _ = writeln!(o, "  group routers: {}", join_json(&sv["group_routers"]));
            }
            Section::Assignment => {
                let _ = writeln!(
                    o,
                    "  method {}  designated {}  last change sent {}",
                    s(&sv["assignment_method"]),
                    s(&sv["designated"]),
                    s(&sv["assignment_change"])
                );
                let a = &sv["assignment"];
                let _ = writeln!(
                    o,
                    "  buckets ({}): {}",
                    s(&a["bucket_count"]),
                    join_json(&a["buckets"])
                );
                for m in a["mask_values"].as_array().cloned().unwrap_or_default() {
                    let _ = writeln!(o, "  mask value {}", s(&m));
                }
            }
            Section::Stats => {
                for k in ["messages_in", "messages_out", "errors", "events"] {
                    let _ = write!(o, "  {k}:");
                    if let Some(m) = sv[k].as_object() {
                        for (n, c) in m {
                            let _ = write!(o, " {n}={c}");
                        }
                    }
                    let _ = writeln!(o);
                }
            }
        }
    }
    o
}

fn join(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn join_json(v: &serde_json::Value) -> String {
    join(
        &v.as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>())
            .unwrap_or_default(),
    )
}
