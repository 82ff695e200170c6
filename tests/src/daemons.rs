//! The project's daemons (`redirector-ctl`, `engine-agent`) and Squid as processes in a
//! lab's hosts: configuration files in the lab's scratch directory, control sockets there
//! too, one bpffs pin root per controller (removed when its guard goes), and `show`
//! read over the control socket.
//!
//! The binaries come from this workspace's target directory. [`binary`] runs `cargo build
//! -p redirector-ctl -p engine-agent` once per test process (a no-op when they are fresh,
//! which `cargo test --workspace` makes them) and fails, naming the path it looked at, when
//! they cannot be had: a test never skips silently.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::netns::{wait_until, Host, Process};

/// The workspace's root directory (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `<target>/<profile>`: where this test executable's sibling binaries are
/// (`<target>/<profile>/deps/<test>-<hash>` is the test itself).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", exe.display()))?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

fn build_daemons() -> std::result::Result<PathBuf, String> {
    let dir = profile_dir().map_err(|e| format!("{e:#}"))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "redirector-ctl", "-p", "engine-agent"])
        .current_dir(workspace_root());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    // The target directory is the profile directory's parent when it is a plain one
    // (`target/debug`), not a per-triple one (`target/<triple>/debug`).
    if let Some(target) = dir.parent().filter(|t| t.join("CACHEDIR.TAG").exists()) {
        cmd.arg("--target-dir").arg(target);
    }
    let built = cmd.status();
    let present = ["redirector-ctl", "engine-agent"]
        .iter()
        .all(|b| dir.join(b).is_file());
    match built {
        Ok(st) if st.success() => Ok(dir),
        other => {
            let why = match other {
                Ok(st) => format!("`{cargo} build -p redirector-ctl -p engine-agent` failed: {st}"),
                Err(e) => format!("cannot run `{cargo}`: {e}"),
            };
            if present {
                eprintln!(
                    "netns-tests: {why}; using the binaries already in {}",
                    dir.display()
                );
                Ok(dir)
            } else {
                Err(format!(
                    "{why}, and {} has no redirector-ctl and engine-agent: build them with \
                     `cargo build -p redirector-ctl -p engine-agent` (after `cargo xtask build-ebpf`)",
                    dir.display()
                ))
            }
        }
    }
}

/// The path of workspace binary `name` (`redirector-ctl` or `engine-agent`), built first
/// if needed (once per test process). An error says where it looked and how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(build_daemons)
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing after the build: is `{name}` a binary of this workspace?",
            path.display()
        );
    }
    Ok(path)
}

/// Debian's own Squid 5.7, which cannot complete a WCCPv2 join on 64-bit hosts.
pub const DEBIAN_SQUID: &str = "/usr/sbin/squid";

/// Debian's Squid with `tests/squid/wccp2-64bit.patch`, from `scripts/build-squid.sh`
/// (which builds it, about 5 minutes, the first time on a machine, and is a no-op after;
/// `scripts/test.sh` runs it before the tests). `SQUID_PATCHED` overrides the path.
pub fn patched_squid() -> Result<PathBuf> {
    static PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("SQUID_PATCHED") {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("SQUID_PATCHED={} is not a file", p.display()))
            };
        }
        let script = workspace_root().join("scripts/build-squid.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--print-path")
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or("").trim().to_string();
        if !out.status.success() || path.is_empty() || !Path::new(&path).is_file() {
            return Err(format!(
                "{} --print-path failed ({}): the patched Squid is needed for the join tests\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(path))
    })
    .clone()
    .map_err(|e| anyhow!("{e}"))
}

/// Sends one JSON line to a control socket and reads one JSON line back.
pub fn control_request(socket: &Path, request: &Value) -> Result<Value> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = request.to_string();
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.is_empty() {
        bail!("{} closed without answering", socket.display());
    }
    serde_json::from_str(&answer).with_context(|| format!("bad answer {answer:?}"))
}

