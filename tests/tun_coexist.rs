//! `hostkit tun` on a namespace with its own configuration and other tunnels: teardown undoes
//! only what `up` did, tunnels coexist or are refused at once, and a damaged state file is kept
//! as evidence. Each test is the situation that used to go wrong, in its own namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::tun::{Up, snapshot};
use crate::tun_trust::state_file;
use crate::util::{NetNs, TestDir, hostkit, run_ok, run_with_timeout, texts};

fn sysctl(ns: &NetNs, key: &str) -> String {
    run_ok(&mut ns.exec(["sysctl", "-n", key]))
        .trim()
        .to_string()
}

/// `hostkit tun SUB --netns NS --run-dir DIR ARGS…` → (exit code, stdout, stderr).
fn tun(sub: &str, ns: &NetNs, run_dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    // Bounded: a refusal that broke would otherwise leave `up` relaying forever.
    let out = run_with_timeout(
        hostkit()
            .args(["tun", sub, "--netns", ns.name(), "--run-dir"])
            .arg(run_dir)
            .args(args),
        60,
    );
    let (o, e) = texts(&out);
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code(), o, e)
}

#[test]
fn pre_existing_rules_and_sysctls_are_left_alone_by_sigterm_and_by_down() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["rule", "add", "iif", "tun0", "lookup", "13"]);
    ns.ip(&["-6", "rule", "add", "iif", "tun1", "lookup", "13"]);
    run_ok(&mut ns.exec(["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"]));
    let before = snapshot(&ns);
    let args = [
        "--addr0", "10.0.0.1", "--addr1", "10.0.0.2", "--addr0", "fd00::1", "--addr1", "fd00::2",
    ];
    // SIGTERM.
    let up = Up::start(&ns, &dir, "simple", &[], &args);
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert_eq!(snapshot(&ns), before, "teardown:\n{stderr}");
    // SIGKILL, then `down`.
    let up = Up::start(&ns, &dir, "simple", &[], &args);
    let mut down = up.hostkit("down", &[]);
    let mut down_again = up.hostkit("down", &[]);
    assert!(!up.stop(Signal::SIGKILL).0.success());
    let out = run_ok(&mut down);
    assert_eq!(snapshot(&ns), before, "down:\n{out}");
    // And a `down` without a record leaves the user's rules alone.
    let again = run_ok(&mut down_again);
    assert!(again.contains("nothing to remove"), "{again}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn a_second_up_reusing_one_device_name_is_refused_at_once_naming_the_other_tunnel() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let a = Up::start(&ns, &dir, "simple", &[], &[]);
    let during = snapshot(&ns);
    let start = Instant::now();
    let (code, out, err) = tun(
        "up",
        &ns,
        &dir.join("run"),
        &[
            "--dev0", "tun1", "--dev1", "tun2", "--addr0", "10.0.1.1", "--addr1", "10.0.1.2",
        ],
    );
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "not at once");
    assert!(
        err.contains("device tun1 belongs to the tunnel tun0 <-> tun1 (pid")
            && err.contains("running"),
        "{err}"
    );
    assert_eq!(snapshot(&ns), during, "the refused up changed something");
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    assert!(a.stop(Signal::SIGTERM).0.success());
}

