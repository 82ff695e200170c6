//! `redirector-ctl run --no-dataplane` as a real process on loopback, fed the Here-I-Am
//! messages Debian's Squid sent (wccp/tests/fixtures/squid), from a UDP socket that plays
//! the engine. The daemon listens on 127.0.0.1 and the "engine" on 127.0.0.2, both on one
//! free port, since WCCP peers use the same port on both sides.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wccp::wire::{md5_is_valid, Message, MessageType};

const SQUID_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wccp/tests/fixtures/squid");
const ENGINE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The UDP payloads of a fixture's Here-I-Am capture (Ethernet, IPv4, UDP).
fn here_i_ams(variant: &str) -> Vec<Vec<u8>> {
    let path = Path::new(SQUID_FIXTURES)
        .join(variant)
        .join("here-i-am.pcap");
    let file = std::fs::File::open(&path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let data = packet.unwrap().data.into_owned();
        let ihl = usize::from(data[14] & 0x0f) * 4;
        out.push(data[14 + ihl + 8..].to_vec());
    }
    assert!(!out.is_empty(), "{variant}: no Here-I-Am");
    out
}

fn free_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        if UdpSocket::bind(SocketAddrV4::new(ENGINE, port)).is_ok() {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &Path, port: u16, sock: &Path, metrics: u16, services: &str) {
    let text = format!(
        "[router]\naddress = \"127.0.0.1\"\nport = {port}\ncontrol_socket = \"{}\"\nmetrics = \"127.0.0.1:{metrics}\"\n\n[timers]\nhere_i_am_ms = 1000\n\n{services}",
        sock.display()
    );
    std::fs::write(path, text).unwrap();
}

struct Daemon {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    metrics: u16,
}