/// Settings of a `redirector-ctl` under test; the `[[service]]` tables are raw TOML.
#[derive(Clone, Debug)]
pub struct CtlConfig {
    /// Router ID, bound for UDP 2048.
    pub address: Ipv4Addr,
    /// Interfaces to attach the XDP program to (the client-facing side).
    pub redirect_in: Vec<String>,
    /// `--no-dataplane` instead of XDP.
    pub no_dataplane: bool,
    /// `[timers] here_i_am_ms`: T for engines that negotiate none (Squid: 10000).
    pub here_i_am_ms: u64,
    /// `[timers] multicast_interval_ms`.
    pub multicast_interval_ms: u64,
    /// The `[[service]]` tables, as TOML.
    pub services: String,
}

impl CtlConfig {
    /// A router at `address` redirecting on `redirect_in`, with draft timers.
    pub fn new(address: Ipv4Addr, redirect_in: &[&str], services: &str) -> CtlConfig {
        CtlConfig {
            address,
            redirect_in: redirect_in.iter().map(|s| s.to_string()).collect(),
            no_dataplane: false,
            here_i_am_ms: 10_000,
            multicast_interval_ms: 9_000,
            services: services.to_string(),
        }
    }
}

/// A running `redirector-ctl run` in a host, with its own control socket and pin root.
/// Dropping it removes redirection (`stop --clear`), stops the process and removes the pin
/// root.
#[derive(Debug)]
pub struct Ctl {
    /// The process (output in the lab's scratch directory).
    pub process: Process,
    /// A name for messages.
    pub name: String,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its bpffs pin root.
    pub pin_root: PathBuf,
}

