//! `cargo xtask lab`: the whole system in network namespaces, driven and shown live.
//!
//! ```text
//!  client 10.77.1.2 ── cli0 router eth0 ── switch ── e1..e5 10.77.0.11-15 (engine-agent
//!           (XDP: redirect)  10.77.0.1 (XDP: returns)     [dataplane] + lab-proxy each)
//!                            srv0 10.77.9.254 ── server 10.77.9.10, 10.77.9.200 (HTTP)
//! ```
//!
//! The router runs the real `redirector-ctl run` with its XDP data plane, the engines the
//! real `engine-agent run` with the engine data plane and a transparent proxy, all with
//! short timers (T = 1 s) so that the demonstration takes about a minute. The client sends
//! short HTTP requests and holds long-lived connections while the lab walks through the
//! steps, narrating each: an engine joins (buckets move; no long-lived flow may break), an
//! engine fails (SIGKILL of its agent and proxy; failover timed), an engine with the wrong
//! password is refused, and a return rule sends flows back to the router past the proxy.
//!
//! Everything is torn down at the end, on error and on Ctrl-C, and the teardown is checked:
//! no namespace, process or pinned map of the lab may remain. The exit code is non-zero
//! when any step (or the teardown) fails, so the lab doubles as an end-to-end check.

mod monitor;
pub mod procs;
mod svg;
mod traffic;
mod view;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use netns_tests::daemons::{self, Agent, Ctl, CtlConfig};
use netns_tests::netns::{self, Host, Lab, Process};
use netns_tests::sockets;
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::{json, Value};

use monitor::{Monitor, Source, State};
use traffic::Traffic;
use view::{Narrator, Tui};

/// T, on the router and the agents: short, so that joins and failovers take seconds.
const T_MS: u64 = 1000;
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 10);
/// The server's second address, inside the engines' return rule.
const RETURNED: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 200);
const RETURN_PREFIX: &str = "10.77.9.192/26";
const PROXY_PORT: u16 = 3129;
const PASSWORD: &str = "labpass";
/// Engines at the start, then the one that joins, then the one refused.
const FIRST: usize = 3;
const ENGINES: usize = FIRST + 2;
/// The Squid engine's address (`--squid`): above the agents', so e1 stays designated.
const SQUID: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
/// Squid's Here-I-Am interval, which it cannot negotiate.
const SQUID_T_MS: u64 = 10_000;

/// Options of `lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds of client traffic at least (the steps take about 30, 45 with Squid; the rest
    /// is steady traffic at the end)
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Plain narrated lines instead of the terminal view (also when stdout is no terminal)
    #[arg(long)]
    pub non_interactive: bool,
    /// Print the summary as JSON on stdout (narration goes to stderr then)
    #[arg(long)]
    pub json: bool,
    /// Where the SVG of buckets per engine goes [default: target/lab/buckets.svg]
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Long-lived client connections
    #[arg(long, default_value_t = 12)]
    pub long_lived: usize,
    /// Join the patched Squid as an engine too (L2 forwarding, NAT intercept): `auto` when
    /// `scripts/build-squid.sh` has built it (never builds it), `on` (builds it if needed,
    /// about 5 minutes the first time), `off`. With Squid the router's T is Squid's 10 s and
    /// the agents negotiate 1 s with fast timers
    #[arg(long, value_enum, default_value_t = SquidMode::Auto)]
    pub squid: SquidMode,
    /// The patched Squid to run, once resolved (not an option).
    #[arg(skip)]
    pub squid_bin: Option<PathBuf>,
}

/// `--squid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SquidMode {
    /// When one is built.
    Auto,
    /// Always (built first if needed).
    On,
    /// Never.
    Off,
}

/// The patched Squid `scripts/build-squid.sh` built for the current patch, without
/// building: `SQUID_PATCHED`, else `<cache>/squid-<version>-<patch sha, 12 hex>/sbin/squid`
/// with the script's completion stamp.
fn built_squid() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SQUID_PATCHED") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let patch =
        std::fs::read(daemons::workspace_root().join("tests/squid/wccp2-64bit.patch")).ok()?;
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take()?.write_all(&patch).ok()?;
            c.wait_with_output().ok()
        })?;
    let sha: String = String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(12)
        .collect();
    let suffix = format!("-{sha}");
    let mut found: Vec<PathBuf> = std::fs::read_dir("/var/cache/wccp-redirector")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("squid-") && n.to_string_lossy().ends_with(&suffix)
            }) && p.join(".build-complete").is_file()
                && p.join("sbin/squid").is_file()
        })
        .map(|p| p.join("sbin/squid"))
        .collect();
    found.sort();
    found.pop()
}

/// One step's outcome, with the figures it is judged by.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// `baseline`, `join`, `fail`, `refuse`, `return`, `steady`.
    pub name: String,
    /// Whether every check of the step held.
    pub ok: bool,
    /// One line for people.
    pub summary: String,
    /// The figures (buckets moved, failover ms, ...).
    pub figures: BTreeMap<String, Value>,
}

/// One engine at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSummary {
    /// e1, e2, ...
    pub name: String,
    /// Its address.
    pub address: String,
    /// What the lab did with it.
    pub role: String,
    /// Buckets it holds at the end.
    pub buckets: u64,
    /// Requests its proxy relayed.
    pub requests: u64,
    /// Packets the router redirected to it.
    pub packets_redirected: u64,
    /// Packets the router decapsulated from it (packet return).
    pub packets_returned: u64,
    /// Its data plane's `return_rule` counter.
    pub return_rule: u64,
}

