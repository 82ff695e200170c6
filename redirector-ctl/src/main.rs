//! `redirector-ctl`: the router side of WCCPv2.
//!
//! `run` drives one `wccp::router::Router` per configured service group on a real clock
//! and a UDP 2048 socket (see [`daemon`]), applies its tables to a [`dataplane::DataPlane`],
//! and answers `show`, `stop`, `attach`, `detach` and `reload` over a Unix control socket
//! ([`control`]). Exit codes: 0 success, 1 runtime failure, 2 bad configuration or input.
//!
//! ## Status
//! - `decode`: done (pcap/pcapng, UDP 2048 messages, GRE redirect headers, checksums, MD5).
//! - `check`, config: done (TOML, every key checked, errors with key and line:col, exit 2).
//! - `run`: done: UDP bound to the configured address (multicast groups joined), one
//!   router per service on tokio's clock, actions to the data plane, structured logs
//!   (`--log-format json`), SIGHUP reload (unchanged groups untouched; a group whose
//!   settings changed restarts with the new ones; a bad file is refused), SIGTERM leaves
//!   the data plane under its grace, `stop [--clear]`.
//! - `show`, `attach`/`detach`, `reload`, `stop` over the control socket: done.
//! - Prometheus metrics: done.
//! - Next hops: done ([`nexthop`]): each engine's route, egress interface (index, MAC,
//!   MTU), gateway, neighbour MAC and the router's address on that side come from netlink
//!   (rtnetlink), absent neighbours are resolved by the kernel on request (NTF_USE), and
//!   neighbour, IPv4 route and link notifications re-program the data plane atomically
//!   (a MAC move is followed within tens of milliseconds of the neighbour update). An
//!   unresolved engine (and an L2 engine behind a gateway) is installed not usable, so its
//!   buckets fail open; `show engines` gives each engine's `next_hop` with the reason.
//!   Tested in network namespaces with the real binary and XDP (tests/nexthop.rs).
//! - Reload in place: a changed password, timers or group list goes through
//!   `wccp::router::Router::reconfigure` (view kept); methods or definition restart the group.
//! - Redirect and skip lists (`redirect`/`skip` prefixes): enforced by the XDP plane
//!   (`DataPlane::set_lists`), changed by reload without restarting the group
//!   (tests/tests/e2e_lists.rs). Engines' L2 return method is passed to the data plane.
//! - `redirect_out` (tc egress): attached at start, adopted on restart, changed by reload,
//!   shown; proxied flows through it end to end (tests/tests/e2e_lists.rs).
//! - XDP attach with redirection to a joined engine: tested in network namespaces
//!   (tests/nexthop.rs). Not yet tested here: Squid interop (patched Squid being built).

#![warn(missing_docs)]

mod config;
mod control;
mod daemon;
mod dataplane;
mod decode;
mod metrics;
mod nexthop;
mod status;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_CONTROL_SOCKET};
use crate::control::{Format, Request};
use crate::status::Section;

