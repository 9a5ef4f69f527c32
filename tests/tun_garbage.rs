//! The relay survives anything it is handed: 100 000 garbage frames of random length, sent into
//! tun0 through an `AF_PACKET` socket, with `-vv` so that the decoder sees every one. It keeps
//! running, counts the frames the kernel refused on the other side (every frame is accounted
//! for: relayed, refused, or dropped by tun0's own queue), and still forwards a ping.

use std::process::Stdio;

use crate::tun::{Up, relayed_packets};
use crate::util::{NetNs, TestDir, run, run_ok, texts};

with_both_engines!(garbage_frames_do_not_stop_the_relay);

/// How many frames.
const FRAMES: u32 = 100_000;

/// Sends FRAMES frames of random bytes and random length (1 to 1500) out of tun0, as the
/// kernel's own stack would hand them to the device: the relay reads each from tun0's fd.
const SENDER: &str = r#"
import os, random, socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("tun0", 0))
rnd = random.Random(4242)
sent = 0
for i in range(n):
    frame = rnd.randbytes(rnd.randint(1, 1500))
    try:
        s.send(frame)
        sent += 1
    except OSError:
        pass
print(sent)
"#;

fn garbage_frames_do_not_stop_the_relay(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-vv"], &[]);
    let out = run(ns
        .exec(["python3", "-c", SENDER, &FRAMES.to_string()])
        .stdin(Stdio::null()));
    let (sent, err) = texts(&out);
    assert!(out.status.success(), "sender failed: {err}");
    let sent: u64 = sent.trim().parse().expect("the sender's count");
    assert!(
        sent >= u64::from(FRAMES) * 9 / 10,
        "only {sent} frames sent"
    );
    // Still relaying: a ping crosses both ways.
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "3", "10.0.0.2"]));
    // What the kernel itself dropped on tun0's queue before the relay could read it (the
    // sender is faster than a relay that decodes and logs every frame).
    let dropped: u64 = run_ok(&mut ns.exec(["cat", "/sys/class/net/tun0/statistics/tx_dropped"]))
        .trim()
        .parse()
        .expect("tx_dropped");
    let (status, stdout, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(
        status.success(),
        "{status}\n{}",
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(!stderr.contains("panicked"), "the relay panicked");
    // Every frame is relayed, counted as a write error, or was dropped by the kernel's queue.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tun0 -> tun1: "))
        .unwrap_or_else(|| panic!("no counters in:\n{stdout}"));
    let number = |label: &str| -> u64 {
        line.split(", ")
            .find(|part| part.ends_with(label))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.trim_start_matches("tun0 -> tun1: ").parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` in {line}"))
    };
    let relayed = relayed_packets(&stdout, "tun0", "tun1");
    let refused = number("write errors");
    assert!(
        relayed + refused + dropped >= sent,
        "{sent} sent, {relayed} relayed + {refused} refused + {dropped} dropped by tun0's queue: {line}"
    );
    assert!(
        refused > 0,
        "the kernel accepts no garbage on tun1, yet no write error was counted: {line}"
    );
    assert!(relayed_packets(&stdout, "tun1", "tun0") >= 2, "{stdout}");
}