/// What the teardown left (all zero and false when clean).
#[derive(Debug, Clone, Serialize, Default)]
pub struct TeardownCheck {
    /// Whether nothing was left.
    pub ok: bool,
    /// The lab's namespaces still listed.
    pub namespaces_left: Vec<String>,
    /// The router's pin root, when it still exists.
    pub pin_root_left: Option<String>,
    /// Processes the lab started that still run.
    pub processes_left: Vec<u32>,
    /// Squid's shared-memory segments (not per namespace, so namespace deletion does not
    /// remove them).
    pub shm_left: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Every step and the teardown ok.
    pub ok: bool,
    /// Wall time of the run, builds excluded.
    pub duration_ms: u64,
    /// The steps, in order.
    pub steps: Vec<StepResult>,
    /// Per engine.
    pub engines: Vec<EngineSummary>,
    /// Short requests over the run.
    pub requests_ok: u64,
    /// See `requests_ok`.
    pub requests_failed: u64,
    /// Long-lived connections, and how many broke.
    pub long_lived: usize,
    /// See `long_lived`.
    pub long_lived_broken: usize,
    /// The SVG written.
    pub svg: String,
    /// What teardown left.
    pub teardown: TeardownCheck,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

/// Runs the lab; `Ok(false)` when a step failed (the exit code says so).
pub fn run(opts: &Options) -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab makes network namespaces and loads eBPF programs: run it as root");
    }
    let interactive = !opts.non_interactive && !opts.json && std::io::stdout().is_terminal();
    let abort = Arc::new(AtomicBool::new(false));
    {
        let abort = abort.clone();
        // Ctrl-C and SIGTERM: stop at the next wait, then tear down as on any error.
        ctrlc::set_handler(move || abort.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    prepare()?;
    let mut opts = opts.clone();
    opts.squid_bin = match opts.squid {
        SquidMode::Off => None,
        SquidMode::Auto => built_squid(),
        SquidMode::On => Some(daemons::patched_squid()?),
    };
    let opts = &opts;

    let t0 = Instant::now();
    let state = Arc::new(Mutex::new(State::default()));
    let out = Narrator::new(state.clone(), !interactive, opts.json, t0);
    let tui = if interactive {
        Some(Tui::start(state.clone(), abort.clone())?)
    } else {
        None
    };
    let lab = Lab::new("lab")?;
    let lab_id = lab.id().to_string();
    let pids = Arc::new(Mutex::new(Vec::new()));
    let pin_root = Arc::new(Mutex::new(None::<PathBuf>));
    let svg_path = opts.svg.clone().unwrap_or_else(|| {
        daemons::workspace_root()
            .join("target")
            .join("lab")
            .join("buckets.svg")
    });
    let mut run = Run {
        lab: &lab,
        opts,
        out: out.clone(),
        state: state.clone(),
        abort: abort.clone(),
        t0,
        pids: pids.clone(),
        pin_root: pin_root.clone(),
        steps: Vec::new(),
        marks: Vec::new(),
    };
    let result = run.demo();
    let steps = std::mem::take(&mut run.steps);
    let marks = std::mem::take(&mut run.marks);
    drop(run);
    if let Some(t) = tui {
        t.stop();
    }
    // Plain narration from here on: the terminal is ours again.
    let out = Narrator::new(state.clone(), true, opts.json, t0);
    let (traffic, error) = match result {
        Ok(t) => (Some(t), None),
        Err(e) => {
            out.say(format!("stopped: {e:#}"));
            (None, Some(format!("{e:#}")))
        }
    };
    if error.is_some() || steps.iter().any(|s| !s.ok) {
        // Every daemon's log and configuration, for the post-mortem.
        lab.keep_scratch();
        out.say(format!(
            "logs and configurations kept in {}",
            lab.scratch_dir().display()
        ));
    }
    out.say("tearing down: daemons, proxies, namespaces, pinned maps");
    if lab.teardown().is_err() {
        out.say("teardown reported errors (checked below)");
    }
    let teardown = check_teardown(
        &lab_id,
        pin_root.lock().unwrap().as_deref(),
        &pids.lock().unwrap(),
    );
    out.say(if teardown.ok {
        "teardown checked: no namespace, process, pin root or shared-memory segment of the lab is left".to_string()
    } else {
        format!("teardown left something behind: {teardown:?}")
    });

    let st = state.lock().unwrap();
    let names: Vec<String> = st
        .engines
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.name,
                e.address.map(|a| a.to_string()).unwrap_or_default()
            )
        })
        .collect();
    let svg_written = match svg::write(&svg_path, &names, &st.history, &marks) {
        Ok(()) => true,
        Err(e) => {
            out.say(format!("writing {}: {e:#}", svg_path.display()));
            false
        }
    };
    let (requests_ok, requests_failed, long_broken) = match &traffic {
        Some(t) => (t.0, t.1, t.2),
        None => (st.requests_ok, st.requests_failed, st.long_broken as usize),
    };
    let engines: Vec<EngineSummary> = st
        .engines
        .iter()
        .map(|e| EngineSummary {
            name: e.name.clone(),
            address: e.address.map(|a| a.to_string()).unwrap_or_default(),
            role: e.role.clone(),
            buckets: e.buckets,
            requests: e.requests,
            packets_redirected: e.redirected,
            packets_returned: e.returned,
            return_rule: e.counters.get("return_rule").copied().unwrap_or(0),
        })
        .collect();
    let mut all_steps = vec!["baseline", "join", "fail", "refuse", "return", "steady"];
    if opts.squid_bin.is_some() {
        all_steps.push("squid");
    }
    let complete = all_steps.iter().all(|n| steps.iter().any(|s| s.name == *n));
    let summary = Summary {
        ok: error.is_none() && complete && steps.iter().all(|s| s.ok) && teardown.ok && svg_written,
        duration_ms: t0.elapsed().as_millis() as u64,
        steps,
        engines,
        requests_ok,
        requests_failed,
        long_lived: opts.long_lived,
        long_lived_broken: long_broken,
        svg: svg_path.display().to_string(),
        teardown,
        error,
    };
    drop(st);
    print_summary(&out, &summary, opts.json);
    Ok(summary.ok)
}

fn print_summary(out: &Narrator, s: &Summary, json: bool) {
    out.say("summary:");
    for step in &s.steps {
        out.say(format!(
            "  {:<8} {:<6} {}",
            step.name,
            if step.ok { "ok" } else { "FAILED" },
            step.summary
        ));
    }
    out.say(format!(
        "  {:<6} {:<12} {:<10} {:>7} {:>9} {:>10} {:>9} {:>11}",
        "engine", "address", "role", "buckets", "requests", "redirected", "returned", "return_rule"
    ));
    for e in &s.engines {
        out.say(format!(
            "  {:<6} {:<12} {:<10} {:>7} {:>9} {:>10} {:>9} {:>11}",
            e.name,
            e.address,
            e.role,
            e.buckets,
            e.requests,
            e.packets_redirected,
            e.packets_returned,
            e.return_rule
        ));
    }
    out.say(format!(
        "  requests ok {} failed {}; long-lived {} broken {}; teardown {}; {:.1} s",
        s.requests_ok,
        s.requests_failed,
        s.long_lived,
        s.long_lived_broken,
        if s.teardown.ok { "clean" } else { "NOT clean" },
        s.duration_ms as f64 / 1000.0
    ));
    out.say(format!("  buckets per engine over the run: {}", s.svg));
    out.say(if s.ok {
        "lab: every step ok"
    } else {
        "lab: FAILED"
    });
    if json {
        let text = serde_json::to_string_pretty(s).unwrap_or_else(|_| "{}".into());
        let _ = writeln!(std::io::stdout(), "{text}");
    }
}