#[test]
fn two_tunnels_coexist_and_the_shared_sysctl_stays_until_the_last_one_leaves() {
    require_root!();
    let (ns, dir_a, dir_b) = (NetNs::new(), TestDir::new(), TestDir::new());
    let run_dir = dir_a.join("run");
    let before = snapshot(&ns);
    let a = Up::start_with_run_dir(&ns, &dir_a, &run_dir, "simple", &[], &[]);
    let b = Up::start_with_run_dir(
        &ns,
        &dir_b,
        &run_dir,
        "simple",
        &[],
        &[
            "--dev0", "tun2", "--dev1", "tun3", "--addr0", "10.0.1.1", "--addr1", "10.0.1.2",
            "--table", "14",
        ],
    );
    assert_eq!(sysctl(&ns, "net.ipv4.ip_nonlocal_bind"), "1");
    let (status, _, stderr) = a.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "left alone: restore net.ipv4.ip_nonlocal_bind=0: still needed by the tunnel tun2 <-> tun3"
        ),
        "{stderr}"
    );
    assert_eq!(
        sysctl(&ns, "net.ipv4.ip_nonlocal_bind"),
        "1",
        "B still needs it"
    );
    // B still works, with a server bound to its moved address.
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.1.2"]));
    run_ok(&mut ns.exec([
        "timeout",
        "5",
        "python3",
        "-c",
        "import socket; s=socket.socket(); s.bind(('10.0.1.2', 0))",
    ]));
    let (status, _, stderr) = b.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("done: restore net.ipv4.ip_nonlocal_bind=0"),
        "{stderr}"
    );
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn an_address_already_on_another_interface_is_refused_before_anything_changes() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["address", "add", "10.0.0.2/24", "dev", "v0"]);
    let before = snapshot(&ns);
    let (code, out, err) = tun("up", &ns, &dir.join("run"), &["--engine", "simple"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("address 10.0.0.2 is already on v0"), "{err}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn a_damaged_state_file_is_evidence_up_refuses_down_explains_force_moves_it_aside() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let run_dir = dir.join("run");
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    assert!(!up.stop(Signal::SIGKILL).0.success());
    let state = state_file(&run_dir);
    // A crash mid-write on a bad disk: half a JSON document.
    let full = std::fs::read_to_string(&state).unwrap();
    let damaged = &full[..full.len() / 2];
    std::fs::write(&state, damaged).unwrap();
    let left = snapshot(&ns);
    assert!(left.contains("iif tun0 [detached] lookup 13"), "{left}");

    let (code, out, err) = tun("up", &ns, &run_dir, &["--engine", "simple"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(&format!("state file {} is damaged", state.display())),
        "{err}"
    );
    let (code, out, err) = tun("status", &ns, &run_dir, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("is damaged"), "{err}");
    let (code, out, err) = tun("down", &ns, &run_dir, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("nothing was undone from it")
            && err.contains("--force")
            && err.contains("iif tun0/tun1 lookup 13"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), damaged);
    assert_eq!(snapshot(&ns), left);

    let (code, out, err) = tun("down", &ns, &run_dir, &["--force"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let aside = PathBuf::from(format!("{}.corrupt", state.display()));
    assert!(
        out.contains(&format!(
            "moved the damaged state file aside as {}",
            aside.display()
        )),
        "{out}"
    );
    assert!(!state.exists());
    assert_eq!(
        std::fs::read_to_string(&aside).unwrap(),
        damaged,
        "the evidence changed"
    );
    let after = snapshot(&ns);
    assert!(!after.contains("iif tun0"), "{after}");
    // A new tunnel starts again.
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    assert!(up.stop(Signal::SIGTERM).0.success());
}

/// `ip -d -j link` info_data of tun0 and tun1 (type, pi, vnet_hdr, multi_queue, persist).
fn tun_flags(ns: &NetNs) -> String {
    ["tun0", "tun1"]
        .iter()
        .map(|dev| {
            let v: serde_json::Value =
                serde_json::from_str(&ns.ip(&["-d", "-j", "link", "show", dev])).unwrap();
            format!("{dev}: {}", v[0]["linkinfo"]["info_data"])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn persistent_devices_get_their_own_tun_flags_back_after_sigterm_and_after_down() {
    // The kernel keeps the last opener's flags: after a fast relay (vnet header, no packet
    // information) a device made with `pi` would otherwise be left with vnet_hdr on, pi off.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun", "pi"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun"]);
    let before = tun_flags(&ns);
    assert!(before.contains("\"pi\":true"), "{before}");
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    let during = tun_flags(&ns);
    assert!(during.contains("\"vnet_hdr\":true"), "{during}");
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("done: restore tun0's own settings (pi on, vnet_hdr off, offloads none)"),
        "{stderr}"
    );
    assert_eq!(tun_flags(&ns), before);
    // The same after SIGKILL, from the record.
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    let mut down = up.hostkit("down", &[]);
    assert!(!up.stop(Signal::SIGKILL).0.success());
    assert!(tun_flags(&ns).contains("\"vnet_hdr\":true"));
    let out = run_ok(&mut down);
    assert!(out.contains("done: restore tun1's own settings"), "{out}");
    assert_eq!(tun_flags(&ns), before);
}