impl Ctl {
    /// Writes the configuration and starts `redirector-ctl run --log-format json` in
    /// `host`; returns once the control socket answers. `name` (letters and digits) names
    /// its files and its pin root, `<PIN_BASE>/<lab id>-<name>`.
    pub fn start(host: &Host, name: &str, cfg: &CtlConfig) -> Result<Ctl> {
        let bin = binary("redirector-ctl")?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("controller name {name:?}: letters and digits only (it names the pin root)");
        }
        static STALE: OnceLock<()> = OnceLock::new();
        STALE.get_or_init(remove_stale_pin_roots);
        let dir = host.scratch_dir();
        let socket = dir.join(format!("{name}-ctl.sock"));
        let config = dir.join(format!("{name}-redirector.toml"));
        let lab = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pin_root = Path::new(PIN_BASE).join(format!("{lab}-{name}"));
        let quoted: Vec<String> = cfg.redirect_in.iter().map(|i| format!("\"{i}\"")).collect();
        let text = format!(
            "[router]\naddress = \"{}\"\nredirect_in = [{}]\ncontrol_socket = \"{}\"\n\n\
             [timers]\nhere_i_am_ms = {}\nmulticast_interval_ms = {}\n\n\
             [dataplane]\npin_root = \"{}\"\ngrace_ms = 30000\n\n{}",
            cfg.address,
            quoted.join(", "),
            socket.display(),
            cfg.here_i_am_ms,
            cfg.multicast_interval_ms,
            pin_root.display(),
            cfg.services
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--log-format", "json", "-c"]).arg(&config);
        if cfg.no_dataplane {
            cmd.arg("--no-dataplane");
        }
        cmd.env("RUST_LOG", "info");
        let mut process = host.spawn(&mut cmd)?;
        process.set_grace(Duration::from_secs(5));
        let mut ctl = Ctl {
            process,
            name: name.to_string(),
            config,
            socket,
            pin_root,
        };
        let t0 = Instant::now();
        loop {
            if ctl.status().is_ok() {
                break;
            }
            if !ctl.process.is_running() {
                bail!(
                    "redirector-ctl {name} exited at start:\n{}",
                    ctl.process.stderr().unwrap_or_default()
                );
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!(
                    "redirector-ctl {name}: no control socket after 15 s:\n{}",
                    ctl.process.stderr().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ctl)
    }

    /// The whole `show` document, read over the control socket (what `show --json`
    /// prints).
    pub fn status(&self) -> Result<Value> {
        let v = control_request(&self.socket, &serde_json::json!({"command": "show"}))?;
        if v["ok"] != Value::Bool(true) {
            bail!("show refused: {v}");
        }
        Ok(v["result"].clone())
    }

    /// `redirector-ctl show [ARGS] --json -s SOCKET`, run as an operator would, parsed.
    pub fn show_cli(&self, args: &[&str]) -> Result<Value> {
        let bin = binary("redirector-ctl")?;
        let out = Command::new(bin)
            .arg("show")
            .args(args)
            .arg("--json")
            .arg("-s")
            .arg(&self.socket)
            .output()?;
        if !out.status.success() {
            bail!(
                "redirector-ctl show {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("show --json is not JSON")
    }

    /// `redirector-ctl show [ARGS] -s SOCKET`: the operator's text.
    pub fn show_text(&self, args: &[&str]) -> Result<String> {
        let bin = binary("redirector-ctl")?;
        let out = Command::new(bin)
            .arg("show")
            .args(args)
            .arg("-s")
            .arg(&self.socket)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One service of the `show` document, by its `service` name (`standard/0`).
    pub fn service(&self, name: &str) -> Result<Value> {
        let st = self.status()?;
        st["services"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["service"] == name).cloned())
            .ok_or_else(|| anyhow!("{}: no service {name} in {st}", self.name))
    }

    /// Its log (stderr, JSON lines) so far.
    pub fn log(&self) -> String {
        self.process.stderr().unwrap_or_default()
    }

    /// Waits until `check` holds for the service `name`, failing with the last document
    /// and the log.
    pub fn wait_service(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let r = wait_until(what, timeout, || {
            last = self.service(name)?;
            Ok(check(&last))
        });
        match r {
            Ok(()) => Ok(last),
            Err(e) => Err(e.context(format!(
                "{}: service {name}: {last:#}\nlog:\n{}",
                self.name,
                tail(&self.log(), 60)
            ))),
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if self.process.is_running() {
            let _ = control_request(
                &self.socket,
                &serde_json::json!({"command": "stop", "clear": true}),
            );
            let _ = self.process.wait_timeout(Duration::from_secs(5));
        }
        let _ = self.process.stop();
        if self.pin_root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_root) {
                eprintln!(
                    "netns-tests: removing pin root {}: {e}",
                    self.pin_root.display()
                );
            }
        }
    }
}

/// Where [`Ctl`] pin roots go: `<PIN_BASE>/<lab id>-<router name>`.
const PIN_BASE: &str = "/sys/fs/bpf/wccp-redirector";

/// Removes pin roots that [`Ctl`]s of test processes that no longer exist left behind (a
/// run killed before its guards dropped): names `<prefix>-p<pid>-<n>-<router>` whose pid
/// is gone.
/// Other pin roots (a deployment's `default`, live tests') are never touched.
fn remove_stale_pin_roots() {
    let Ok(dir) = std::fs::read_dir(PIN_BASE) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Exactly our shape: lab prefix, p<pid>, lab counter, router name.
        let parts: Vec<&str> = name.split('-').collect();
        let pid = (parts.len() == 4)
            .then(|| parts[1].strip_prefix('p'))
            .flatten()
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => eprintln!("netns-tests: removed stale pin root {}", e.path().display()),
                Err(err) => eprintln!(
                    "netns-tests: removing stale pin root {}: {err}",
                    e.path().display()
                ),
            }
        }
    }
}

