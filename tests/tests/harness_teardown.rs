//! Teardown: a dropped lab leaves no namespace and no process behind, also after a panic;
//! `cleanup_stale` removes a crashed run's leftovers and nothing else.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use netns_tests::netns::{self, cleanup_stale, ns, wait_until, Enter, Lab};

/// Whether `pid` is gone (or a zombie no one has reaped: it holds no namespace any more).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

fn assert_all_gone(names: &[String], pids: &[u32]) -> Result<()> {
    let listed = ns::list()?;
    for n in names {
        assert!(!listed.contains(n), "namespace {n} still listed");
    }
    // Processes other than our children are reaped by someone else: allow a moment.
    wait_until("lab processes to be gone", Duration::from_secs(5), || {
        Ok(pids.iter().all(|&p| gone(p)))
    })
}

/// Starts processes every way the harness can: a guard-owned one, a grandchild that left
/// the guard's process group, and one entered with `ip netns exec`. Returns their pids.
fn populate(lab: &Lab) -> Result<(Vec<netns::Process>, Vec<u32>)> {
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, "eth0", &b, "eth0")?;
    let plain = a.spawn(Command::new("sleep").arg("1000"))?;
    // setsid: the grandchild leaves the process group, so only the namespace scan finds it.
    let mut escaper = b.spawn(Command::new("sh").args([
        "-c",
        "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; wait",
    ]))?;
    escaper.wait_for_output("\n", Duration::from_secs(5))?;
    let grandchild: u32 = escaper.stdout()?.trim().parse()?;
    let ipexec = b.spawn_with(Command::new("sleep").arg("1000"), Enter::IpNetnsExec)?;
    let pids = vec![plain.pid(), escaper.pid(), grandchild, ipexec.pid()];
    Ok((vec![plain, escaper, ipexec], pids))
}

#[test]
fn dropped_lab_leaves_no_namespace_or_process() -> Result<()> {
    let lab = Lab::new("hdown")?;
    let (mut guards, pids) = populate(&lab)?;
    let names = lab.namespaces();
    let scratch = lab.scratch_dir().to_path_buf();
    assert_eq!(names.len(), 2);
    assert!(ns::list()?.contains(&names[0]));
    // The guards outlive the lab: teardown must kill their processes regardless.
    drop(lab);
    assert_all_gone(&names, &pids)?;
    for g in &mut guards {
        assert!(g.try_wait()?.is_some(), "{} still running", g.label());
    }
    assert!(!scratch.exists(), "scratch dir of a passing lab is removed");
    Ok(())
}

/// What a panicking test saw of its lab: namespaces, pids, scratch directory.
type Seen = (Vec<String>, Vec<u32>, std::path::PathBuf);

#[test]
fn lab_is_torn_down_when_the_test_panics() -> Result<()> {
    let seen: Mutex<Option<Seen>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new("hdown").unwrap();
        let (_guards, pids) = populate(&lab).unwrap();
        *seen.lock().unwrap() = Some((lab.namespaces(), pids, lab.scratch_dir().to_path_buf()));
        panic!("deliberate panic inside a lab");
    }));
    assert!(result.is_err());
    let (names, pids, scratch) = seen.into_inner().unwrap().expect("lab was built");
    assert_all_gone(&names, &pids)?;
    // A failed test's output is kept for the post-mortem; this one is ours to remove.
    assert!(scratch.join("a-sleep-0.stdout").exists());
    std::fs::remove_dir_all(scratch)?;
    Ok(())
}

#[test]
fn cleanup_stale_removes_dead_owners_only() -> Result<()> {
    // A pid that was ours a moment ago and is dead now.
    let mut child = Command::new("true").spawn()?;
    child.wait()?;
    let dead = child.id();
    let stale = format!("hstale-p{dead}-0-x");
    let alive = "hstale-p1-0-x".to_string(); // pid 1 always exists
    let other = format!("hother-p{dead}-0-x"); // another prefix: not ours to judge
    for n in [&stale, &alive, &other] {
        ns::create(n)?;
    }
    // A process left in the stale namespace, as a crashed run would leave one.
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "1000"])
        .spawn()?;
    let ident = ns::identity(&stale).expect("mounted");
    wait_until("the leftover to enter", Duration::from_secs(5), || {
        Ok(ns::processes_in(&[ident]).contains(&(leftover.id() as i32)))
    })?;

    let removed = cleanup_stale("hstale")?;
    let listed = ns::list()?;
    let (alive_kept, other_kept) = (listed.contains(&alive), listed.contains(&other));
    ns::delete(&alive)?;
    ns::delete(&other)?;
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!listed.contains(&stale));
    assert!(alive_kept && other_kept);
    assert!(leftover.wait()?.code().is_none(), "leftover was killed");
    Ok(())
}

/// Run by `a_crashed_run_is_cleaned_up_by_the_next` in a child process that is then killed
/// with SIGKILL: builds a lab with a process in it, says so, and waits to die.
#[test]
#[ignore = "helper: runs only as the child of a_crashed_run_is_cleaned_up_by_the_next"]
fn crashing_child_helper() -> Result<()> {
    if std::env::var_os("NETNS_TESTS_CRASH_CHILD").is_none() {
        return Ok(());
    }
    let lab = Lab::new("hcrash")?;
    let h = lab.host("victim")?;
    let p = h.spawn(Command::new("sleep").arg("1000"))?;
    println!("READY {} {}", h.netns(), p.pid());
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

#[test]
fn a_crashed_run_is_cleaned_up_by_the_next() -> Result<()> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "crashing_child_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("NETNS_TESTS_CRASH_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines.next().expect("child said READY")?;
        if let Some(rest) = line.strip_prefix("READY ") {
            break rest.to_string();
        }
    };
    let (ns_name, sleeper) = ready.split_once(' ').unwrap();
    let sleeper: u32 = sleeper.parse()?;
    child.kill()?; // SIGKILL: no unwinding, no Drop
    child.wait()?;
    assert!(
        ns::list()?.contains(&ns_name.to_string()),
        "the crash left it behind"
    );
    assert!(!gone(sleeper), "and its process");

    let removed = cleanup_stale("hcrash")?;
    assert_eq!(removed, vec![ns_name.to_string()]);
    assert_all_gone(&[ns_name.to_string()], &[sleeper])
}
