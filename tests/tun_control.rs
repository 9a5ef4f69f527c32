//! Live control of a running relay (`tun set`, `tun stats`): changes applied between two
//! packets while traffic flows, observed with ping and iperf3; the control socket is root's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::tun::Up;
use crate::util::{NetNs, TestDir, hostkit, run_with_timeout, texts};

/// `hostkit tun ARGS… --netns NS` with the test's run directory; returns (code, stdout, stderr).
fn tun(ns: &NetNs, dir: &TestDir, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_with_timeout(
        hostkit()
            .arg("tun")
            .args(args)
            .args(["--netns", ns.name()])
            .env("HOSTKIT_RUN_DIR", dir.join("run"))
            .stdin(Stdio::null()),
        30,
    );
    let (stdout, stderr) = texts(&out);
    (out.status.code(), stdout, stderr)
}

/// `(sent, rtt_ms)` of each reply in `ping -D` output: the send time (Unix seconds) is the
/// reply's time stamp less its round trip.
fn replies(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let stamp: f64 = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let rtt: f64 = l
                .split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((stamp - rtt / 1000.0, rtt))
        })
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn rtt_follows_tun_set_within_a_second_and_back() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    let log = dir.join("ping.txt");
    // 60 pings, 50 ms apart: 3 s of samples, each stamped with its arrival time.
    let mut ping = ns
        .exec(["ping", "-n", "-D", "-i", "0.05", "-c", "60", "10.0.0.2"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let before_set = unix_now();
    let (code, stdout, stderr) = tun(&ns, &dir, &["set", "--impair", "delay 50ms"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("impair: delay 50ms"), "{stdout}");
    let set = unix_now();
    std::thread::sleep(Duration::from_millis(1400));
    let before_unset = unix_now();
    let (code, _, stderr) = tun(&ns, &dir, &["set", "--no-impair"]);
    assert_eq!(code, Some(0), "{stderr}");
    let unset = unix_now();
    let start = Instant::now();
    while ping.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ping did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = replies(&std::fs::read_to_string(&log).unwrap());
    assert!(all.len() >= 55, "pings lost: {all:?}");
    let median = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let sent_in = |from: f64, to: f64| -> Vec<f64> {
        all.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect()
    };
    // Before the set: fast (a loaded machine delays a ping now and then: the median decides).
    assert!(median(sent_in(0.0, before_set)) < 10.0, "{all:?}");
    // Sent once `tun set` has answered (the change is in place then; 0.1 s of margin for the
    // clocks), and back before `--no-impair` was asked for: both 50 ms delays, every one.
    let slow = sent_in(set + 0.1, before_unset - 0.2);
    assert!(slow.len() >= 10, "{all:?}");
    assert!(slow.iter().all(|&t| t >= 99.0), "{all:?}");
    assert!(median(slow) < 150.0, "{all:?}");
    // Sent once `--no-impair` has answered: none delayed.
    let after = sent_in(unset + 0.1, f64::MAX);
    assert!(after.len() >= 5, "{all:?}");
    assert!(after.iter().all(|&t| t < 99.0), "still delayed: {all:?}");
    assert!(median(after) < 10.0, "{all:?}");
    let (_, _, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(stderr.contains("tun set: impair delay 50ms"), "{stderr}");
    assert!(stderr.contains("tun set: impair off"), "{stderr}");
}

#[test]
fn a_tcp_transfer_keeps_running_while_loss_is_raised_and_lowered() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    let mut server = ns
        .exec(["iperf3", "-s", "-1", "-B", "10.0.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let json = dir.join("iperf.json");
    let mut client = ns
        .exec([
            "iperf3", "-c", "10.0.0.2", "-B", "10.0.0.1", "-t", "5", "-i", "1", "-J",
        ])
        .stdout(std::fs::File::create(&json).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for args in [
        &["set", "--impair", "loss 5%", "--seed", "1"][..],
        &["set", "--impair", "loss 1%"][..],
        &["set", "--no-impair"][..],
    ] {
        std::thread::sleep(Duration::from_millis(1000));
        let (code, _, stderr) = tun(&ns, &dir, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = client.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "iperf3 hangs");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(status.success(), "iperf3 failed: {report}");
    let intervals = report["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 5, "{report}");
    for i in intervals {
        let bps = i["sum"]["bits_per_second"].as_f64().unwrap();
        assert!(bps > 0.0, "a second without data: {report}");
    }
    let (_, stdout, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(
        stderr.contains("tun set: impair loss 5% (seed 1)"),
        "{stderr}"
    );
    // The impairment really dropped packets while it was on (TCP retransmitted them).
    let retransmits = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    assert!(retransmits > 0, "no loss seen by TCP: {report}\n{stdout}");
}

#[test]
fn tun_stats_shows_live_counters_and_stages_in_json() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(
        &ns,
        &dir,
        "simple",
        &[],
        &["--impair", "loss 50%", "--seed", "2"],
    );
    let out = run_with_timeout(
        &mut ns.exec(["ping", "-n", "-q", "-i", "0.01", "-c", "100", "10.0.0.2"]),
        60,
    );
    let (ping, _) = texts(&out);
    let (code, stdout, stderr) = tun(
        &ns,
        &dir,
        &["stats", "--format", "json", "--watch", "1", "--count", "2"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let samples: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 2, "{stdout}");
    let s = &samples[1];
    assert_eq!(s["schema_version"], 1);
    assert!(s["interval_s"].as_f64().unwrap() >= 1.0);
    assert_eq!(s["directions"][0]["from"], "tun0");
    assert!(s["directions"][0]["packets_per_s"].is_number(), "{s}");
    let stage = &s["stages"][0];
    assert_eq!(stage["name"], "impair");
    // What ping saw lost is what the stage says it dropped (both ways).
    let dropped = stage["directions"][0]["dropped"].as_u64().unwrap()
        + stage["directions"][1]["dropped"].as_u64().unwrap();
    let received: u64 = ping
        .split(" received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("ping summary");
    let forward_dropped = stage["directions"][0]["dropped"].as_u64().unwrap();
    assert_eq!(
        stage["directions"][0]["packets"].as_u64().unwrap(),
        100,
        "{s}"
    );
    assert_eq!(
        100 - received,
        forward_dropped + stage["directions"][1]["dropped"].as_u64().unwrap(),
        "{ping}\n{s}"
    );
    assert!(dropped > 20 && dropped < 80, "{s}");
    up.stop(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn the_control_socket_is_roots_and_bad_requests_change_nothing() {
    // The attack: anyone but root reaching the socket, or garbage in it.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    let socks: Vec<_> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    let meta = std::fs::metadata(&socks[0]).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // An unprivileged user cannot even connect.
    let out = run_with_timeout(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
            .arg(format!(
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept PermissionError:\n sys.exit(3)\nsys.exit(0)",
                socks[0].to_str().unwrap()
            )),
        30,
    );
    assert_eq!(out.status.code(), Some(3), "{:?}", texts(&out));
    // Garbage: answered with an error, the relay unchanged and still relaying.
    let out = run_with_timeout(
        std::process::Command::new("/usr/bin/python3").arg("-c").arg(format!(
            "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.sendall(b'{{\"version\":1,\"op\":\"set\",\"impair\":[\"loss 100%\"],\"evil\":1}}\\n')\nprint(s.recv(65536).decode())",
            socks[0].to_str().unwrap()
        )),
        30,
    );
    let (reply, _) = texts(&out);
    assert!(reply.contains("\"ok\":false"), "{reply}");
    assert!(reply.contains("unknown field"), "{reply}");
    // A bad spec through tun set: refused by name, exit 2, nothing changed.
    let (code, _, stderr) = tun(&ns, &dir, &["set", "--impair", "delay 10xs"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad time \"10xs\""), "{stderr}");
    let out = run_with_timeout(
        &mut ns.exec(["ping", "-n", "-c", "3", "-i", "0.1", "10.0.0.2"]),
        30,
    );
    assert!(out.status.success(), "{:?}", texts(&out));
    let (_, stdout, _) = tun(&ns, &dir, &["stats"]);
    assert!(!stdout.contains("stage"), "{stdout}");
    let (_, _, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(!stderr.contains("tun set:"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.join("run")).unwrap().next().is_none(),
        "the socket is removed with the relay"
    );
}
