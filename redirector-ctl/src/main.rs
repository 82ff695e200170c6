//! `redirector-ctl`: the router side of WCCPv2.
//!
//! ## Status
//! - `decode`: done (pcap/pcapng, UDP 2048 messages, GRE redirect headers, checksums, MD5).
//! - `run`, `show`, `attach`/`detach`, metrics: next (issue 12), on top of `wccp::router`
//!   and the `redirector-ebpf` loader.

mod decode;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            file,
            password,
            json,
        } => decode_command(&file, password.as_deref(), json),
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
