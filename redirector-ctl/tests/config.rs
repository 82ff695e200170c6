//! Configuration as an operator meets it: `check` and `run` on good and bad files, exit
//! codes, and errors that name the key and its line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redirector-ctl"))
        .args(args)
        .output()
        .expect("running redirector-ctl")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctl-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("redirector.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_example_config_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = ctl(&["check", "-c", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 3, "expected the example configs, found {n}");
}

/// Each bad file: the error must give `file:line:col`, the key, and exit 2.
#[test]
fn bad_configs_name_key_and_line_and_exit_2() {
    let dir = scratch("bad");
    let cases: &[(&str, &str, &str)] = &[
        (
            "[router]\naddress = \"10.0.0.1\"\nprot = 5\n[[service]]\nid = 0\n",
            ":3:1:",
            "router.prot",
        ),
        (
            "[router]\naddress = \"10.0.0.300\"\n[[service]]\nid = 0\n",
            ":2:11:",
            "router.address",
        ),
        (
            "[router]\naddress = \"10.0.0.1\"\n[[service]]\nid = 0\n[[service]]\nid = 12\ntype = \"dynamic\"\n",
            ":6:6:",
            "service[1].id",
        ),
        (
            "[router]\naddress = \"10.0.0.1\"\n[timers]\nhere_i_am_ms = 5\n[[service]]\nid = 0\n",
            ":4:16:",
            "timers.here_i_am_ms",
        ),
        (
            "[router]\naddress = \"10.0.0.1\"\n[methods]\nforwarding = [\"gre\", \"ipip\"]\n[[service]]\nid = 0\n",
            ":4:14:",
            "methods.forwarding",
        ),
        (
            "[router]\naddress = \"10.0.0.1\"\n[[service]]\nid = 60\ntype = \"dynamic\"\nredirect = [\"10.0.0.1/8\"]\n",
            ":6:13:",
            "service[0].redirect",
        ),
        (
            "[router]\naddress = \"10.0.0.1\"\n[[service]]\nid = 0\npassword = \"longer than eight\"\n",
            ":5:12:",
            "service[0].password",
        ),
    ];
    for (text, at, key) in cases {
        let path = write(&dir, text);
        for cmd in ["check", "run"] {
            let mut args = vec![cmd, "-c", path.to_str().unwrap()];
            if cmd == "run" {
                args.push("--no-dataplane");
            }
            let out = ctl(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} on {text:?}: {err}");
            assert!(err.contains(at), "{cmd}: {err} should say {at}");
            assert!(err.contains(key), "{cmd}: {err} should name {key}");
        }
    }
    // A missing file is exit 2 as well.
    let out = ctl(&["check", "-c", "/nonexistent/redirector.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_with_bad_config_starts_nothing() {
    let dir = scratch("nothing");
    let sock = dir.join("ctl.sock");
    let path = write(
        &dir,
        &format!(
            "[router]\naddress = \"127.0.0.1\"\ncontrol_socket = \"{}\"\nbogus = 1\n[[service]]\nid = 0\n",
            sock.display()
        ),
    );
    let out = ctl(&["run", "--no-dataplane", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!sock.exists(), "no control socket may be created");
}