/// Router-side WCCPv2 controller for Linux, with an XDP data plane.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every WCCP message in a capture file (pcap or pcapng).
    ///
    /// Shows WCCPv2 control messages on UDP 2048 component by component, and the redirect
    /// header of GRE-redirected packets. Flags bad IPv4/UDP checksums, malformed messages
    /// and (with --password) MD5 digests that do not match. Exit code 0 when the file was
    /// read whole, 2 when it is not a capture or is truncated or corrupt (frames read
    /// before the damage are still printed).
    Decode {
        /// The capture, as written by tcpdump -w or tshark -w.
        file: PathBuf,
        /// Service password to verify MD5-signed messages with.
        #[arg(long)]
        password: Option<String>,
        /// Print one JSON document ({"records": [...], "capture_error": ...}) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and exit: 0 when it is good, 2 with the key and line of
    /// the first error.
    Check {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the controller (as a daemon under systemd; it does not fork).
    Run {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Do not touch XDP: record tables in memory only (tests; hosts without XDP).
        #[arg(long)]
        no_dataplane: bool,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Show the running controller's state (like `show ip wccp`).
    Show {
        /// Which part.
        #[arg(value_enum, default_value_t = Section::All)]
        section: Section,
        /// One service: 0 or web-cache, a dynamic id (90), or dynamic/90.
        service: Option<String>,
        /// Print the stable JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop the running controller. The data plane keeps redirecting until its grace
    /// runs out, so a restart is hitless; with --clear redirection is removed at once.
    Stop {
        /// Remove redirection now (fail open).
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Start redirecting inbound traffic on an interface of the running controller.
    Attach {
        /// Interface name.
        iface: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Stop redirecting on an interface of the running controller.
    Detach {
        /// Interface name.
        iface: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Make the running controller re-read its configuration (like SIGHUP) and print what
    /// changed.
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Where the control socket is: given, from a config file, or the default.
#[derive(Debug, clap::Args)]
struct SocketArgs {
    /// The control socket.
    #[arg(short, long)]
    socket: Option<PathBuf>,
    /// Take the control socket path from this configuration file.
    #[arg(short, long, conflicts_with = "socket")]
    config: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> Result<PathBuf, ExitCode> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return match Config::load(c) {
                Ok(c) => Ok(c.control_socket),
                Err(e) => {
                    eprintln!("redirector-ctl: {e}");
                    Err(ExitCode::from(2))
                }
            };
        }
        Ok(PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            file,
            password,
            json,
        } => decode_command(&file, password.as_deref(), json),
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} service group{})",
                    config.display(),
                    c.services.len(),
                    if c.services.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("redirector-ctl: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            no_dataplane,
            log_format,
        } => run_command(config, no_dataplane, log_format),
        Command::Show {
            section,
            service,
            json,
            socket,
        } => client(
            &socket,
            &Request::Show {
                section,
                service,
                format: if json { Format::Json } else { Format::Text },
            },
        ),
        Command::Stop { clear, socket } => client(&socket, &Request::Stop { clear }),
        Command::Attach { iface, socket } => client(&socket, &Request::Attach { iface }),
        Command::Detach { iface, socket } => client(&socket, &Request::Detach { iface }),
        Command::Reload { socket } => client(&socket, &Request::Reload),
    }
}

fn client(socket: &SocketArgs, request: &Request) -> ExitCode {
    let path = match socket.path() {
        Ok(p) => p,
        Err(code) => return code,
    };
    match control::call(&path, request) {
        Err(e) => {
            eprintln!("redirector-ctl: {e}");
            ExitCode::from(1)
        }
        Ok(r) if !r.ok => {
            eprintln!(
                "redirector-ctl: {}",
                r.error
                    .as_deref()
                    .unwrap_or("the daemon refused the request")
            );
            ExitCode::from(1)
        }
        Ok(r) => {
            if let Some(v) = r.result {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
                );
            }
            if let Some(t) = r.text {
                print!("{t}");
                if !t.ends_with('\n') {
                    println!();
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn run_command(path: PathBuf, no_dataplane: bool, log_format: LogFormat) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration; not starting");
            eprintln!("redirector-ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let plane: Box<dyn dataplane::DataPlane> = if no_dataplane {
        tracing::warn!(
            "--no-dataplane: tables are recorded in memory only; no traffic is redirected"
        );
        Box::new(dataplane::MemoryPlane::default())
    } else {
        match dataplane::XdpPlane::open(&config.dataplane.pin_root) {
            Ok(p) => Box::new(p),
            Err(e) => {
                tracing::error!(error = %e, pin_root = %config.dataplane.pin_root.display(),
                    "cannot open the XDP data plane (use --no-dataplane on hosts without XDP)");
                return ExitCode::from(1);
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(daemon::run(path, config, plane)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "redirector-ctl failed to start");
            ExitCode::from(1)
        }
    }
}

fn decode_command(file: &std::path::Path, password: Option<&str>, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("redirector-ctl decode: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let capture = match decode::read_capture(&bytes) {
        Ok(capture) => capture,
        Err(e) => {
            eprintln!("redirector-ctl decode: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let records = decode::records(&capture, password);
    let mut out = std::io::stdout().lock();
    let written = if json {
        let report = decode::Report {
            records: &records,
            flagged: records.iter().filter(|r| r.is_bad()).count(),
            capture_error: capture.error.as_ref().map(ToString::to_string),
        };
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        decode::write_text(&mut out, &records)
    };
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("redirector-ctl decode: writing output: {e}");
            return ExitCode::from(1);
        }
    }
    if let Some(error) = &capture.error {
        eprintln!("redirector-ctl decode: {}: {error}", file.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
