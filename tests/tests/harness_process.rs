//! Processes in namespaces: captured output, errors that explain themselves, process-group
//! cleanup, and how each way in treats `/sys` and `/sys/fs/bpf`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use netns_tests::netns::{ns, wait_until, Enter, Lab};

#[test]
fn spawned_output_is_captured() -> Result<()> {
    let lab = Lab::new("hproc")?;
    let h = lab.host("box")?;
    let mut p = h.spawn(Command::new("sh").args([
        "-c",
        "echo to-stdout; echo to-stderr >&2; echo ready; exec sleep 1000",
    ]))?;
    p.wait_for_output("ready", Duration::from_secs(5))?;
    assert_eq!(p.stdout()?, "to-stdout\nready\n");
    assert_eq!(p.stderr()?, "to-stderr\n");
    assert!(p.stdout_path().starts_with(lab.scratch_dir()));
    assert!(p.is_running());
    let st = p.stop()?;
    assert!(st.code().is_none(), "stopped by a signal: {st}");
    // The log stays readable after the process ended.
    assert_eq!(std::fs::read_to_string(p.stderr_path())?, "to-stderr\n");

    let mut quick = h.spawn(Command::new("sh").args(["-c", "echo done; exit 4"]))?;
    assert_eq!(quick.wait_timeout(Duration::from_secs(5))?.code(), Some(4));
    assert_eq!(quick.stdout()?, "done\n");
    Ok(())
}

#[test]
fn run_errors_name_host_command_and_stderr() -> Result<()> {
    let lab = Lab::new("hproc")?;
    let h = lab.host("box")?;
    let out = h.run(Command::new("sh").args(["-c", "echo fine"]))?;
    assert_eq!(out.stdout, b"fine\n");
    let err = h
        .run(Command::new("sh").args(["-c", "echo something broke >&2; exit 3"]))
        .unwrap_err();
    let msg = format!("{err:#}");
    for part in ["host box", "sh -c", "exit status 3", "something broke"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    let err = h
        .run_with(
            Command::new("sleep").arg("10"),
            Enter::SetNs,
            Duration::from_millis(200),
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("did not finish"), "{err:#}");
    let err = h
        .run(&mut Command::new("/nonexistent/program"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("spawning"), "{err:#}");
    Ok(())
}

#[test]
fn dropping_a_guard_kills_its_process_group() -> Result<()> {
    let lab = Lab::new("hproc")?;
    let h = lab.host("box")?;
    let mut p = h.spawn(Command::new("sh").args(["-c", "sleep 1000 & echo $!; wait"]))?;
    p.wait_for_output("\n", Duration::from_secs(5))?;
    let child: u32 = p.stdout()?.trim().parse()?;
    drop(p);
    wait_until("the group member to go", Duration::from_secs(5), || {
        Ok(std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true))
    })
}

/// `net:[INODE]` of the namespace a child sees, and the inode the lab's namespace has.
#[test]
fn both_ways_in_enter_the_hosts_namespace() -> Result<()> {
    let lab = Lab::new("hproc")?;
    let h = lab.host("box")?;
    let (_, ino) = ns::identity(h.netns()).context("namespace mounted")?;
    for how in [Enter::SetNs, Enter::IpNetnsExec] {
        let out = h.run_with(
            Command::new("readlink").arg("/proc/self/ns/net"),
            how,
            Duration::from_secs(10),
        )?;
        assert_eq!(
            String::from_utf8(out.stdout)?.trim(),
            format!("net:[{ino}]"),
            "{how:?}"
        );
    }
    // And `command()` for std's own API.
    let out = h.command("readlink")?.arg("/proc/self/ns/net").output()?;
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        format!("net:[{ino}]")
    );
    Ok(())
}

/// A process entered with setns alone shares the root mount namespace and its bpffs at
/// /sys/fs/bpf (BPF pins made there outlive it); `ip netns exec` gives a private /sys in
/// which that bpffs is absent.
#[test]
fn setns_processes_see_the_root_bpffs() -> Result<()> {
    let bpffs = std::path::Path::new("/sys/fs/bpf");
    if !is_bpffs(bpffs) {
        // As the project's loader does on a fresh machine.
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
    }
    let lab = Lab::new("hproc")?;
    let h = lab.host("box")?;
    // bpffs allows directories: a marker only the root's bpffs has.
    let marker = bpffs.join(lab.id());
    std::fs::create_dir(&marker)?;
    let check = format!("test -d {}", marker.display());
    let setns = h.run(Command::new("sh").args(["-c", &check]));
    let ipexec = h.run_with(
        Command::new("sh").args(["-c", &check]),
        Enter::IpNetnsExec,
        Duration::from_secs(10),
    );
    let same_mnt = h
        .run(Command::new("readlink").arg("/proc/self/ns/mnt"))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    std::fs::remove_dir(&marker)?;
    setns.context("a setns-entered process must see the root bpffs")?;
    assert!(
        ipexec.is_err(),
        "ip netns exec remounts /sys: the marker is hidden there"
    );
    assert_eq!(
        same_mnt?,
        std::fs::read_link("/proc/self/ns/mnt")?.to_string_lossy()
    );
    Ok(())
}

fn is_bpffs(path: &std::path::Path) -> bool {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    statfs(path)
        .map(|s| s.filesystem_type() == BPF_FS_MAGIC)
        .unwrap_or(false)
}
