//! Shared test helpers: a running `engine-agent` process and an in-test WCCP router
//! (`wccp::router::Router` on a loopback UDP socket), so the agent is tested against the
//! real protocol, not a script.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant as StdInstant};

use wccp::proto::ServiceId;
use wccp::router::{Action, Router, RouterConfig, ServiceConfig};
use wccp::time::Instant;
use wccp::wire::{Message, MessageType};

/// The agent binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_engine-agent")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-agent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A running agent; killed on drop.
pub struct Agent {
    /// The `engine-agent run` process.
    pub child: Child,
    /// Its scratch directory.
    pub dir: PathBuf,
    /// Its configuration file (rewritten for SIGHUP tests).
    pub config: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its stderr (JSON logs), read when an assertion fails.
    pub log: PathBuf,
}

impl Agent {
    /// Writes `config` (with `control_socket` appended) and starts `engine-agent run`.
    pub fn start(dir: &Path, name: &str, config: &str) -> Agent {
        let socket = dir.join(format!("{name}.sock"));
        let path = dir.join(format!("{name}.toml"));
        let body = format!("control_socket = \"{}\"\n{config}", socket.display());
        std::fs::write(&path, body).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin())
            .args(["run", "--log-format", "json", "-c"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn engine-agent");
        let a = Agent {
            child,
            dir: dir.to_path_buf(),
            config: path,
            socket,
            log,
        };
        let t = StdInstant::now();
        while !a.socket.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(a.socket.exists(), "agent did not start: {}", a.log_text());
        a
    }

    /// Rewrites the configuration file (for SIGHUP).
    pub fn rewrite(&self, config: &str) {
        let body = format!("control_socket = \"{}\"\n{config}", self.socket.display());
        std::fs::write(&self.config, body).expect("rewrite config");
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill");
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `engine-agent show SECTION --json`, parsed.
    pub fn show(&self, section: &str) -> serde_json::Value {
        let out = Command::new(bin())
            .args(["show", section, "--json", "-s"])
            .arg(&self.socket)
            .output()
            .expect("run show");
        assert!(
            out.status.success(),
            "show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("show --json is JSON")
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = StdInstant::now();
        while t.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WCCP router in the test: the real state machine on a loopback socket.
pub struct TestRouter {
    /// The router's unicast socket (also what it sends from).
    pub sock: UdpSocket,
    /// Bound to the group, when the service is multicast.
    pub msock: Option<UdpSocket>,
    /// The state machine.
    pub router: Router,
    /// UDP port of the group (2048 in production).
    pub port: u16,
    origin: StdInstant,
    /// Every datagram received: (protocol time, sender, bytes).
    pub received: Vec<(Instant, Ipv4Addr, Vec<u8>)>,
}

impl TestRouter {
    /// A unicast router at `addr`.
    pub fn new(addr: Ipv4Addr, port: u16, service: ServiceConfig) -> TestRouter {
        let sock = UdpSocket::bind(SocketAddrV4::new(addr, port)).expect("bind router socket");
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        TestRouter {
            sock,
            msock: None,
            router: Router::new(RouterConfig {
                router_id: addr,
                services: vec![service],
                jitter_seed: 1,
            }),
            port,
            origin: StdInstant::now(),
            received: Vec::new(),
        }
    }

    /// A router of a multicast service group: it hears the group and sends from `addr`.
    pub fn multicast(
        addr: Ipv4Addr,
        group: Ipv4Addr,
        port: u16,
        service: ServiceConfig,
    ) -> TestRouter {
        use socket2::{Domain, Protocol, Socket, Type};
        let mut r = TestRouter::new(addr, port, service);
        socket2::SockRef::from(&r.sock)
            .set_multicast_if_v4(&addr)
            .expect("IP_MULTICAST_IF");
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.bind(&SocketAddrV4::new(group, port).into())
            .expect("bind group");
        s.join_multicast_v4(&group, &addr).expect("join");
        let m: UdpSocket = s.into();
        m.set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        r.msock = Some(m);
        r
    }

    /// Protocol time since the router was made.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Runs the router until `done` or `limit`; true when `done` held.
    pub fn pump(&mut self, limit: Duration, mut done: impl FnMut(&TestRouter) -> bool) -> bool {
        let t = StdInstant::now();
        let mut buf = [0u8; 65535];
        while t.elapsed() < limit {
            if done(self) {
                return true;
            }
            for m in [true, false] {
                let sock = if m {
                    self.msock.as_ref()
                } else {
                    Some(&self.sock)
                };
                let Some(sock) = sock else { continue };
                if let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
                    if *from.ip() == self.router.router_id() {
                        continue; // our own group I-See-You, looped back
                    }
                    let now = self.now();
                    self.received.push((now, *from.ip(), buf[..n].to_vec()));
                    let acts = self.router.handle_message(*from.ip(), &buf[..n], now);
                    self.perform(acts);
                }
            }
            let now = self.now();
            if matches!(self.router.next_timeout(), Some(d) if d <= now) {
                let acts = self.router.handle_timeout(now);
                self.perform(acts);
            }
        }
        done(self)
    }

    fn perform(&mut self, acts: Vec<Action>) {
        for a in acts {
            if let Action::Send(t) = a {
                let _ = self
                    .sock
                    .send_to(&t.bytes, SocketAddrV4::new(t.to, self.port));
            }
        }
    }

    /// Received messages of one type, parsed, with their bytes.
    pub fn messages(&self, ty: MessageType) -> Vec<(Instant, Ipv4Addr, Message, Vec<u8>)> {
        self.received
            .iter()
            .filter_map(|(t, f, b)| {
                let m = Message::parse(b).ok()?;
                (m.message_type == ty).then(|| (*t, *f, m, b.clone()))
            })
            .collect()
    }

    /// Buckets or mask values per engine in the router's programmed table.
    pub fn slots(&self) -> std::collections::BTreeMap<Ipv4Addr, usize> {
        self.router.state().services[0]
            .table
            .as_ref()
            .map(|t| t.assignment.counts())
            .unwrap_or_default()
    }

    /// The designated engine whose assignment the router accepted.
    pub fn designated(&self) -> Option<Ipv4Addr> {
        self.router.state().services[0].key.map(|k| k.0)
    }
}

/// The web-cache service as a router configures it.
pub fn web_cache(password: Option<&str>) -> ServiceConfig {
    let mut s = ServiceConfig::new(
        ServiceId {
            dynamic: false,
            id: 0,
        },
        None,
    );
    s.password = password.map(|p| p.as_bytes().to_vec());
    s
}
