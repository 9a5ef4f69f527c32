//! `hostkit tun up` keeps its promise while it runs: when the kernel (or someone) undoes part of
//! the routing rewrite under the relay — a device down and up, an address removed — the watcher
//! puts it back within a bound, says so on one line, journals nothing new, and teardown still
//! restores the namespace exactly. What it cannot keep (a deleted device) stops the relay with
//! exit 2 after a full teardown; what is not the tunnel's is never touched. Each test in its own
//! network namespace, observed from outside with `ip`, `ping` and `tcpdump`.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::tun::{Up, snapshot};
use crate::util::{NetNs, TestDir, run, run_ok};

/// How long the watcher may take to put the tunnel back.
const REPAIR_BOUND: Duration = Duration::from_secs(3);

const V4: [&str; 0] = [];
const DUAL: [&str; 8] = [
    "--addr0", "10.0.0.1", "--addr1", "10.0.0.2", "--addr0", "fd00::1", "--addr1", "fd00::2",
];

macro_rules! per_engine_and_family {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn simple_ipv4() {
                    super::$name("simple", &super::V4)
                }
                #[test]
                fn fast_ipv4() {
                    super::$name("fast", &super::V4)
                }
                #[test]
                fn simple_dual_stack() {
                    super::$name("simple", &super::DUAL)
                }
                #[test]
                fn fast_dual_stack() {
                    super::$name("fast", &super::DUAL)
                }
            }
        )*
    };
}

per_engine_and_family!(
    link_down_and_up_under_the_relay_is_put_back,
    a_deleted_device_stops_the_relay_and_everything_is_undone,
);

/// `(side's device, local, peer)` of every address pair the tunnel has.
fn pairs(args: &[&str]) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut v = vec![
        ("tun0", "10.0.0.1", "10.0.0.2"),
        ("tun1", "10.0.0.2", "10.0.0.1"),
    ];
    if !args.is_empty() {
        v.push(("tun0", "fd00::1", "fd00::2"));
        v.push(("tun1", "fd00::2", "fd00::1"));
    }
    v
}

