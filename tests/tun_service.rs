//! `contrib/systemd/hostkit-tun@.service` and what it relies on: the unit verifies
//! (`systemd-analyze verify`, no systemd running needed), `tun up` speaks the readiness protocol
//! (READY=1 only once the routing is in place, STOPPING=1 at teardown) to a `NOTIFY_SOCKET` the
//! test binds — a path and an abstract `@name` — and the tunnel works under the unit's hardening
//! (its capability bounding set, no new privileges, a read-only file system but the run
//! directory), emulated with setpriv and a private mount namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::tun::snapshot;
use crate::util::{NetNs, TestDir, have_tool, hostkit, hostkit_bin, run, run_ok, texts};

const UNIT: &str = "contrib/systemd/hostkit-tun@.service";

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap()
}

/// The values of `KEY=` in the unit, in order (comments skipped).
fn settings(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

fn setting(text: &str, key: &str) -> String {
    let v = settings(text, key);
    assert_eq!(v.len(), 1, "{key}= set {} times in {UNIT}", v.len());
    v[0].clone()
}

/// A copy of the unit in `dir` with the built binary in place of `/usr/bin/hostkit` (where the
/// package installs it): `verify` checks that the commands exist.
fn unit_copy(dir: &TestDir, text: &str) -> PathBuf {
    let copy = text.replace("/usr/bin/hostkit", &hostkit_bin().display().to_string());
    dir.write("hostkit-tun@.service", copy)
}

fn verify(unit_dir: &Path) -> (bool, String) {
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit_dir.join("hostkit-tun@lab.service"))
        .env("SYSTEMD_LOG_COLOR", "0"));
    let (o, e) = texts(&out);
    (out.status.success(), format!("{o}{e}"))
}

#[test]
fn the_unit_file_verifies() {
    let text = unit_text();
    // What the service relies on.
    assert_eq!(setting(&text, "Type"), "notify");
    assert_eq!(
        setting(&text, "ExecStart"),
        "/usr/bin/hostkit tun up --config /etc/hostkit/tun/%i.toml"
    );
    assert_eq!(
        setting(&text, "ExecStopPost"),
        "/usr/bin/hostkit tun down --config /etc/hostkit/tun/%i.toml"
    );
    assert!(
        settings(&text, "ExecStop").is_empty(),
        "stopping is SIGTERM"
    );
    assert_eq!(setting(&text, "KillSignal"), "SIGTERM");
    assert_eq!(setting(&text, "Restart"), "on-failure");
    assert_eq!(setting(&text, "ProtectSystem"), "strict");
    assert_eq!(setting(&text, "ProtectHome"), "yes");
    assert_eq!(setting(&text, "NoNewPrivileges"), "yes");
    // The run directory systemd makes is hostkit's default one.
    let runtime = setting(&text, "RuntimeDirectory");
    let printed = run_ok(
        hostkit()
            .env_remove("HOSTKIT_RUN_DIR")
            .args(["tun", "config", "--print"]),
    );
    assert!(
        printed
            .lines()
            .any(|l| l == format!("# run-dir = \"/run/{runtime}\"")),
        "RuntimeDirectory={runtime} is not hostkit's default run directory:\n{printed}"
    );
    assert_eq!(setting(&text, "RuntimeDirectoryPreserve"), "yes");

    if !have_tool("systemd-analyze", "--version") {
        return;
    }
    let dir = TestDir::new();
    unit_copy(&dir, &text);
    let (ok, output) = verify(dir.path());
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
    // The check can fail: a misspelt setting is only a warning, so the output must be empty.
    unit_copy(&dir, &text.replace("RestartSec=", "RestartSecs="));
    let (_, output) = verify(dir.path());
    assert!(output.contains("RestartSecs"), "{output}");
    // How exposed the service is, by systemd's own measure: "OK" or better.
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_copy(&dir, &text).with_file_name("hostkit-tun@lab.service"))
        .env("SYSTEMD_LOG_COLOR", "0"));
    let (o, e) = texts(&out);
    let level: f64 = o
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hostkit-tun@lab.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{o}{e}"));
    assert!(level <= 5.0, "exposure {level}:\n{o}");
}

static ABSTRACT: AtomicU32 = AtomicU32::new(0);