/// Builds what the lab runs, with progress: the eBPF objects when missing, then the
/// daemons (whose build embeds the objects).
fn prepare() -> Result<()> {
    let root = daemons::workspace_root();
    let style = ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let obj = root.join("redirector-ebpf/obj");
    let sources: Vec<String> = std::fs::read_dir(root.join("redirector-ebpf/src/bpf"))?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "c"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .flatten()
        })
        .collect();
    let missing = sources
        .iter()
        .any(|s| !obj.join(format!("{s}.o")).is_file());
    if missing {
        let pb = ProgressBar::new_spinner().with_style(style.clone());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!(
            "building the eBPF objects ({} C sources, clang -target bpf)",
            sources.len()
        ));
        let out = Command::new(std::env::current_exe()?)
            .arg("build-ebpf")
            .output()
            .context("running build-ebpf")?;
        if !out.status.success() {
            pb.abandon_with_message("building the eBPF objects failed");
            bail!(
                "build-ebpf failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pb.finish_with_message(format!("built {} eBPF objects", sources.len()));
    }
    let pb = ProgressBar::new_spinner().with_style(style);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message("cargo build -p redirector-ctl -p engine-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(["build", "-p", "redirector-ctl", "-p", "engine-agent"])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo} build"))?;
    let mut tail = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let l = line.trim().to_string();
            if !l.is_empty() {
                pb.set_message(format!("cargo build: {l}"));
                tail.push(l);
            }
        }
    }
    let st = child.wait()?;
    if !st.success() {
        pb.abandon_with_message("cargo build failed");
        bail!(
            "cargo build failed:\n{}",
            daemons::tail(&tail.join("\n"), 30)
        );
    }
    pb.finish_with_message("redirector-ctl and engine-agent built");
    // The harness resolves the same binaries (a no-op build now).
    daemons::binary("redirector-ctl")?;
    daemons::binary("engine-agent")?;
    Ok(())
}

fn check_teardown(lab_id: &str, pin_root: Option<&Path>, pids: &[u32]) -> TeardownCheck {
    let lead = format!("{lab_id}-");
    let namespaces_left: Vec<String> = netns::ns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&lead))
        .collect();
    let pin_root_left = pin_root
        .filter(|p| p.exists())
        .map(|p| p.display().to_string());
    let processes_left: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| {
            // Alive and not a zombie of ours.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        })
        .collect();
    let shm_lead = format!("labsq{}-", std::process::id());
    let shm_left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&shm_lead))
                .collect()
        })
        .unwrap_or_default();
    TeardownCheck {
        ok: namespaces_left.is_empty()
            && pin_root_left.is_none()
            && processes_left.is_empty()
            && shm_left.is_empty(),
        namespaces_left,
        pin_root_left,
        processes_left,
        shm_left,
    }
}

fn engine_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

fn agent_config(address: Ipv4Addr, password: &str, fast: bool) -> String {
    // With Squid in the group the router's T is Squid's; the agents then negotiate theirs.
    let timer = if fast {
        "fast_transmit_ms"
    } else {
        "here_i_am_ms"
    };
    format!(
        "address = \"{address}\"\nrouters = [\"{ROUTER}\"]\nproxy_port = {PROXY_PORT}\n\n\
         [timers]\n{timer} = {T_MS}\n\n\
         [[service]]\nid = 90\ntype = \"dynamic\"\nprotocol = \"tcp\"\nports = [80]\n\
         flags = [\"src_ip_hash\", \"src_port_hash\"]\npassword = \"{password}\"\nweight = 100\n\n\
         [dataplane]\ninterface = \"eth0\"\nproxy_check_ms = 500\n\n\
         [[return_rule]]\nprefix = \"{RETURN_PREFIX}\"\nport = 80\n"
    )
}

fn router_services() -> String {
    format!(
        "[[service]]\nid = 90\ntype = \"dynamic\"\nprotocol = \"tcp\"\nports = [80]\n\
         flags = [\"src_ip_hash\", \"src_port_hash\"]\npassword = \"{PASSWORD}\"\n"
    )
}

/// One engine host and what runs on it.
struct EngineHost {
    host: Host,
    agent: Option<Agent>,
    proxy: Option<Process>,
}

/// The patched Squid as an engine (`--squid`), with its own directory and shared-memory
/// name; dropping it stops Squid and removes its segments (shared memory is not per
/// namespace).
struct SquidEngine {
    process: Process,
    dir: PathBuf,
    service_name: String,
}

impl SquidEngine {
    fn start(host: &Host, bin: &Path) -> Result<SquidEngine> {
        let dir = host.scratch_dir().join("squid-sq");
        std::fs::create_dir_all(&dir)?;
        // Squid drops root for its own user, which must write here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let d = dir.display();
        let conf = format!(
            "http_port {SQUID}:3128\nhttp_port 3129 intercept\nhttp_access allow all\n\
             visible_hostname labsquid\nshutdown_lifetime 1 seconds\npid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\naccess_log stdio:{d}/access.log\ncoredump_dir {d}\n\
             netdb_filename none\ncache_mem 8 MB\ncache deny all\n\
             wccp2_router {ROUTER}\nwccp2_forwarding_method l2\nwccp2_return_method l2\n\
             wccp2_assignment_method hash\nwccp2_weight 100\n\
             wccp2_service dynamic 90 password={PASSWORD}\n\
             wccp2_service_info 90 protocol=tcp flags=src_ip_hash,source_port_hash priority=0 ports=80\n"
        );
        let path = dir.join("squid.conf");
        std::fs::write(&path, conf)?;
        let service_name = format!("labsq{}", std::process::id());
        host.run(
            Command::new(bin)
                .args(["-n", &service_name, "-k", "parse", "-f"])
                .arg(&path),
        )
        .with_context(|| format!("{} -k parse {}", bin.display(), path.display()))?;
        let mut process = host.spawn(
            Command::new(bin)
                .args(["-N", "-n", &service_name, "-f"])
                .arg(&path),
        )?;
        process.set_grace(Duration::from_secs(5));
        Ok(SquidEngine {
            process,
            dir,
            service_name,
        })
    }

    /// Requests Squid logged.
    fn requests(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("access.log"))
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0)
    }
}

impl Drop for SquidEngine {
    fn drop(&mut self) {
        let _ = self.process.stop();
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            let lead = format!("{}-", self.service_name);
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&lead) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The network and its programs.
struct Net {
    client: Host,
    engines: Vec<EngineHost>,
    /// The Squid host (`--squid`).
    squid_host: Option<Host>,
    squid: Option<SquidEngine>,
    ctl: Ctl,
    _server_proc: Process,
}

/// The demonstration in progress.
struct Run<'a> {
    lab: &'a Lab,
    opts: &'a Options,
    out: Narrator,
    state: Arc<Mutex<State>>,
    abort: Arc<AtomicBool>,
    t0: Instant,
    pids: Arc<Mutex<Vec<u32>>>,
    pin_root: Arc<Mutex<Option<PathBuf>>>,
    steps: Vec<StepResult>,
    /// Step start times, for the SVG.
    marks: Vec<(f64, String)>,
}