/// Every tunnel path is as promised: no tunnel route in table `local`, `route get` of each
/// peer names this side's device and source. Polled until `REPAIR_BOUND`.
fn wait_until_repaired(ns: &NetNs, up: &Up, args: &[&str]) {
    let start = Instant::now();
    loop {
        let problems = path_problems(ns, args);
        if problems.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < REPAIR_BOUND,
            "not repaired within {REPAIR_BOUND:?}: {problems:?}\nhostkit's stderr:\n{}",
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn path_problems(ns: &NetNs, args: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let local4 = ns.ip(&["route", "show", "table", "local"]);
    let local6 = ns.ip(&["-6", "route", "show", "table", "local"]);
    for line in local4.lines().chain(local6.lines()) {
        if (line.contains("dev tun0") || line.contains("dev tun1")) && line.starts_with("local ") {
            problems.push(format!("table local: {line}"));
        }
    }
    for (dev, local, peer) in pairs(args) {
        let out = run(&mut ns.exec(["ip", "route", "get", peer]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // The peer is reached through this side's device, from this side's address.
        let want = format!("dev {dev} ");
        let src = format!("src {local} ");
        if !(text.contains(&want) && text.contains(&src)) || text.starts_with("local ") {
            problems.push(format!("route get {peer}: {}", text.trim()));
        }
    }
    problems
}

/// `tcpdump -Q out -c N` on a device: what the kernel hands the relay there.
struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    fn start(ns: &NetNs, dev: &str, dir: &TestDir, count: usize) -> Capture {
        let out = dir.join(format!("{dev}.cap.txt"));
        let err = dir.join(format!("{dev}.cap.err"));
        let child = ns
            .exec([
                "timeout",
                "20",
                "tcpdump",
                "-l",
                "-n",
                "-i",
                dev,
                "-Q",
                "out",
                "-c",
                &count.to_string(),
                "icmp or icmp6",
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump");
        let start = Instant::now();
        while !std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tcpdump on {dev} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Capture { child, out }
    }

    fn wait(mut self) -> String {
        let status = self.child.wait().unwrap();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        assert!(status.success(), "tcpdump saw too little:\n{text}");
        text
    }
}

/// A ping of each peer from side 0 is read by the relay on tun0 (not answered through `lo`).
fn pings_cross_the_relay(ns: &NetNs, dir: &TestDir, args: &[&str]) {
    let peers: Vec<&str> = pairs(args)
        .into_iter()
        .filter(|(dev, ..)| *dev == "tun0")
        .map(|(_, _, peer)| peer)
        .collect();
    let cap = Capture::start(ns, "tun0", dir, peers.len());
    for peer in &peers {
        run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", peer]));
    }
    let seen = cap.wait();
    assert!(
        seen.contains("10.0.0.1 > 10.0.0.2: ICMP echo request"),
        "{seen}"
    );
    if !args.is_empty() {
        assert!(
            seen.contains("fd00::1 > fd00::2: ICMP6, echo request"),
            "{seen}"
        );
    }
}

/// The undo journal of the running tunnel's state file.
fn journal(dir: &TestDir) -> serde_json::Value {
    let run_dir = dir.join("run");
    let file = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a state file");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["undo"].clone()
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn link_down_and_up_under_the_relay_is_put_back(engine: &str, args: &[&str]) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, engine, &[], args);
    let recorded = journal(&dir);
    for dev in ["tun0", "tun1"] {
        ns.ip(&["link", "set", dev, "down"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    wait_until_repaired(&ns, &up, args);
    pings_cross_the_relay(&ns, &dir, args);
    let stderr = up.stderr();
    for (dev, local, _) in pairs(args) {
        let line = format!("{dev}: moved local {local} back to table 13");
        assert_eq!(count(&stderr, &line), 1, "{line:?} once in:\n{stderr}");
    }
    if !args.is_empty() {
        // The kernel deletes IPv6 addresses on link down.
        assert_eq!(
            count(&stderr, "tun0 lost fd00::1: added it again"),
            1,
            "{stderr}"
        );
        assert_eq!(
            count(&stderr, "tun1 lost fd00::2: added it again"),
            1,
            "{stderr}"
        );
    }
    // Everything put back was already in the journal: it is unchanged.
    assert_eq!(journal(&dir), recorded);
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn an_address_removed_under_the_relay_is_put_back() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let recorded = journal(&dir);
    ns.ip(&["addr", "del", "10.0.0.1", "peer", "10.0.0.2", "dev", "tun0"]);
    // Removing an IPv6 address also clears the source of the peer route through it.
    ns.ip(&["addr", "del", "fd00::2/128", "dev", "tun1"]);
    wait_until_repaired(&ns, &up, &DUAL);
    let addrs = ns.ip(&["-br", "addr", "show", "dev", "tun0"]);
    assert!(addrs.contains("10.0.0.1 peer 10.0.0.2/32"), "{addrs}");
    let route = ns.ip(&["-6", "route", "show", "fd00::1"]);
    assert!(
        route.contains("dev tun1 proto static src fd00::2"),
        "{route}"
    );
    pings_cross_the_relay(&ns, &dir, &DUAL);
    let stderr = up.stderr();
    assert_eq!(
        count(&stderr, "tun0 lost 10.0.0.1 peer 10.0.0.2: added it again"),
        1,
        "{stderr}"
    );
    assert_eq!(
        count(&stderr, "tun1 lost fd00::2: added it again"),
        1,
        "{stderr}"
    );
    assert_eq!(journal(&dir), recorded);
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(snapshot(&ns), before);
}

fn a_deleted_device_stops_the_relay_and_everything_is_undone(engine: &str, args: &[&str]) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, engine, &[], args);
    ns.ip(&["link", "del", "tun1"]);
    let (status, _, stderr) = up.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the tunnel was torn down"), "{stderr}");
    assert!(stderr.contains("tun1"), "{stderr}");
    // Nothing was "repaired" on the device that is left.
    assert!(!stderr.contains("added it again"), "{stderr}");
    assert!(!stderr.contains("moved local"), "{stderr}");
    assert_eq!(snapshot(&ns), before);
    assert!(
        std::fs::read_dir(dir.join("run"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "state left behind"
    );
}

#[test]
fn other_interfaces_and_a_users_own_local_routes_are_never_touched() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    // An unrelated interface pair, and a user's own local route for another address.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    for dev in ["v0", "v1"] {
        ns.ip(&["link", "set", dev, "addrgenmode", "none"]);
    }
    ns.ip(&["addr", "add", "192.168.7.1/24", "dev", "v0"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&[
        "route",
        "add",
        "local",
        "192.168.9.9",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let during = sorted_snapshot(&ns);
    // Down and up again: the kernel re-adds v0's local route to table local, which is not
    // the tunnel's to move; v1 left down is not the tunnel's to bring up.
    ns.ip(&["link", "set", "v0", "down"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "down"]);
    // Longer than a pass and a path check.
    std::thread::sleep(Duration::from_millis(1500));
    let local = ns.ip(&["route", "show", "table", "local"]);
    assert!(local.contains("local 192.168.9.9 dev lo"), "{local}");
    assert!(local.contains("local 192.168.7.1 dev v0"), "{local}");
    let v1 = ns.ip(&["-br", "link", "show", "v1"]);
    assert!(v1.contains("DOWN"), "{v1}");
    ns.ip(&["link", "set", "v1", "up"]);
    // The veth carrier comes back asynchronously; the kernel re-adds v0's routes at the end
    // of their tables.
    let start = Instant::now();
    while sorted_snapshot(&ns) != during {
        assert!(
            start.elapsed() < REPAIR_BOUND,
            "the namespace changed:\n{}\nwas:\n{during}",
            sorted_snapshot(&ns)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    assert!(!stderr.contains("added it again"), "{stderr}");
    assert!(!stderr.contains("moved local"), "{stderr}");
    assert!(!stderr.contains("brought it up"), "{stderr}");
}

/// The snapshot's lines, sorted (the order in which the kernel lists routes is not the point).
fn sorted_snapshot(ns: &NetNs) -> String {
    let s = snapshot(ns);
    let mut lines: Vec<&str> = s.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

#[test]
fn someone_fighting_the_watcher_stops_the_relay_with_exit_2_and_everything_is_undone() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    // Down again and again, each time after the watcher's pass: it must give up, not fight
    // forever (bounded: > 20 repairing passes within 10 s).
    let mut downs = 0;
    for _ in 0..60 {
        if !run(&mut ns.exec(["ip", "link", "set", "tun0", "down"]))
            .status
            .success()
        {
            break; // torn down: tun0 is gone
        }
        downs += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let (status, _, stderr) = up.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("something else manages tun0 and tun1"),
        "{stderr}"
    );
    assert!(stderr.contains("the tunnel was torn down"), "{stderr}");
    assert!(downs > 20 && downs < 60, "{downs} downs\n{stderr}");
    assert!(
        count(&stderr, "tun0 went down: brought it up again") >= 10,
        "{stderr}"
    );
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn an_address_taken_by_another_interface_stops_the_relay_with_exit_2() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    // Another interface takes the tunnel's address (tun1 still has it: no pass can find it
    // missing, whatever the machine's load).
    ns.ip(&["addr", "add", "10.0.0.2/32", "dev", "v0"]);
    let (status, _, stderr) = up.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("10.0.0.2 of tun1 is now on v0"), "{stderr}");
    assert!(stderr.contains("the tunnel was torn down"), "{stderr}");
    assert!(!stderr.contains("added it again"), "{stderr}");
    // v0's address is not the tunnel's: it stays.
    let v0 = ns.ip(&["-br", "addr", "show", "dev", "v0"]);
    assert!(v0.contains("10.0.0.2/32"), "{v0}");
    ns.ip(&["addr", "del", "10.0.0.2/32", "dev", "v0"]);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn on_persistent_devices_what_was_there_before_is_put_back_as_it_was() {
    // tun0 was up and held fd00::1/64 before `up`; tun1 was down. A down/up drops fd00::1/64:
    // it comes back as it was (not as hostkit's /128), tun1 (which hostkit brought up) is
    // brought up again, and teardown still leaves both devices exactly as they were.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun"]);
    ns.ip(&["link", "set", "tun0", "up"]);
    ns.ip(&["-6", "address", "add", "fd00::1/64", "dev", "tun0", "nodad"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "simple", &[], &DUAL);
    let recorded = journal(&dir);
    ns.ip(&["link", "set", "tun0", "down"]);
    ns.ip(&["link", "set", "tun0", "up"]);
    ns.ip(&["link", "set", "tun1", "down"]);
    wait_until_repaired(&ns, &up, &DUAL);
    let addrs = ns.ip(&["-6", "-br", "addr", "show", "dev", "tun0"]);
    assert!(addrs.contains("fd00::1/64"), "{addrs}");
    pings_cross_the_relay(&ns, &dir, &DUAL);
    let stderr = up.stderr();
    assert_eq!(
        count(
            &stderr,
            "tun0 lost fd00::1: added it again as it was before `up` (fd00::1/64)"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(
        count(&stderr, "tun1 went down: brought it up again"),
        1,
        "{stderr}"
    );
    assert_eq!(journal(&dir), recorded);
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    // (See tun_ipv6: `ip route` shows a stale `linkdown` flag on IPv6 routes after a carrier
    // change; `ip -6 route` shows it right.)
    let same = |s: String| s.replace(" linkdown", "");
    assert_eq!(same(snapshot(&ns)), same(before), "teardown:\n{stderr}");
}

#[test]
fn a_rule_removed_under_the_relay_is_put_back_with_its_priority() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let recorded = journal(&dir);
    let rules = (ns.ip(&["rule"]), ns.ip(&["-6", "rule"]));
    ns.ip(&["rule", "del", "iif", "tun1", "lookup", "13"]);
    ns.ip(&["-6", "rule", "del", "iif", "tun0", "lookup", "13"]);
    let start = Instant::now();
    while (ns.ip(&["rule"]), ns.ip(&["-6", "rule"])) != rules {
        assert!(
            start.elapsed() < REPAIR_BOUND,
            "rules not put back:\n{}\n{}\n{}",
            ns.ip(&["rule"]),
            ns.ip(&["-6", "rule"]),
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The requests arrive on tun1 (IPv4) and tun0 (IPv6 replies): both need their rule.
    pings_cross_the_relay(&ns, &dir, &DUAL);
    let stderr = up.stderr();
    for line in [
        "tun1: the IPv4 rule iif tun1 lookup 13 was removed: added it again",
        "tun0: the IPv6 rule iif tun0 lookup 13 was removed: added it again",
    ] {
        assert_eq!(count(&stderr, line), 1, "{stderr}");
    }
    assert_eq!(journal(&dir), recorded);
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn a_users_own_rule_removed_under_the_relay_stops_it_with_exit_2() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["rule", "add", "iif", "tun0", "lookup", "13", "pref", "100"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    ns.ip(&["rule", "del", "iif", "tun0", "lookup", "13", "pref", "100"]);
    let (status, _, stderr) = up.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("the IPv4 rule iif tun0 lookup 13, which was there before `up`, was removed"),
        "{stderr}"
    );
    assert!(!stderr.contains("added it again"), "{stderr}");
    // Everything else as before (the user's rule is the user's to put back).
    ns.ip(&["rule", "add", "iif", "tun0", "lookup", "13", "pref", "100"]);
    assert_eq!(snapshot(&ns), before);
}
