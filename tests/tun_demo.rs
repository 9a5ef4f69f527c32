//! The demo's claims checked from outside: run in a namespace the test made (`--netns`), with
//! the real tcpdump watching every interface, the relay's counters must equal what tcpdump saw
//! leave one device and enter the other, and lo must carry nothing.

use std::time::Duration;

use crate::util::{NetNs, TestDir, hostkit, run_with_timeout, texts};

/// Packets the kernel's per-CPU receive backlogs dropped so far (host-wide: the second column
/// of `/proc/net/softnet_stat`, in hex).
fn backlog_drops() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat").expect("softnet_stat");
    stat.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|c| u64::from_str_radix(c, 16).expect("softnet_stat column"))
        .sum()
}

/// `tunX -> tunY: N packets` from the demo's output.
fn claimed(stdout: &str, from: &str, to: &str) -> u64 {
    let prefix = format!("{from} -> {to}: ");
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` counters in:\n{stdout}"))
}

#[test]
fn the_demos_counters_match_what_tcpdump_sees() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let capture = dir.join("tcpdump.txt");
    let mut tcpdump = ns
        // Bounded even if the test panics before stopping it.
        // A large buffer (32 MiB): on a loaded machine the default one overflows.
        .exec([
            "timeout", "-s", "INT", "120", "tcpdump", "-B", "32768", "-i", "any", "-n", "-l",
        ])
        .stdout(std::fs::File::create(&capture).unwrap())
        .stderr(std::fs::File::create(dir.join("tcpdump.err")).unwrap())
        .spawn()
        .expect("tcpdump");
    // Capturing before the demo starts (bounded).
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(dir.join("tcpdump.err"))
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let dropped_before = backlog_drops();
    let out = run_with_timeout(
        hostkit().args(["tun", "demo", "--size-mib", "1", "--netns", ns.name()]),
        120,
    );
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    let backlog_dropped = backlog_drops() - dropped_before;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tcpdump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(tcpdump.wait().unwrap().success(), "tcpdump failed");
    let err = std::fs::read_to_string(dir.join("tcpdump.err")).unwrap();
    assert!(
        err.lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "{err}"
    );
    let seen = std::fs::read_to_string(&capture).unwrap();
    let count = |dev: &str, dir: &str| {
        seen.lines()
            .filter(|l| {
                let mut w = l.split_whitespace().skip(1);
                w.next() == Some(dev) && w.next() == Some(dir)
            })
            .count() as u64
    };
    // What the kernel sent out of one device is what the relay read there and claims — within
    // a few packets a connection may send after the relay stopped (a final ACK or FIN). On the
    // other side, nothing enters that the relay did not write; fewer may, when the kernel's
    // receive backlog (netdev_max_backlog, a host-wide setting the test leaves alone) overflows
    // on a loaded machine before the capture point.
    let (to1, to0) = (
        claimed(&stdout, "tun0", "tun1"),
        claimed(&stdout, "tun1", "tun0"),
    );
    assert!(to1 > 0 && to0 > 0, "{stdout}");
    for (from, to, claim) in [("tun0", "tun1", to1), ("tun1", "tun0", to0)] {
        let out = count(from, "Out");
        assert!(
            out >= claim && out - claim <= 4,
            "{from} -> {to}: the relay claims {claim}, tcpdump saw {out} leave {from}"
        );
        // Every packet the relay wrote is seen entering, or was dropped by the kernel's
        // receive backlog before the capture point (counted in /proc/net/softnet_stat).
        let entered = count(to, "In");
        assert!(
            entered <= claim && claim - entered <= backlog_dropped,
            "{from} -> {to}: the relay claims {claim}, tcpdump saw {entered} enter {to}, \
             the kernel's backlog dropped {backlog_dropped}"
        );
    }
    assert_eq!(
        count("lo", "In") + count("lo", "Out"),
        0,
        "lo carried traffic"
    );
    // Everything the demo set up in the namespace is gone.
    let links = crate::util::run_ok(&mut ns.exec(["ip", "-br", "link"]));
    assert!(
        !links.contains("tun0") && !links.contains("tun1"),
        "{links}"
    );
}