impl Run<'_> {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn check_abort(&self) -> Result<()> {
        if self.abort.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Sleeps `secs`, waking for an interrupt.
    fn pause(&self, secs: f64) -> Result<()> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            self.check_abort()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
    fn poll<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<Option<T>> {
        let until = Instant::now() + timeout;
        loop {
            self.check_abort()?;
            if let Some(v) = f() {
                return Ok(Some(v));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn record(&mut self, step: StepResult) {
        self.out.say(format!(
            "{} {}: {}",
            if step.ok { "ok" } else { "FAILED" },
            step.name,
            step.summary
        ));
        self.steps.push(step);
    }

    fn mark(&mut self, name: &str) {
        let t = self.now();
        self.marks.push((t, name.to_string()));
    }

    fn spawn(&self, host: &Host, cmd: &mut Command) -> Result<Process> {
        let p = host.spawn(cmd)?;
        self.pids.lock().unwrap().push(p.pid());
        Ok(p)
    }

    fn start_proxy(&self, host: &Host, name: &str) -> Result<Process> {
        let stats = self.proxy_stats(name);
        let mut p = self.spawn(
            host,
            Command::new(std::env::current_exe()?)
                .arg("lab-proxy")
                .arg("--port")
                .arg(PROXY_PORT.to_string())
                .arg("--stats")
                .arg(&stats),
        )?;
        p.set_grace(Duration::from_secs(1));
        host.wait_tcp_listen(PROXY_PORT, Duration::from_secs(10))
            .with_context(|| format!("{name}: proxy not listening"))?;
        Ok(p)
    }

    fn proxy_stats(&self, name: &str) -> PathBuf {
        self.lab.scratch_dir().join(format!("{name}-proxy.json"))
    }

    fn start_agent(&self, host: &Host, name: &str, password: &str, i: usize) -> Result<Agent> {
        let agent = Agent::start(
            host,
            name,
            &agent_config(engine_ip(i), password, self.opts.squid_bin.is_some()),
        )?;
        self.pids.lock().unwrap().push(agent.process.pid());
        Ok(agent)
    }

    fn build(&mut self, sources: &Arc<Mutex<Vec<Source>>>) -> Result<Net> {
        self.out.step(
            "setup",
            "building the network: client, router, switch with 5 engine hosts, server",
        );
        match (&self.opts.squid_bin, self.opts.squid) {
            (Some(bin), _) => self.out.say(format!("with the patched Squid {}", bin.display())),
            (None, SquidMode::Auto) => self.out.say(
                "no patched Squid built (bash scripts/build-squid.sh builds one, about 5 minutes): \
                 the lab runs without it",
            ),
            (None, _) => {}
        }
        let lab = self.lab;
        let client = lab.host("client")?;
        let router = lab.host("router")?;
        let server = lab.host("server")?;
        let mut hosts = Vec::new();
        for i in 0..ENGINES {
            hosts.push(lab.host(&format!("e{}", i + 1))?);
        }
        let squid_host = if self.opts.squid_bin.is_some() {
            Some(lab.host("sq")?)
        } else {
            None
        };
        let mut members: Vec<(&Host, &str)> = vec![(&router, "eth0")];
        members.extend(hosts.iter().map(|h| (h, "eth0")));
        if let Some(h) = &squid_host {
            members.push((h, "eth0"));
        }
        let sw = lab.switch("sw", &members)?;
        // Frames XDP redirects into a veth arrive only where the peer runs NAPI: the
        // switch port facing the router gets GRO.
        sw.in_ns(|| sockets::gro_on("p0"))??;
        lab.link(&client, "eth0", &router, "cli0")?;
        lab.link(&router, "srv0", &server, "eth0")?;
        client.add_addr("eth0", &format!("{CLIENT}/24"))?;
        client.add_route("default", "10.77.1.1")?;
        // The router's XDP program forwards the client's frames: it must send full checksums.
        client.in_ns(|| sockets::tx_checksum_off("eth0"))??;
        router.add_addr("cli0", "10.77.1.1/24")?;
        router.add_addr("eth0", &format!("{ROUTER}/24"))?;
        router.add_addr("srv0", "10.77.9.254/24")?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // The proxies answer from the server's address out of the engines' side.
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.eth0.rp_filter",
        ] {
            router.sysctl(key, "0")?;
        }
        router.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        server.add_addr("eth0", &format!("{SERVER}/24"))?;
        server.add_addr("eth0", &format!("{RETURNED}/24"))?;
        server.add_route("default", "10.77.9.254")?;
        for (i, h) in hosts.iter().enumerate() {
            h.add_addr("eth0", &format!("{}/24", engine_ip(i)))?;
            h.add_route("default", &ROUTER.to_string())?;
        }
        if let Some(h) = &squid_host {
            h.add_addr("eth0", &format!("{SQUID}/24"))?;
            h.add_route("default", &ROUTER.to_string())?;
            // L2-forwarded packets keep their destination: NAT hands port 80 to Squid's
            // intercept port (Squid finds the original destination in conntrack).
            let rules = lab.scratch_dir().join("squid-nat.nft");
            std::fs::write(
                &rules,
                "table ip lab {\n  chain pre {\n    type nat hook prerouting priority -100;\n    \
                 iifname \"eth0\" tcp dport 80 redirect to :3129\n  }\n}\n",
            )?;
            h.run(Command::new("nft").arg("-f").arg(&rules))
                .context("nft (Squid's intercept rule)")?;
        }
        self.out.say(format!(
            "network up: client {CLIENT}, router {ROUTER} (cli0 10.77.1.1, srv0 10.77.9.254), \
             engines {}..{}, server {SERVER} and {RETURNED}",
            engine_ip(0),
            engine_ip(ENGINES - 1)
        ));

        let server_stats = lab.scratch_dir().join("server.json");
        let server_proc = self.spawn(
            &server,
            Command::new(std::env::current_exe()?)
                .arg("lab-server")
                .arg("--stats")
                .arg(&server_stats),
        )?;
        server.wait_tcp_listen(80, Duration::from_secs(10))?;

        let mut cfg = CtlConfig::new(ROUTER, &["cli0", "eth0"], &router_services());
        cfg.here_i_am_ms = if self.opts.squid_bin.is_some() {
            SQUID_T_MS
        } else {
            T_MS
        };
        let ctl = Ctl::start(&router, "r1", &cfg)?;
        self.pids.lock().unwrap().push(ctl.process.pid());
        *self.pin_root.lock().unwrap() = Some(ctl.pin_root.clone());
        self.out.say(format!(
            "redirector-ctl running on the router: XDP on cli0 (redirect) and eth0 (returns), \
             pin root {}",
            ctl.pin_root.display()
        ));

        let mut engines = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            for (i, h) in hosts.iter().enumerate() {
                st.engines.push(monitor::EngineView {
                    name: h.name().to_string(),
                    address: Some(engine_ip(i)),
                    role: "idle".into(),
                    router_state: "-".into(),
                    ..Default::default()
                });
            }
        }
        if squid_host.is_some() {
            self.state
                .lock()
                .unwrap()
                .engines
                .push(monitor::EngineView {
                    name: "sq".into(),
                    address: Some(SQUID),
                    role: "idle".into(),
                    router_state: "-".into(),
                    ..Default::default()
                });
        }
        for (i, h) in hosts.into_iter().enumerate() {
            let name = h.name().to_string();
            sources.lock().unwrap().push(Source {
                agent_socket: None,
                proxy_stats: self.proxy_stats(&name),
            });
            let (agent, proxy) = if i < FIRST {
                let proxy = self.start_proxy(&h, &name)?;
                let agent = self.start_agent(&h, &name, PASSWORD, i)?;
                sources.lock().unwrap()[i].agent_socket = Some(agent.socket.clone());
                self.state.lock().unwrap().engines[i].role = "running".into();
                (Some(agent), Some(proxy))
            } else {
                (None, None)
            };
            engines.push(EngineHost {
                host: h,
                agent,
                proxy,
            });
        }
        if squid_host.is_some() {
            sources.lock().unwrap().push(Source {
                agent_socket: None,
                proxy_stats: lab.scratch_dir().join("squid-sq").join("access.log"),
            });
        }
        self.out.say(format!(
            "engine-agent and lab-proxy running on e1..e{FIRST} (T = {T_MS} ms, [dataplane] on \
             eth0, return rule {RETURN_PREFIX} port 80)"
        ));
        Ok(Net {
            client,
            engines,
            ctl,
            _server_proc: server_proc,
            squid_host,
            squid: None,
        })
    }

    fn router_service(&self, net: &Net) -> Value {
        monitor::service(&monitor::router_show(&net.ctl.socket))
    }

    /// The demonstration; returns (requests ok, failed, long-lived broken).
    fn demo(&mut self) -> Result<(u64, u64, usize)> {
        let sources = Arc::new(Mutex::new(Vec::new()));
        let mut net = self.build(&sources)?;
        let monitor = Monitor::start(
            self.state.clone(),
            net.ctl.socket.clone(),
            sources.clone(),
            self.t0,
        );
        let r = self.steps_in(&mut net, &sources);
        monitor.stop();
        r
    }

    fn steps_in(
        &mut self,
        net: &mut Net,
        sources: &Arc<Mutex<Vec<Source>>>,
    ) -> Result<(u64, u64, usize)> {
        // The group forms: three engines usable, 256 buckets among them.
        let t = Instant::now();
        let first: Vec<Ipv4Addr> = (0..FIRST).map(engine_ip).collect();
        let svc = self.poll(Duration::from_secs(30), || {
            let s = self.router_service(net);
            let owners = monitor::bucket_owners(&s);
            let all = owners.iter().all(|o| o.is_some_and(|a| first.contains(&a)));
            let each = first.iter().all(|a| owners.contains(&Some(*a)));
            (s["state"] == "active" && all && each).then_some(s)
        })?;
        let Some(svc) = svc else {
            bail!(
                "the group never formed: {:#}\nrouter log:\n{}",
                self.router_service(net),
                daemons::tail(&net.ctl.log(), 30)
            );
        };
        self.out.say(format!(
            "service group {} active after {:.1} s: designated {}, buckets {}",
            monitor::SERVICE,
            t.elapsed().as_secs_f64(),
            svc["designated"].as_str().unwrap_or("?"),
            share(&monitor::bucket_owners(&svc))
        ));

        let traffic = Traffic::start(&net.client, CLIENT, SERVER, self.opts.long_lived, self.t0)?;
        let r = self.walk(net, sources, &traffic);
        let reqs = traffic.requests();
        let flows = traffic.flows();
        traffic.stop();
        r?;
        let ok = reqs.iter().filter(|q| q.ok).count() as u64;
        let broken = flows.iter().filter(|f| f.broken_at.is_some()).count();
        Ok((ok, reqs.len() as u64 - ok, broken))
    }

    fn update_traffic(&self, traffic: &Traffic) {
        let reqs = traffic.requests();
        let flows = traffic.flows();
        let mut st = self.state.lock().unwrap();
        st.requests_ok = reqs.iter().filter(|q| q.ok).count() as u64;
        st.requests_failed = reqs.len() as u64 - st.requests_ok;
        st.long_broken = flows.iter().filter(|f| f.broken_at.is_some()).count() as u64;
        st.long_alive = flows.len() as u64 - st.long_broken;
    }

    /// `pause` that keeps the view's traffic figures current.
    fn watch(&self, traffic: &Traffic, secs: f64) -> Result<()> {
        let until = self.now() + secs;
        while self.now() < until {
            self.update_traffic(traffic);
            self.pause(0.2)?;
        }
        self.update_traffic(traffic);
        Ok(())
    }

    fn walk(
        &mut self,
        net: &mut Net,
        sources: &Arc<Mutex<Vec<Source>>>,
        traffic: &Traffic,
    ) -> Result<()> {
        let start = self.now();
        self.baseline(net, traffic)?;
        self.join(net, sources, traffic)?;
        self.fail(net, traffic)?;
        self.refuse(net, sources, traffic)?;
        self.packet_return(net, traffic)?;
        if self.opts.squid_bin.is_some() {
            self.squid_joins(net, sources, traffic)?;
        }
        // Steady traffic for the rest of --duration.
        let rest = (self.opts.duration as f64 - (self.now() - start)).max(2.0);
        self.mark("steady");
        self.out.step(
            "steady",
            format!("steady traffic for {rest:.0} s more on the engines left"),
        );
        let from = self.now();
        self.watch(traffic, rest)?;
        let (ok, failed) = traffic.count(from, self.now());
        let broken = broken_between(&traffic.flows(), from, self.now());
        let mut f = BTreeMap::new();
        f.insert("requests_ok".into(), json!(ok));
        f.insert("requests_failed".into(), json!(failed));
        f.insert("long_lived_broken".into(), json!(broken));
        self.record(StepResult {
            name: "steady".into(),
            ok: ok > 0 && failed == 0 && broken == 0,
            summary: format!("{ok} requests ok, {failed} failed; long-lived broken {broken}"),
            figures: f,
        });
        Ok(())
    }

    fn baseline(&mut self, net: &Net, traffic: &Traffic) -> Result<()> {
        self.mark("baseline");
        self.out.step(
            "baseline",
            format!(
                "client traffic: short requests to {SERVER}:80 and {} long-lived connections",
                self.opts.long_lived
            ),
        );
        let from = self.now();
        self.watch(traffic, 4.0)?;
        let (ok, failed) = traffic.count(from, self.now());
        let via: BTreeMap<Ipv4Addr, u64> =
            traffic
                .requests()
                .iter()
                .filter(|q| q.t >= from)
                .fold(BTreeMap::new(), |mut m, q| {
                    if let Some(v) = q.via {
                        *m.entry(v).or_insert(0) += 1;
                    }
                    m
                });
        let engines_used = via.keys().filter(|a| **a != CLIENT).count();
        let flows = traffic.flows();
        let alive = flows.iter().filter(|f| f.broken_at.is_none()).count();
        let svc = self.router_service(net);
        let mut f = BTreeMap::new();
        f.insert("requests_ok".into(), json!(ok));
        f.insert("requests_failed".into(), json!(failed));
        f.insert("engines_serving".into(), json!(engines_used));
        f.insert("long_lived_alive".into(), json!(alive));
        f.insert("designated".into(), svc["designated"].clone());
        self.record(StepResult {
            name: "baseline".into(),
            ok: failed == 0 && ok > 0 && engines_used == FIRST && alive == flows.len(),
            summary: format!(
                "{ok} requests ok, {failed} failed, served through {engines_used} engines ({}); \
                 {alive}/{} long-lived connections up",
                via.iter()
                    .map(|(a, n)| format!("{a}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                flows.len()
            ),
            figures: f,
        });
        Ok(())
    }

    fn join(
        &mut self,
        net: &mut Net,
        sources: &Arc<Mutex<Vec<Source>>>,
        traffic: &Traffic,
    ) -> Result<()> {
        let i = FIRST;
        let addr = engine_ip(i);
        self.mark("join");
        self.out.step(
            "join",
            format!("engine e{} ({addr}) joins: proxy, then engine-agent", i + 1),
        );
        let before = monitor::bucket_owners(&self.router_service(net));
        let from = self.now();
        let t = Instant::now();
        let host = net.engines[i].host.clone();
        let name = host.name().to_string();
        net.engines[i].proxy = Some(self.start_proxy(&host, &name)?);
        let agent = self.start_agent(&host, &name, PASSWORD, i)?;
        sources.lock().unwrap()[i].agent_socket = Some(agent.socket.clone());
        net.engines[i].agent = Some(agent);
        self.state.lock().unwrap().engines[i].role = "joined".into();
        let n = FIRST + 1;
        let after = self.poll(Duration::from_secs(30), || {
            let owners = monitor::bucket_owners(&self.router_service(net));
            let holders: std::collections::BTreeSet<_> = owners.iter().flatten().collect();
            (owners.iter().all(|o| o.is_some()) && holders.len() == n && holders.contains(&addr))
                .then_some(owners)
        })?;
        let took = t.elapsed();
        let Some(after) = after else {
            self.record(StepResult {
                name: "join".into(),
                ok: false,
                summary: format!("e{} never got buckets in 30 s", i + 1),
                figures: BTreeMap::new(),
            });
            return Ok(());
        };
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        self.out.say(format!(
            "e{} holds {} buckets after {} ms: {moved} buckets moved ({} before, {} after)",
            i + 1,
            after.iter().filter(|o| **o == Some(addr)).count(),
            took.as_millis(),
            share(&before),
            share(&after)
        ));
        self.watch(traffic, 3.0)?;
        let (ok, failed) = traffic.count(from, self.now());
        let flows = traffic.flows();
        let broken = broken_between(&flows, from, self.now());
        if broken > 0 {
            for f in flows
                .iter()
                .filter(|f| f.broken_at.is_some_and(|t| t >= from))
            {
                self.out.say(format!(
                    "long-lived flow via {} broke: {}",
                    f.via.map(|a| a.to_string()).unwrap_or("?".into()),
                    f.error.as_deref().unwrap_or("?")
                ));
            }
        }
        // Which flows were in a moved bucket: the service hashes on the client's address
        // and port, as the XDP program does.
        let moved_flows: Vec<bool> = flows
            .iter()
            .map(|f| {
                let b = wccp::assign::bucket_of(
                    wccp::assign::flags::SRC_IP_HASH | wccp::assign::flags::SRC_PORT_HASH,
                    CLIENT,
                    SERVER,
                    f.port,
                    80,
                    false,
                ) as usize;
                before.get(b) != after.get(b)
            })
            .collect();
        let in_moved = moved_flows.iter().filter(|m| **m).count();
        let broken_moved = flows
            .iter()
            .zip(&moved_flows)
            .filter(|(f, m)| **m && f.broken_at.is_some_and(|t| t >= from))
            .count();
        self.out.say(format!(
            "long-lived flows in moved buckets: {in_moved} ({broken_moved} broke); in the \
             others: {} ({} broke)",
            flows.len() - in_moved,
            broken - broken_moved
        ));
        let sticky = self.pin_root.lock().unwrap().as_deref().map(sticky_buckets);
        if broken > 0 {
            if let Some(Ok(n)) = &sticky {
                self.out.say(format!(
                    "the router's data plane has {n} of 256 buckets sticky: without the flag, \
                     the XDP program never consults its connection table, so a moved bucket's \
                     live flows go to the new engine, which has no socket for them"
                ));
            }
        }
        let mut fig = BTreeMap::new();
        fig.insert("sticky_buckets".into(), json!(sticky.and_then(|r| r.ok())));
        fig.insert("buckets_moved".into(), json!(moved));
        fig.insert("long_lived_in_moved_buckets".into(), json!(in_moved));
        fig.insert("long_lived_broken_in_moved".into(), json!(broken_moved));
        fig.insert("join_ms".into(), json!(took.as_millis() as u64));
        fig.insert(
            "buckets_on_joined".into(),
            json!(after.iter().filter(|o| **o == Some(addr)).count()),
        );
        fig.insert("requests_ok".into(), json!(ok));
        fig.insert("requests_failed".into(), json!(failed));
        fig.insert("long_lived_broken".into(), json!(broken));
        self.record(StepResult {
            name: "join".into(),
            // Only a join that moves some live flows' buckets shows that none break.
            ok: moved > 0 && in_moved > 0 && broken == 0 && failed == 0,
            summary: format!(
                "{moved} buckets moved to e{} in {} ms; requests {ok} ok, {failed} failed; \
                 long-lived broken {broken}",
                i + 1,
                took.as_millis()
            ),
            figures: fig,
        });
        Ok(())
    }

    fn fail(&mut self, net: &mut Net, traffic: &Traffic) -> Result<()> {
        let i = 1;
        let addr = engine_ip(i);
        self.mark("fail");
        self.out.step(
            "fail",
            format!(
                "engine e{} ({addr}) fails: kill -9 of its agent and proxy",
                i + 1
            ),
        );
        let on_victim = traffic
            .flows()
            .iter()
            .filter(|f| f.broken_at.is_none() && f.via == Some(addr))
            .count();
        let from = self.now();
        let t = Instant::now();
        let e = &mut net.engines[i];
        if let Some(a) = e.agent.as_mut() {
            a.process.signal(Signal::SIGKILL)?;
        }
        if let Some(p) = e.proxy.as_mut() {
            p.signal(Signal::SIGKILL)?;
        }
        self.state.lock().unwrap().engines[i].role = "killed".into();
        // Two moments: the router drops the engine (its buckets fail open, no bucket on
        // it), then the designated engine reassigns them to the survivors.
        let mut removed = None;
        let cleared = self.poll(Duration::from_secs(30), || {
            let owners = monitor::bucket_owners(&self.router_service(net));
            if removed.is_none() && !owners.contains(&Some(addr)) {
                removed = Some(t.elapsed());
            }
            (removed.is_some() && owners.iter().all(|o| o.is_some())).then(|| t.elapsed())
        })?;
        let (Some(removed), Some(cleared)) = (removed, cleared) else {
            self.record(StepResult {
                name: "fail".into(),
                ok: false,
                summary: format!(
                    "the router kept buckets on e{} (or left some unassigned) for 30 s",
                    i + 1
                ),
                figures: BTreeMap::new(),
            });
            return Ok(());
        };
        self.out.say(format!(
            "router: no bucket on e{} {} ms after the kill (its buckets fail open), all 256 \
             reassigned after {} ms ({})",
            i + 1,
            removed.as_millis(),
            cleared.as_millis(),
            share(&monitor::bucket_owners(&self.router_service(net)))
        ));
        // Requests succeed again: from the first success after the last failure, seen
        // over 3 s past the router's reassignment (before it, a bucket on the dead engine
        // may still fail any request hashed to it).
        self.watch(traffic, 3.0)?;
        let after: Vec<_> = traffic
            .requests()
            .into_iter()
            .filter(|q| q.t >= from)
            .collect();
        let recovered = match after.iter().rposition(|q| !q.ok) {
            None => Some(0.0),
            Some(p) => after.get(p + 1).map(|q| q.t - from),
        };
        let (ok, failed) = traffic.count(from, self.now());
        let flows = traffic.flows();
        let broken_other = flows
            .iter()
            .filter(|f| f.broken_at.is_some_and(|t| t >= from) && f.via != Some(addr))
            .count();
        let lost = flows
            .iter()
            .filter(|f| f.broken_at.is_some_and(|t| t >= from) && f.via == Some(addr))
            .count();
        let bound = Duration::from_millis(T_MS * 11 / 2 + 3000);
        let mut fig = BTreeMap::new();
        fig.insert(
            "failover_buckets_ms".into(),
            json!(removed.as_millis() as u64),
        );
        fig.insert("reassigned_ms".into(), json!(cleared.as_millis() as u64));
        fig.insert(
            "failover_requests_ms".into(),
            json!(recovered.map(|s| (s * 1000.0) as u64)),
        );
        fig.insert("bound_ms".into(), json!(bound.as_millis() as u64));
        fig.insert("requests_ok".into(), json!(ok));
        fig.insert("requests_failed".into(), json!(failed));
        fig.insert("long_lived_on_killed".into(), json!(on_victim));
        fig.insert("long_lived_lost_on_killed".into(), json!(lost));
        fig.insert("long_lived_broken_others".into(), json!(broken_other));
        let rec = recovered.map_or("never".into(), |s| format!("{} ms", (s * 1000.0) as u64));
        self.record(StepResult {
            name: "fail".into(),
            ok: cleared <= bound
                && recovered.is_some_and(|s| s <= bound.as_secs_f64())
                && broken_other == 0,
            summary: format!(
                "failover: no bucket on e{} after {} ms, all reassigned after {} ms, requests \
                 succeed again after {rec} (bound {} ms); requests {ok} ok, {failed} failed \
                 meanwhile; long-lived on e{}: {lost}/{on_victim} lost with it, others broken \
                 {broken_other}",
                i + 1,
                removed.as_millis(),
                cleared.as_millis(),
                bound.as_millis(),
                i + 1
            ),
            figures: fig,
        });
        Ok(())
    }

    fn squid_joins(
        &mut self,
        net: &mut Net,
        _sources: &Arc<Mutex<Vec<Source>>>,
        traffic: &Traffic,
    ) -> Result<()> {
        self.mark("squid");
        let bin = self.opts.squid_bin.clone().context("no Squid")?;
        self.out.step(
            "squid",
            format!(
                "the patched Squid ({}) joins at {SQUID}: L2 forwarding, NAT intercept on port \
                 3129, Here-I-Am every 10 s",
                bin.display()
            ),
        );
        let host = net.squid_host.clone().context("no Squid host")?;
        let t = Instant::now();
        let squid = SquidEngine::start(&host, &bin)?;
        self.pids.lock().unwrap().push(squid.process.pid());
        net.squid = Some(squid);
        let i = ENGINES;
        self.state.lock().unwrap().engines[i].role = "squid".into();
        let got = self.poll(Duration::from_secs(45), || {
            self.update_traffic(traffic);
            let owners = monitor::bucket_owners(&self.router_service(net));
            let n = owners.iter().filter(|o| **o == Some(SQUID)).count();
            (n > 0 && owners.iter().all(|o| o.is_some())).then_some(n)
        })?;
        let Some(n) = got else {
            self.record(StepResult {
                name: "squid".into(),
                ok: false,
                summary: format!(
                    "Squid never got buckets in 45 s; its cache.log is in {}",
                    self.lab.scratch_dir().display()
                ),
                figures: BTreeMap::new(),
            });
            return Ok(());
        };
        let took = t.elapsed();
        self.out.say(format!(
            "Squid holds {n} buckets {} ms after its start ({})",
            took.as_millis(),
            share(&monitor::bucket_owners(&self.router_service(net)))
        ));
        let served0 = net.squid.as_ref().map_or(0, |s| s.requests());
        let from = self.now();
        self.watch(traffic, 5.0)?;
        let (ok, failed) = traffic.count(from, self.now());
        let served = net.squid.as_ref().map_or(0, |s| s.requests()) - served0;
        // Its join moves buckets too: the same flows break as on e4's join (not sticky).
        let broken = broken_between(&traffic.flows(), from - took.as_secs_f64(), self.now());
        let mut fig = BTreeMap::new();
        fig.insert("squid_buckets".into(), json!(n));
        fig.insert("join_ms".into(), json!(took.as_millis() as u64));
        fig.insert("squid_requests".into(), json!(served));
        fig.insert("long_lived_broken".into(), json!(broken));
        fig.insert("requests_ok".into(), json!(ok));
        fig.insert("requests_failed".into(), json!(failed));
        self.record(StepResult {
            name: "squid".into(),
            ok: served > 0 && failed == 0,
            summary: format!(
                "Squid got {n} buckets after {} ms and served {served} requests in 5 s; \
                 requests {ok} ok, {failed} failed; long-lived broken by its join {broken}",
                took.as_millis()
            ),
            figures: fig,
        });
        Ok(())
    }

    fn refuse(
        &mut self,
        net: &mut Net,
        sources: &Arc<Mutex<Vec<Source>>>,
        traffic: &Traffic,
    ) -> Result<()> {
        let i = FIRST + 1;
        let addr = engine_ip(i);
        self.mark("refuse");
        self.out.step(
            "refuse",
            format!(
                "engine e{} ({addr}) tries to join with the wrong password",
                i + 1
            ),
        );
        let drops = |svc: &Value| svc["counters"]["drop.security"].as_u64().unwrap_or(0);
        let before = drops(&self.router_service(net));
        let host = net.engines[i].host.clone();
        let name = host.name().to_string();
        net.engines[i].proxy = Some(self.start_proxy(&host, &name)?);
        let agent = self.start_agent(&host, &name, "wrongpw", i)?;
        sources.lock().unwrap()[i].agent_socket = Some(agent.socket.clone());
        net.engines[i].agent = Some(agent);
        self.state.lock().unwrap().engines[i].role = "refused".into();
        let (mut listed, mut usable, mut buckets) = (false, false, false);
        let until = self.now() + 5.0;
        let mut samples = 0;
        while self.now() < until {
            self.update_traffic(traffic);
            let svc = self.router_service(net);
            if !svc.is_null() {
                samples += 1;
            }
            if let Some(e) = svc["engines"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["address"] == addr.to_string()))
            {
                listed = true;
                usable |= e["state"] == "usable";
            }
            buckets |= monitor::bucket_owners(&svc).contains(&Some(addr));
            self.pause(0.1)?;
        }
        let after = drops(&self.router_service(net));
        let mut fig = BTreeMap::new();
        fig.insert("security_drops".into(), json!(after - before));
        fig.insert("ever_listed".into(), json!(listed));
        fig.insert("ever_usable".into(), json!(usable || buckets));
        fig.insert("samples".into(), json!(samples));
        self.record(StepResult {
            name: "refuse".into(),
            ok: after > before && !usable && !buckets && samples > 10,
            summary: format!(
                "router dropped {} Here-I-Ams for security; e{} never usable ({} checks over 5 s{})",
                after - before,
                i + 1,
                samples,
                if listed { ", but listed" } else { ", never listed" }
            ),
            figures: fig,
        });
        Ok(())
    }

    fn packet_return(&mut self, net: &Net, traffic: &Traffic) -> Result<()> {
        self.mark("return");
        self.out.step(
            "return",
            format!(
                "short requests now go to {RETURNED}: inside every engine's return rule \
                 ({RETURN_PREFIX} port 80), so the engines hand them back to the router"
            ),
        );
        let returned = |net: &Net| -> u64 {
            let svc = self.router_service(net);
            svc["engines"].as_array().map_or(0, |l| {
                l.iter()
                    .map(|e| e["packets_returned"].as_u64().unwrap_or(0))
                    .sum()
            })
        };
        let rule = |st: &State| -> u64 {
            st.engines
                .iter()
                .map(|e| e.counters.get("return_rule").copied().unwrap_or(0))
                .sum()
        };
        let r0 = returned(net);
        let e0 = rule(&self.state.lock().unwrap());
        traffic.retarget(RETURNED);
        let from = self.now();
        self.watch(traffic, 4.0)?;
        traffic.retarget(SERVER);
        let to = self.now();
        self.watch(traffic, 1.0)?;
        let r1 = returned(net);
        let e1 = rule(&self.state.lock().unwrap());
        let reqs: Vec<_> = traffic
            .requests()
            .into_iter()
            .filter(|q| q.t >= from && q.t < to && q.target == RETURNED)
            .collect();
        let ok = reqs.iter().filter(|q| q.ok).count();
        let failed = reqs.len() - ok;
        let direct = reqs.iter().filter(|q| q.via == Some(CLIENT)).count();
        let mut fig = BTreeMap::new();
        fig.insert("requests_ok".into(), json!(ok));
        fig.insert("requests_failed".into(), json!(failed));
        fig.insert("requests_bypassing_proxy".into(), json!(direct));
        fig.insert(
            "router_returned_packets".into(),
            json!(r1.saturating_sub(r0)),
        );
        fig.insert(
            "engine_return_rule_packets".into(),
            json!(e1.saturating_sub(e0)),
        );
        self.record(StepResult {
            name: "return".into(),
            ok: ok > 0 && failed == 0 && direct == ok && r1 > r0 && e1 > e0,
            summary: format!(
                "{ok} requests ok ({direct} reached the server from the client itself, past \
                 the proxies), {failed} failed; engines returned {} packets by rule, the router \
                 decapsulated {}",
                e1.saturating_sub(e0),
                r1.saturating_sub(r0)
            ),
            figures: fig,
        });
        Ok(())
    }
}

/// Buckets of the active table marked sticky in the data plane pinned at `pin_root` (the
/// flag that makes the XDP program keep a flow on the engine that took its SYN), read from
/// the pinned maps themselves rather than from the controller's word.
fn sticky_buckets(pin_root: &Path) -> Result<usize> {
    use redirector_ebpf::layout::{BUCKETS, BUCKET_STICKY};
    let (_, table) = redirector_ebpf::read_pinned_table(pin_root)?;
    // The lab's router has one service: rank 0.
    Ok(table.buckets[..BUCKETS]
        .iter()
        .filter(|b| b.flags & BUCKET_STICKY != 0)
        .count())
}

/// Long-lived flows that broke in `[from, to]`.
fn broken_between(flows: &[traffic::LongFlow], from: f64, to: f64) -> usize {
    flows
        .iter()
        .filter(|f| f.broken_at.is_some_and(|t| t >= from && t <= to))
        .count()
}

/// "10.77.0.11: 86, 10.77.0.12: 85, ..." for a bucket map.
fn share(owners: &[Option<Ipv4Addr>]) -> String {
    let mut m: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut none = 0;
    for o in owners {
        match o {
            Some(a) => *m.entry(*a).or_insert(0) += 1,
            None => none += 1,
        }
    }
    let mut parts: Vec<String> = m.iter().map(|(a, n)| format!("{a}: {n}")).collect();
    if none > 0 {
        parts.push(format!("unassigned: {none}"));
    }
    parts.join(", ")
}
