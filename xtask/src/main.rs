//! `cargo xtask`: project tasks that cargo alone cannot express.
//!
//! Each task is a subcommand with its own module: `build-ebpf`, `bench` and `lab` (the
//! demonstration in namespaces, whose helper programs are hidden subcommands so that they
//! run as processes of their own inside the lab's hosts).

mod bench;
mod bench_dataplane;
mod build_ebpf;
mod lab;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project tasks, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per task; each task owns its options in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Compile every redirector-ebpf/src/bpf/*.c with clang into redirector-ebpf/obj/<name>.o
    BuildEbpf(build_ebpf::Options),
    /// Time the protocol state machines (Here-I-Am -> I-See-You, 32-engine assignment);
    /// `bench dataplane` measures the XDP redirector instead
    Bench(BenchArgs),
    /// The whole system in network namespaces (root): a client, a router running
    /// redirector-ctl with XDP, engines running engine-agent with transparent proxies, a
    /// server; traffic, shown live, through an engine joining, one failing, a wrong
    /// password refused and packet return; everything torn down at the end
    Lab(lab::Options),
    /// The lab's transparent proxy (run inside an engine's namespace by `lab`)
    #[command(hide = true)]
    LabProxy(lab::procs::ProxyArgs),
    /// The lab's HTTP server (run inside the server's namespace by `lab`)
    #[command(hide = true)]
    LabServer(lab::procs::ServerArgs),
}

/// `bench` alone times the protocol; `bench dataplane` the XDP data plane.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
    #[command(flatten)]
    protocol: bench::Options,
}

/// The benchmark suites other than the protocol's.
#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// XDP redirector: ns/packet, live-frames Mpps and kernel forwarding, as ratios to
    /// baselines in the same run (root)
    Dataplane(bench_dataplane::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::BuildEbpf(options) => build_ebpf::run(&options),
        Command::Bench(BenchArgs {
            what: Some(BenchWhat::Dataplane(options)),
            ..
        }) => bench_dataplane::run(&options),
        Command::Bench(BenchArgs { protocol, .. }) => bench::run(&protocol),
        Command::Lab(options) => match lab::run(&options) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::LabProxy(args) => lab::procs::proxy(&args),
        Command::LabServer(args) => lab::procs::server(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes on one line, without a backtrace even when
            // RUST_BACKTRACE is set: these errors are for people, not debuggers.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