/// A socket standing in for the service manager's: (socket, the `NOTIFY_SOCKET` value).
fn notify_socket(dir: &TestDir, abstract_name: bool) -> (UnixDatagram, String) {
    let (socket, value) = if abstract_name {
        let name = format!(
            "hostkit-test-notify-{}-{}",
            std::process::id(),
            ABSTRACT.fetch_add(1, Ordering::SeqCst)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    } else {
        let path = dir.join("notify.sock");
        (
            UnixDatagram::bind(&path).unwrap(),
            path.display().to_string(),
        )
    };
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, value)
}

/// The next message (panics after the socket's timeout, with `up`'s stderr).
fn next_message(socket: &UnixDatagram, err: &Path) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification ({e}); tun up said:\n{}",
            std::fs::read_to_string(err).unwrap_or_default()
        ),
    }
}

/// The tunnel's routing, as READY=1 promises it: both `iif` rules, both local routes moved to
/// table 13 and out of table local.
fn assert_routing_in_place(ns: &NetNs) {
    let rules = ns.ip(&["rule"]);
    assert!(
        rules.contains("iif tun0 lookup 13") && rules.contains("iif tun1 lookup 13"),
        "READY=1 before the rules:\n{rules}"
    );
    let table = ns.ip(&["route", "show", "table", "13"]);
    assert!(
        table.contains("local 10.0.0.1 dev tun0") && table.contains("local 10.0.0.2 dev tun1"),
        "READY=1 before the routes:\n{table}"
    );
    let local = ns.ip(&["route", "show", "table", "local"]);
    assert!(!local.contains("10.0.0.1"), "{local}");
}

fn spawn_logged(cmd: &mut Command, err: &Path) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(err.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap()
}

