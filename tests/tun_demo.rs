//! The demo's claims checked from outside: run in a namespace the test made (`--netns`), with
//! the real tcpdump watching every interface, the relay's counters must equal what tcpdump saw
//! leave one device and enter the other, and lo must carry nothing.

use std::time::Duration;

use crate::util::{NetNs, TestDir, hostkit, run_with_timeout, texts};

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
    let out = run_with_timeout(
        hostkit().args(["tun", "demo", "--size-mib", "1", "--netns", ns.name()]),
        120,
    );
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // tcpdump reads the kernel's capture ring a block at a time; a block that is not full is
    // handed over after tcpdump's 1 s timeout. Stopping it sooner would lose the last block.
    std::thread::sleep(Duration::from_millis(2500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tcpdump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(tcpdump.wait().unwrap().success(), "tcpdump failed");
    let err = std::fs::read_to_string(dir.join("tcpdump.err")).unwrap();
    // Nothing was lost inside the capture: what the filter took, tcpdump printed.
    let stat = |what: &str| -> u64 {
        err.lines()
            .find_map(|l| l.trim().strip_suffix(what))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{what}` in tcpdump's report:\n{err}"))
    };
    assert_eq!(stat("packets dropped by kernel"), 0, "{err}");
    assert_eq!(
        stat("packets captured"),
        stat("packets received by filter"),
        "{err}"
    );
    let seen = std::fs::read_to_string(&capture).unwrap();
    // `TIME DEV DIR IP SRC > DST: …`. tcpdump names the device when it prints the packet; a
    // device the demo already deleted by then is printed as `?`. The source address tells the
    // two ends apart: 10.0.0.1 sends out of tun0 and the relay writes it into tun1.
    let count = |dev: &str, dir: &str, src: Option<&str>| {
        seen.lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 4
                    && (w[1] == dev || (w[1] == "?" && src.is_some()))
                    && w[2] == dir
                    && src.is_none_or(|s| w[4] == s || w[4].starts_with(&format!("{s}.")))
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
    for (from, to, src, claim) in [
        ("tun0", "tun1", "10.0.0.1", to1),
        ("tun1", "tun0", "10.0.0.2", to0),
    ] {
        assert_eq!(
            count(to, "In", Some(src)),
            claim,
            "{from} -> {to}: entered {to}"
        );
        let out = count(from, "Out", Some(src));
        assert!(
            out >= claim && out - claim <= 4,
            "{from} -> {to}: the relay claims {claim}, tcpdump saw {out} leave {from}"
        );
    }
    assert_eq!(
        count("lo", "In", None) + count("lo", "Out", None),
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