/// A running `engine-agent run` in a host.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub process: Process,
    /// A name for messages.
    pub name: String,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Agent {
    /// Writes `config` (the TOML without `control_socket`, which is added) and starts
    /// `engine-agent run --log-format json`; returns once the control socket answers.
    pub fn start(host: &Host, name: &str, config: &str) -> Result<Agent> {
        let bin = binary("engine-agent")?;
        let dir = host.scratch_dir();
        let socket = dir.join(format!("{name}-agent.sock"));
        let path = dir.join(format!("{name}-agent.toml"));
        std::fs::write(
            &path,
            format!("control_socket = \"{}\"\n{config}", socket.display()),
        )?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--log-format", "json", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info");
        let mut process = host.spawn(&mut cmd)?;
        process.set_grace(Duration::from_secs(5));
        let mut agent = Agent {
            process,
            name: name.to_string(),
            socket,
        };
        let t0 = Instant::now();
        while agent.status().is_err() {
            if !agent.process.is_running() || t0.elapsed() > Duration::from_secs(15) {
                bail!(
                    "engine-agent {name} did not come up:\n{}",
                    agent.process.stderr().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// The status document (`engine-agent show --json`).
    pub fn status(&self) -> Result<Value> {
        let v = control_request(&self.socket, &serde_json::json!({"command": "show"}))?;
        if v["result"] != "status" {
            bail!("show refused: {v}");
        }
        Ok(v["data"].clone())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.stderr().unwrap_or_default()
    }
}

/// A Squid under test, with its own state directory, `-n` name and `shutdown_lifetime
/// 1 seconds`.
#[derive(Debug)]
pub struct Squid {
    /// The process (`squid -N`).
    pub process: Process,
    /// Its directory: squid.conf, cache.log.
    pub dir: PathBuf,
    /// Its `-n` service name (shared-memory segments are `/dev/shm/<name>-*`), unique per
    /// test process so that parallel runs never share segments.
    pub service_name: String,
}

impl Squid {
    /// Starts `bin -N -n NAME -f CONF` in `host` with the common settings (plain and
    /// intercept `http_port` on `address`, logs in its directory, `wccp2_router` for each
    /// of `routers`) followed by `wccp` (the `wccp2_*` service and method lines). The
    /// configuration is checked with `-k parse` first.
    pub fn start(
        host: &Host,
        bin: &Path,
        name: &str,
        address: Ipv4Addr,
        routers: &[Ipv4Addr],
        wccp: &str,
    ) -> Result<Squid> {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("squid name {name:?}: letters and digits only");
        }
        let dir = host.scratch_dir().join(format!("squid-{name}"));
        std::fs::create_dir_all(&dir)?;
        // Squid drops root for its own user (nobody or proxy), which must write here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let d = dir.display();
        let mut conf = format!(
            "http_port {address}:3128\nhttp_port {address}:3129 intercept\nhttp_access deny all\n\
             visible_hostname {name}\nshutdown_lifetime 1 seconds\npid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\naccess_log stdio:{d}/access.log\ncoredump_dir {d}\n\
             netdb_filename none\ncache_mem 8 MB\ndebug_options ALL,1 80,3\n"
        );
        for r in routers {
            conf.push_str(&format!("wccp2_router {r}\n"));
        }
        conf.push_str(wccp);
        let path = dir.join("squid.conf");
        std::fs::write(&path, conf)?;
        let svc = format!("wccp{name}{}", std::process::id());
        host.run(
            Command::new(bin)
                .args(["-n", &svc, "-k", "parse", "-f"])
                .arg(&path),
        )
        .with_context(|| format!("{} -k parse {}", bin.display(), path.display()))?;
        let mut process =
            host.spawn(Command::new(bin).args(["-N", "-n", &svc, "-f"]).arg(&path))?;
        process.set_grace(Duration::from_secs(8));
        Ok(Squid {
            process,
            dir,
            service_name: svc,
        })
    }

    /// Its cache.log so far.
    pub fn cache_log(&self) -> String {
        std::fs::read(self.dir.join("cache.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        // SIGTERM, then Squid takes shutdown_lifetime (1 s) to exit; the guard waits.
        let _ = self.process.stop();
        // Shared memory is not per namespace: make sure a killed Squid leaves none.
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

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