impl Daemon {
    /// Starts a daemon whose config is the common `[router]` part plus `services`.
    fn start(name: &str, services: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("ctl-daemon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ctl.sock");
        let log = dir.join("log.json");
        let config = dir.join("redirector.toml");
        let port = free_port();
        let metrics = free_tcp_port();
        write_config(&config, port, &sock, metrics, services);
        let child = Command::new(env!("CARGO_BIN_EXE_redirector-ctl"))
            .args(["run", "--no-dataplane", "--log-format", "json", "-c"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            dir,
            config,
            sock,
            log,
            port,
            metrics,
        };
        let t0 = Instant::now();
        while !d.sock.exists() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("daemon exited with {status}: {}", d.logs());
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn write_config(&self, services: &str) {
        write_config(&self.config, self.port, &self.sock, self.metrics, services);
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_redirector-ctl"))
            .args(args)
            .arg("--socket")
            .arg(&self.sock)
            .output()
            .unwrap()
    }

    fn show(&self, args: &[&str]) -> Value {
        let mut all = vec!["show"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn engine_socket(&self) -> UdpSocket {
        let s = UdpSocket::bind(SocketAddrV4::new(ENGINE, self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s
    }

    fn send(&self, engine: &UdpSocket, payload: &[u8]) {
        engine
            .send_to(payload, SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
            .unwrap();
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait_log(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.logs().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no `{needle}` in logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first datagram the engine socket receives, parsed.
fn receive(engine: &UdpSocket) -> Option<(Vec<u8>, Message)> {
    let mut buf = [0u8; 4096];
    let (n, _) = engine.recv_from(&mut buf).ok()?;
    let bytes = buf[..n].to_vec();
    let msg = Message::parse(&bytes).expect("the daemon sends well-formed WCCP");
    Some((bytes, msg))
}

#[test]
fn squid_here_i_ams_answered_listed_counted_and_stopped() {
    let services = "[[service]]\nid = 0\n\n[[service]]\nid = 80\ntype = \"dynamic\"\n\n[[service]]\nid = 90\ntype = \"dynamic\"\n\n[[service]]\nid = 81\ntype = \"dynamic\"\n\n[[service]]\nid = 53\ntype = \"dynamic\"\n";
    let mut d = Daemon::start("squid", services);
    let engine = d.engine_socket();
    let variants = [
        "gre-hash",
        "dynamic-ports",
        "l2-mask",
        "ports-source",
        "udp",
    ];
    for v in variants {
        let hia = &here_i_ams(v)[0];
        d.send(&engine, hia);
        let (_, reply) =
            receive(&engine).unwrap_or_else(|| panic!("{v}: no I-See-You\n{}", d.logs()));
        assert_eq!(reply.message_type, MessageType::ISeeYou, "{v}");
        let id = reply
            .router_identity()
            .expect("I-See-You has Router Identity Info");
        assert_eq!(id.router.address.ipv4(), Some(Ipv4Addr::LOCALHOST), "{v}");
        assert_eq!(
            reply.service(),
            Message::parse(hia).unwrap().service(),
            "{v}"
        );
    }

    let engines = d.show(&["engines"]);
    let list = engines.as_array().unwrap();
    assert_eq!(list.len(), variants.len(), "{engines:#}");
    for e in list {
        assert_eq!(e["address"], "10.250.0.2");
        // Squid's view does not list 127.0.0.1 with our Receive ID: not usable (yet).
        assert_eq!(e["state"], "waiting");
    }
    let one = d.show(&["engines", "90"]);
    assert_eq!(one[0]["service"], "dynamic/90");
    assert_eq!(one[0]["assignment"], "mask", "l2-mask engine: {one:#}");
    let services = d.show(&["services", "web-cache"]);
    assert_eq!(services[0]["state"], "forming");
    let expected: Value = serde_json::from_slice(
        &std::fs::read(Path::new(SQUID_FIXTURES).join("gre-hash/expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        services[0]["engines"][0]["weight"],
        expected["web_cache"]["weight"]
    );

    let stats = d.show(&["stats"]);
    assert_eq!(stats["messages_in"]["here_i_am"], variants.len());
    assert_eq!(stats["messages_out"]["i_see_you"], variants.len());
    let text = d.ctl(&["show"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Router Identifier:       127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("10.250.0.2"), "{text}");

    let m = d.metrics();
    assert!(
        m.contains("wccp_messages_total{direction=\"in\",type=\"here_i_am\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("wccp_messages_total{direction=\"out\",type=\"i_see_you\"} 5"),
        "{m}"
    );
    assert!(m.contains("wccp_engines{service=\"dynamic/90\"} 1"), "{m}");
    assert!(
        m.contains("wccp_usable_engines{service=\"standard/0\"} 0"),
        "{m}"
    );

    // attach/detach on the in-memory plane are recorded.
    assert!(d.ctl(&["attach", "lo"]).status.success());
    let all = d.show(&[]);
    assert_eq!(all["dataplane"]["kind"], "memory");
    assert_eq!(all["dataplane"]["interfaces"][0]["name"], "lo");
    assert!(d.ctl(&["detach", "lo"]).status.success());
    assert!(
        !d.ctl(&["detach", "lo"]).status.success(),
        "detaching twice fails"
    );
    assert_eq!(d.show(&[])["dataplane"]["interfaces"], Value::Array(vec![]));

    // Every event is logged with its kind.
    assert!(
        d.logs().contains("\"kind\":\"service_defined\""),
        "{}",
        d.logs()
    );

    let out = d.ctl(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.wait_exit().success());
    assert!(!d.sock.exists(), "the control socket is removed on exit");
}

#[test]
fn wrong_password_never_usable_counted_logged_and_reload_fixes_it() {
    let svc = |pw: &str| format!("[[service]]\nid = 0\npassword = \"{pw}\"\n");
    let mut d = Daemon::start("md5", &svc("wrongpw"));
    let engine = d.engine_socket();
    let hia = &here_i_ams("md5-password")[0];
    d.send(&engine, hia);
    assert!(receive(&engine).is_none(), "no answer to a wrong digest");
    assert_eq!(d.show(&["engines"]), Value::Array(vec![]));
    let stats = d.show(&["stats"]);
    assert_eq!(stats["errors"]["security"], 1, "{stats:#}");
    let per = d.show(&["stats", "0"]);
    assert_eq!(per[0]["counters"]["drop.security"], 1, "{per:#}");
    d.wait_log("\"reason\":\"security\"");
    let text = String::from_utf8_lossy(&d.ctl(&["show", "services"]).stdout).to_string();
    assert!(
        text.contains("Errors:                      security=1"),
        "{text}"
    );

    // A bad new config is refused and the old one kept.
    std::fs::write(&d.config, "[router]\naddress = 1\n").unwrap();
    d.signal("-HUP");
    d.wait_log("reload refused");
    assert_eq!(d.show(&["services"])[0]["security"], "md5");

    // The right password, by SIGHUP.
    d.write_config(&svc("Fx8pass!"));
    d.signal("-HUP");
    d.wait_log("password changed");
    d.send(&engine, hia);
    let (bytes, reply) = receive(&engine).expect("I-See-You after the password change");
    assert_eq!(reply.message_type, MessageType::ISeeYou);
    assert!(md5_is_valid(&bytes, b"Fx8pass!"), "the answer is signed");
    let engines = d.show(&["engines"]);
    assert_eq!(engines[0]["address"], "10.250.0.2");
    // The count survives the group's restart.
    assert_eq!(d.show(&["stats"])["errors"]["security"], 1);

    // Over the control socket as well: nothing changed now.
    let out = d.ctl(&["reload"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes"));

    // SIGTERM stops the controller (the data plane would stay under its grace).
    d.signal("-TERM");
    assert!(d.wait_exit().success());
    assert!(d.logs().contains("SIGTERM"));
}

#[test]
fn stop_clear_and_unknown_service() {
    let mut d = Daemon::start("clear", "[[service]]\nid = 60\ntype = \"dynamic\"\n");
    let engine = d.engine_socket();
    // Squid's web-cache Here-I-Am to a router that runs only dynamic/60.
    d.send(&engine, &here_i_ams("gre-hash")[0]);
    assert!(receive(&engine).is_none());
    // Garbage is counted by kind, never fatal.
    d.send(&engine, b"\x00\x0a\x02");
    let t0 = Instant::now();
    loop {
        let stats = d.show(&["stats"]);
        let errors = stats["errors"].as_object().unwrap();
        if errors.get("unknown_service") == Some(&Value::from(1)) && errors.len() == 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{stats:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bad = d.ctl(&["show", "engines", "61"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no service `61`"));
    let out = d.ctl(&["stop", "--clear"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("redirection removed"));
    assert!(d.wait_exit().success());
    assert!(d.logs().contains("data plane cleared"));
}

/// A full join against `wccp::engine` driven over real UDP: the engine becomes usable,
/// is designated, sends a Redirect-Assign; the daemon programs its data plane (`show
/// assignment`, metrics), and removes the engine when it leaves with SHUTDOWN.
#[test]
fn engine_joins_assigns_and_leaves() {
    use wccp::engine::{Action as EAction, Engine, EngineConfig};
    use wccp::time::Instant as PInstant;
    use wccp::wire::ServiceInfo;

    let d = Daemon::start("join", "[[service]]\nid = 0\npassword = \"pw\"\n");
    let socket = d.engine_socket();
    let mut cfg = EngineConfig::new(ENGINE, ServiceInfo::web_cache(), vec![Ipv4Addr::LOCALHOST]);
    cfg.interval = Duration::from_millis(300);
    cfg.password = Some(b"pw".to_vec());
    cfg.weight = 100;
    let mut engine = Engine::new(cfg);
    let origin = Instant::now();
    let now = || PInstant::from_millis(origin.elapsed().as_millis() as u64);
    let send = |actions: Vec<EAction>| {
        for a in actions {
            if let EAction::Send(t) = a {
                socket
                    .send_to(&t.bytes, SocketAddrV4::new(t.to, d.port))
                    .unwrap();
            }
        }
    };
    // Runs the engine for `ms` of real time.
    let run = |engine: &mut Engine, ms: u64| {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            let wait = engine
                .next_timeout()
                .map(|t| Duration::from_millis(t.as_millis().saturating_sub(now().as_millis())))
                .unwrap_or(Duration::from_millis(50))
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            socket.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 4096];
            match socket.recv_from(&mut buf) {
                Ok((n, std::net::SocketAddr::V4(from))) => {
                    send(engine.handle_message(*from.ip(), &buf[..n], now()))
                }
                _ => {
                    if engine.next_timeout().is_some_and(|t| t <= now()) {
                        send(engine.handle_timeout(now()));
                    }
                }
            }
        }
    };
    send(engine.start(now()));
    let t0 = Instant::now();
    loop {
        run(&mut engine, 200);
        let a = d.show(&["assignment", "0"]);
        if a[0]["assignment"]["slots"]["127.0.0.2"] == 256 {
            assert_eq!(a[0]["designated"], "127.0.0.2");
            assert_eq!(a[0]["assignment"]["method"], "hash");
            assert_eq!(a[0]["assignment"]["buckets"].as_array().unwrap().len(), 256);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "no assignment: {a:#}\n{}",
            d.logs()
        );
    }
    let s = d.show(&["services", "0"]);
    assert_eq!(s[0]["state"], "active");
    assert_eq!(s[0]["engines"][0]["state"], "usable");
    assert_eq!(s[0]["engines"][0]["weight"], 100);
    assert_eq!(s[0]["engines"][0]["slots"], 256);
    // On loopback the engine's address is the router's own: no next hop, said why.
    let hop = &s[0]["engines"][0]["next_hop"];
    assert_eq!(hop["state"], "unresolved", "{hop:#}");
    assert!(
        hop["reason"]
            .as_str()
            .is_some_and(|r| r.contains("address of this router")),
        "{hop:#}"
    );
    let m = d.metrics();
    assert!(
        m.contains("wccp_engine_slots{service=\"standard/0\",engine=\"127.0.0.2\"} 256"),
        "{m}"
    );
    assert!(
        m.contains("wccp_usable_engines{service=\"standard/0\"} 1"),
        "{m}"
    );
    assert!(d.logs().contains("data plane programmed"));
    assert!(
        m.contains("wccp_engine_next_hop_resolved{service=\"standard/0\",engine=\"127.0.0.2\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("wccp_next_hop_lookups_total{result=\"unresolved\"}"),
        "{m}"
    );

    send(engine.shutdown(now()));
    let t0 = Instant::now();
    loop {
        run(&mut engine, 100);
        let s = d.show(&["services", "0"]);
        if s[0]["engines"] == Value::Array(vec![]) {
            assert_eq!(s[0]["state"], "idle");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "engine not removed: {s:#}"
        );
    }
    assert_eq!(d.show(&["stats"])["events"]["engine_removed"], 1);
}
