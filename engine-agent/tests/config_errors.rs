//! Bad configuration: the error names the key and its line, the exit code is 2, and
//! nothing starts (no control socket appears, no datagram is sent).

mod common;

use std::process::Command;

fn check(dir: &std::path::Path, name: &str, body: &str) -> (i32, String) {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    let out = Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_name_key_and_line_and_exit_2() {
    let dir = common::scratch("config-errors");
    let head = "address = \"127.0.0.2\"\nrouters = [\"127.0.0.1\"]\n[[service]]\nid = 0\n";
    let cases = [
        ("weight = \"heavy\"\n", "service[0].weight", ":5:"),
        ("wieght = 3\n", "wieght", ":5:"),
        (
            "password = \"far-too-long\"\n",
            "service[0].password",
            ":5:",
        ),
        ("ports = [80]\n", "service[0].type", ":3:"),
        ("[[service]]\nid = 0\n", "service[1].id", ":5:"),
    ];
    for (i, (tail, key, line)) in cases.iter().enumerate() {
        let (code, err) = check(&dir, &format!("bad{i}.toml"), &format!("{head}{tail}"));
        assert_eq!(code, 2, "{tail}: {err}");
        assert!(err.contains(key), "{tail}: key {key} not in {err}");
        assert!(err.contains(line), "{tail}: line {line} not in {err}");
    }
    let (code, err) = check(
        &dir,
        "nort.toml",
        "address = \"127.0.0.2\"\n[[service]]\nid = 0\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("routers"), "{err}");
    let (code, err) = check(&dir, "syntax.toml", "address = \"127.0.0.2\n");
    assert_eq!(code, 2);
    assert!(err.contains(":1:"), "{err}");
}

#[test]
fn run_with_bad_config_starts_nothing() {
    let dir = common::scratch("config-run");
    let sock = dir.join("agent.sock");
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "control_socket = \"{}\"\naddress = \"127.0.0.2\"\nrouters = [\"127.0.0.1\"]\nport = 20481\n[[service]]\nid = 0\nweight = -1\n",
            sock.display()
        ),
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["run", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service[0].weight") && err.contains(":7:"),
        "{err}"
    );
    assert!(!sock.exists());
}

#[test]
fn example_configs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let out = Command::new(common::bin())
            .args(["check", "-c"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 3);
}
