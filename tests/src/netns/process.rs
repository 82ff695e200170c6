//! Processes started inside a namespace, owned by a guard that stops them when it goes.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How a child process is put into a host's network namespace.
///
/// The choice matters for programs that pin BPF objects or read `/sys`: `ip netns exec`
/// gives the process a private mount namespace with a fresh sysfs on `/sys` (so that
/// `/sys/class/net` shows the namespace's interfaces), which hides the bpffs mounted at
/// `/sys/fs/bpf` in the root mount namespace: pins made there vanish with the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enter {
    /// `setns(fd, CLONE_NEWNET)` in the forked child before `exec`: only the network
    /// namespace changes; mounts, `/sys` and `/sys/fs/bpf` stay the root's. Ordinary
    /// programs (sockets, netlink, ioctls) see the namespace's network; only those that read
    /// `/sys/class/net` see the root namespace's interfaces there. The default.
    #[default]
    SetNs,
    /// `ip netns exec NAME ...`: private `/sys` for the namespace and `/etc/netns/NAME`
    /// bind mounts, for programs that read interface facts from sysfs. No BPF pinning.
    IpNetnsExec,
}

/// Puts a command into a network namespace, by the given method. For `SetNs`, the opened
/// namespace descriptor moves into the pre-exec hook and stays open as long as the command.
pub(crate) fn prepare(cmd: &mut Command, ns_name: &str, ns_fd: OwnedFd, how: Enter) -> Command {
    match how {
        Enter::SetNs => {
            let mut out = clone_command(cmd, None);
            // SAFETY: the hook runs between fork and exec and makes one raw syscall
            // (async-signal-safe); it allocates nothing and touches no locks.
            unsafe {
                out.pre_exec(move || {
                    if nix::libc::setns(ns_fd.as_raw_fd(), nix::libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            out
        }
        Enter::IpNetnsExec => {
            drop(ns_fd);
            clone_command(cmd, Some(ns_name))
        }
    }
}

/// Copies program, arguments, environment and directory of `cmd` into a fresh command,
/// optionally wrapped in `ip netns exec NAME`. (Stdio settings cannot be read back; the
/// harness sets its own.)
fn clone_command(cmd: &Command, netns: Option<&str>) -> Command {
    let mut out = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(cmd.get_program());
            c
        }
        None => Command::new(cmd.get_program()),
    };
    out.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// The command line as a human would type it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A child process running in a host's namespace, with stdout and stderr going to files in
/// the lab's scratch directory (readable while it runs, and kept after a failed test).
///
/// Dropping the guard stops the process's whole process group: SIGTERM, then SIGKILL after
/// the grace period, so a test that returns early or panics leaves nothing running.
#[derive(Debug)]
pub struct Process {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` (already put into its namespace) in its own process group, with output
    /// to `<scratch>/<label>.stdout` and `.stderr`.
    pub(crate) fn start(
        mut cmd: Command,
        label: String,
        scratch: &Path,
        shown: &str,
    ) -> Result<Self> {
        let stdout = scratch.join(format!("{label}.stdout"));
        let stderr = scratch.join(format!("{label}.stderr"));
        let out =
            File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning `{shown}` as {label}"))?;
        Ok(Self {
            child,
            label,
            stdout,
            stderr,
            grace: Duration::from_secs(2),
            status: None,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name its log files and error messages use (`host-program-N`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// How long `stop` and drop wait after SIGTERM before SIGKILL; slow-exiting daemons
    /// (Squid's `shutdown_lifetime`) need more than the 2 s default.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Where its stdout goes.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Where its stderr goes.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> Result<String> {
        read_lossy(&self.stdout)
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> Result<String> {
        read_lossy(&self.stderr)
    }

    /// Its exit status if it has exited (and is reaped now), else `None`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.label))?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits for it to exit by itself, failing (and leaving it running) after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still running after {timeout:?}; stderr so far:\n{}",
                    self.label,
                    self.stderr().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until its stdout or stderr contains `needle` (a readiness line, say). Fails on
    /// timeout or if the process exits first, quoting its output.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (out, err) = (self.stdout()?, self.stderr()?);
            if out.contains(needle) || err.contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                bail!(
                    "{} exited ({st}) before printing {needle:?}\nstdout:\n{out}\nstderr:\n{err}",
                    self.label
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to its process group (the process and anything it started that stayed in
    /// the group).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("{} has already exited", self.label);
        }
        kill(Pid::from_raw(-(self.pid() as i32)), sig)
            .with_context(|| format!("sending {sig} to {}", self.label))
    }

    /// Stops it: SIGTERM to the group, SIGKILL after the grace period; returns how it ended.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        let pgid = Pid::from_raw(-(self.pid() as i32));
        let _ = kill(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait()? {
                // Stragglers that ignored SIGTERM in its group go too.
                let _ = kill(pgid, Signal::SIGKILL);
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(pgid, Signal::SIGKILL);
        let st = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.label))?;
        self.status = Some(st);
        Ok(st)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn read_lossy(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs `cmd` to completion with piped output, killing it after `timeout`; a non-zero exit
/// becomes an error that quotes the command, status, stdout and stderr.
pub(crate) fn run(mut cmd: Command, shown: &str, host: &str, timeout: Duration) -> Result<Output> {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{host}: spawning `{shown}`"))?;
    // Readers on their own threads, so a chatty child never blocks on a full pipe; a
    // background process that keeps a pipe open cannot hang us past the deadline either.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    for (is_err, pipe) in [
        (
            false,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        if let Some(mut p) = pipe {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = p.read_to_end(&mut v);
                let _ = tx.send((is_err, v));
            });
        }
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("{host}: waiting for `{shown}`"))?
        {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
            let _ = child.wait();
            return Err(anyhow!(
                "{host}: `{shown}` did not finish within {timeout:?}; killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok((false, v)) => stdout = v,
            Ok((true, v)) => stderr = v,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => bail!(
                "{host}: `{shown}` exited ({status}) but a process it left behind keeps its \
                 output open; start long-running programs with Host::spawn"
            ),
        }
    }
    let output = Output {
        status,
        stdout,
        stderr,
    };
    if !output.status.success() {
        let how = match output.status.code() {
            Some(c) => format!("exit status {c}"),
            None => format!("signal {}", output.status.signal().unwrap_or(0)),
        };
        bail!(
            "{host}: `{shown}` failed with {how}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
