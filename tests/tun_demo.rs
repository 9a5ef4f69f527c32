//! The demo's claims checked from outside: run in a namespace the test made (`--netns`), with
//! the real tcpdump watching every interface, the relay's counters must equal what tcpdump saw
//! leave one device and enter the other, and lo must carry nothing.

use std::process::Stdio;
use std::time::Duration;

use crate::util::{NetNs, TestDir, hostkit, run, texts};

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
        .exec(["tcpdump", "-i", "any", "-n", "-l"])
        .stdout(std::fs::File::create(&capture).unwrap())
        .stderr(std::fs::File::create(dir.join("tcpdump.err")).unwrap())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(800));
    let out = run(hostkit()
        .args(["tun", "demo", "--size-mib", "1", "--netns", ns.name()])
        .stdin(Stdio::null()));
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    std::thread::sleep(Duration::from_millis(300));
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
    // Every packet the relay wrote into one device is seen entering it; what the kernel sent
    // out of the other is what the relay read there, but for the last few a connection may
    // send after the relay stopped (a final ACK or FIN).
    let (to1, to0) = (
        claimed(&stdout, "tun0", "tun1"),
        claimed(&stdout, "tun1", "tun0"),
    );
    assert!(to1 > 0 && to0 > 0, "{stdout}");
    for (from, to, claim) in [("tun0", "tun1", to1), ("tun1", "tun0", to0)] {
        assert_eq!(count(to, "In"), claim, "{from} -> {to}: entered {to}");
        let out = count(from, "Out");
        assert!(
            out >= claim && out - claim <= 4,
            "{from} -> {to}: the relay claims {claim}, tcpdump saw {out} leave {from}"
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