fn wait_success(mut child: Child, err: &Path) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{status}:\n{}",
                std::fs::read_to_string(err).unwrap_or_default()
            );
            return;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("tun up did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn notify_handshake(abstract_name: bool) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let (socket, value) = notify_socket(&dir, abstract_name);
    let err = dir.join("up.err");
    let child = spawn_logged(
        hostkit()
            .env("NOTIFY_SOCKET", &value)
            .env("HOSTKIT_RUN_DIR", dir.join("run"))
            .args(["tun", "up", "--netns", ns.name(), "--engine", "simple"]),
        &err,
    );
    // Only STATUS= before READY=1; when READY=1 arrives, the routing is there.
    let mut before_ready = Vec::new();
    loop {
        let msg = next_message(&socket, &err);
        if msg.lines().any(|l| l == "READY=1") {
            assert_routing_in_place(&ns);
            assert!(
                msg.lines()
                    .any(|l| l.starts_with("STATUS=relaying tun0 <-> tun1")),
                "{msg}"
            );
            break;
        }
        assert!(
            msg.lines().all(|l| l.starts_with("STATUS=")),
            "before READY=1: {msg:?}"
        );
        before_ready.push(msg);
    }
    assert!(
        before_ready
            .iter()
            .any(|m| m == "STATUS=setting up tun0 <-> tun1"),
        "{before_ready:?}"
    );
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let msg = next_message(&socket, &err);
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    assert!(
        msg.lines()
            .any(|l| l == "STATUS=stopping (got SIGTERM); tearing down"),
        "{msg:?}"
    );
    wait_success(child, &err);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn notify_ready_after_the_routing_and_stopping_at_teardown() {
    notify_handshake(false);
}

#[test]
fn notify_to_an_abstract_socket() {
    notify_handshake(true);
}

/// `NOTIFY_SOCKET` naming what cannot be a socket address: one warning, and the tunnel runs.
#[test]
fn a_bad_notify_socket_is_a_warning() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let err = dir.join("up.err");
    let child = spawn_logged(
        hostkit()
            .env("NOTIFY_SOCKET", "vsock:2:1234")
            .env("HOSTKIT_RUN_DIR", dir.join("run"))
            .args(["tun", "up", "--netns", ns.name(), "--engine", "simple"]),
        &err,
    );
    let t = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("relay running")
    {
        assert!(t.elapsed() < Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    wait_success(child, &err);
    let text = std::fs::read_to_string(&err).unwrap();
    assert_eq!(
        text.matches("warning: NOTIFY_SOCKET=vsock:2:1234").count(),
        1,
        "{text}"
    );
}

/// The unit's hardening, emulated: the capability bounding set it names (setpriv), no new
/// privileges, and ProtectSystem=strict — every mount read-only but the run directory (standing
/// in for RuntimeDirectory=) — in a private mount namespace, ProtectHome= by empty read-only
/// mounts over the homes. Under it: `tun up --config` (the namespace entered by `ip netns exec`,
/// as the unit's stock capabilities cannot enter one) says READY=1, carries a ping, sets its
/// workers' nice value, tears down on SIGTERM, and `tun down --config` (ExecStopPost) runs.
#[test]
fn the_tunnel_works_under_the_units_hardening() {
    require_root!();
    for tool in ["setpriv", "unshare"] {
        if !have_tool(tool, "--version") {
            return;
        }
    }
    let text = unit_text();
    let caps: Vec<String> = setting(&text, "CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert_eq!(setting(&text, "NoNewPrivileges"), "yes");
    assert_eq!(setting(&text, "ProtectSystem"), "strict");

    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.write(
        "lab.toml",
        format!("run-dir = \"{}\"\nengine = \"fast\"\n", run_dir.display()),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A path: an abstract name belongs to the network namespace the socket is made in, and
    // here the whole process runs in the tunnel's.
    let (socket, value) = notify_socket(&dir, false);
    let bin = hostkit_bin();
    // Homes hidden unless the binary or the test's files live there.
    let keep = |home: &str| bin.starts_with(home) || dir.path().starts_with(home);
    let homes: Vec<&str> = ["/home", "/root", "/run/user"]
        .into_iter()
        .filter(|h| Path::new(h).is_dir() && !keep(h))
        .collect();
    let script = format!(
        r#"set -e
run="$1"; shift
mount --bind "$run" "$run"
for home in {homes}; do mount -t tmpfs -o ro,mode=0755 tmpfs "$home"; done
awk '{{print $5}}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$run") continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
if touch /etc/.hostkit-probe 2>/dev/null || touch "$run/../probe" 2>/dev/null; then
  echo "emulation: the file system is still writable" >&2; exit 97
fi
touch "$run/probe" && rm "$run/probe"
exec setpriv --bounding-set=-all,{caps} --inh-caps=-all --no-new-privs -- "$@"
"#,
        homes = homes.join(" "),
        caps = caps.join(",")
    );
    let hardened = |args: &[&str]| {
        let mut cmd = ns.exec(["unshare", "--mount", "--propagation", "private", "sh", "-c"]);
        cmd.arg(&script)
            .arg("sh")
            .arg(&run_dir)
            .arg(&bin)
            .args(args)
            .env("NOTIFY_SOCKET", &value)
            .env_remove("HOSTKIT_RUN_DIR");
        cmd
    };
    let config_arg = config.display().to_string();
    let err = dir.join("up.err");
    let child = spawn_logged(&mut hardened(&["tun", "up", "--config", &config_arg]), &err);
    loop {
        let msg = next_message(&socket, &err);
        if msg.lines().any(|l| l == "READY=1") {
            assert_routing_in_place(&ns);
            break;
        }
    }
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2", "10.0.0.2"]));
    // The capabilities really are the unit's.
    let pid = child.id();
    let status = run_ok(Command::new("sh").args([
        "-c",
        &format!("cat /proc/$(pgrep -P {pid} || echo {pid})/status"),
    ]));
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let bit = |cap: &str| match cap {
        "+net_admin" => 12,
        "+net_raw" => 13,
        "+sys_admin" => 21,
        "+sys_nice" => 23,
        other => panic!("add {other} to the test"),
    };
    let mask: u64 = caps.iter().map(|c| 1u64 << bit(c)).sum();
    assert!(
        status.contains(&format!("CapBnd:\t{mask:016x}")),
        "{status}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let msg = next_message(&socket, &err);
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    wait_success(child, &err);
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        !stderr.contains("warning:"),
        "a warning under the hardening:\n{stderr}"
    );
    assert_eq!(snapshot(&ns), before);
    let down = run(&mut hardened(&["tun", "down", "--config", &config_arg]));
    let (o, e) = texts(&down);
    assert!(down.status.success(), "{o}{e}");
    assert!(o.contains("nothing to remove"), "{o}");
}
