//! `hostkit tun` over IPv6 and dual stack: every client, whatever source it picks, takes the
//! tunnel's path — requests leave through tun0 with source fd00::1 and arrive on tun1, replies
//! the reverse. Observed from outside: `tcpdump -Q out` on each device (what the kernel hands
//! the relay there), `ip -6 route get`, link counters, ICMP counters. Each test in its own
//! network namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use crate::tun::{
    PYTHON, Server, Up, blob, lo_rx_packets, relayed_packets, sha256_file, snapshot, snmp,
};
use crate::util::{NetNs, TestDir, hostkit, run, run_ok, texts};

with_both_engines!(
    ipv6_only_every_client_takes_the_tunnel,
    dual_stack_every_client_takes_the_tunnel,
    an_idle_ipv4_tunnel_carries_no_packet_for_10_s,
    one_sided_rules_behave_for_ipv6_as_for_ipv4,
    fragments_and_extension_headers_are_named_with_vv,
);

const V6: [&str; 4] = ["--addr0", "fd00::1", "--addr1", "fd00::2"];
const DUAL: [&str; 8] = [
    "--addr0", "fd00::1", "--addr1", "fd00::2", "--addr0", "10.0.0.1", "--addr1", "10.0.0.2",
];

/// `tcpdump -Q out` on one device: what the kernel sends into it (the relay reads it there).
struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    fn start(ns: &NetNs, dev: &str, dir: &TestDir) -> Capture {
        let out = dir.join(format!("{dev}.out.txt"));
        let err = dir.join(format!("{dev}.err.txt"));
        let child = ns
            .exec([
                "timeout", "120", "tcpdump", "-l", "-n", "-i", dev, "-Q", "out", "-s", "128",
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
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture { child, out }
    }

    /// Stops the capture; returns its IP lines as (src, dst, line).
    fn stop(mut self) -> Vec<(String, String, String)> {
        // Let the last packets reach the file.
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .filter_map(parse_line)
            .collect()
    }
}

/// `12:00:00.000 IP6 fd00::1.40000 > fd00::2.8000: …` → (fd00::1, fd00::2, line).
fn parse_line(line: &str) -> Option<(String, String, String)> {
    let mut words = line.split_whitespace();
    let family = words.nth(1)?;
    if family != "IP" && family != "IP6" {
        return None;
    }
    let src = words.next()?;
    words.next()?; // ">"
    let dst = words.next()?.trim_end_matches(':');
    let host = |tok: &str| -> String {
        if family == "IP" {
            tok.split('.').take(4).collect::<Vec<_>>().join(".")
        } else {
            match tok.rsplit_once('.') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
                _ => tok.to_string(),
            }
        }
    };
    Some((host(src), host(dst), line.to_string()))
}

/// Every packet the kernel sent into `dev` went from `src` to `dst`; there were at least `min`.
fn all_from_to(lines: &[(String, String, String)], dev: &str, pairs: &[(&str, &str)], min: usize) {
    let text: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    for (s, d, line) in lines {
        assert!(
            pairs.iter().any(|(ps, pd)| s == ps && d == pd),
            "on {dev}: {line}\n(expected only {pairs:?}); capture:\n{}",
            text.join("\n")
        );
    }
    assert!(
        lines.len() >= min,
        "only {} packets on {dev}, expected >= {min}:\n{}",
        lines.len(),
        text.join("\n")
    );
}

fn count(lines: &[(String, String, String)], needle: &str) -> usize {
    lines.iter().filter(|l| l.2.contains(needle)).count()
}

fn route_get(ns: &NetNs, dst: &str) -> String {
    run_ok(&mut ns.exec(["ip", "route", "get", dst]))
}

/// A UDP echo server on `[addr]:port` (each datagram answered by `cat`).
fn udp_echo(ns: &NetNs, addr: &str, port: u16, dir: &TestDir) -> Child {
    let spec = if addr.contains(':') {
        format!("UDP6-RECVFROM:{port},bind=[{addr}],fork")
    } else {
        format!("UDP4-RECVFROM:{port},bind={addr},fork")
    };
    let child = ns
        .exec(["socat", &spec, "EXEC:cat"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("udp.err")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while run_ok(&mut ns.exec(["ss", "-Hlun", &format!("sport = :{port}")]))
        .trim()
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "UDP echo not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every client, each with the default source, an explicit source and the device: ping, HTTP,
/// UDP, passive FTP (EPSV) and iperf3, over the family of `local`/`peer`.
fn every_client(ns: &NetNs, dir: &TestDir, local: &str, peer: &str) {
    let v6 = peer.contains(':');
    let fam = if v6 { "-6" } else { "-4" };
    let url_host = if v6 {
        format!("[{peer}]")
    } else {
        peer.to_string()
    };
    let sources: [Option<&str>; 3] = [None, Some(local), Some("tun0")];

    for src in sources {
        let mut argv = vec!["ping", fam, "-c", "1", "-W", "2"];
        if let Some(s) = src {
            argv.extend(["-I", s]);
        }
        argv.push(peer);
        run_ok(&mut ns.exec(&argv));
    }

    // HTTP.
    let data = blob(256 << 10, 0xbeef);
    let www = dir.join(format!("www{fam}"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("blob"), &data).unwrap();
    let want = format!("{:x}", Sha256::digest(&data));
    {
        let _http = Server::start(
            ns,
            &[
                PYTHON,
                "-m",
                "http.server",
                "--bind",
                peer,
                "--directory",
                www.to_str().unwrap(),
                "8000",
            ],
            8000,
            &dir.join(format!("http{fam}.log")),
        );
        for (i, src) in sources.iter().enumerate() {
            let got = dir.join(format!("got{fam}{i}"));
            let mut argv = vec![
                "curl",
                fam,
                "-sS",
                "-g",
                "--max-time",
                "30",
                "-o",
                got.to_str().unwrap(),
            ];
            if let Some(s) = src {
                argv.extend(["--interface", s]);
            }
            let url = format!("http://{url_host}:8000/blob");
            argv.push(&url);
            run_ok(&mut ns.exec(&argv));
            assert_eq!(sha256_file(&got), want, "HTTP with source {src:?}");
        }
    }

    // UDP.
    {
        let _echo = Killed(udp_echo(ns, peer, 9999, dir));
        for (i, src) in sources.iter().enumerate() {
            let mut target = if v6 {
                format!("UDP6:[{peer}]:9999")
            } else {
                format!("UDP4:{peer}:9999")
            };
            match src {
                Some("tun0") => target.push_str(",so-bindtodevice=tun0"),
                Some(s) if v6 => target.push_str(&format!(",bind=[{s}]")),
                Some(s) => target.push_str(&format!(",bind={s}")),
                None => {}
            }
            let msg = format!("datagram {i}");
            let out = run(&mut ns.exec([
                "sh",
                "-c",
                &format!("echo '{msg}' | timeout 10 socat -t 3 -T 3 - '{target}'"),
            ]));
            assert_eq!(
                texts(&out).0.trim(),
                msg,
                "UDP with source {src:?}: {}",
                texts(&out).1
            );
        }
    }

    // Passive FTP (EPSV: the IPv6 default).
    {
        let ftproot = dir.join(format!("ftp{fam}"));
        std::fs::create_dir_all(&ftproot).unwrap();
        std::fs::write(ftproot.join("file.bin"), &data).unwrap();
        let _ftp = Server::start(
            ns,
            &[
                PYTHON,
                "-m",
                "pyftpdlib",
                "-i",
                peer,
                "-p",
                "2121",
                "-d",
                ftproot.to_str().unwrap(),
            ],
            2121,
            &dir.join(format!("ftp{fam}.log")),
        );
        for (i, src) in sources.iter().enumerate() {
            let got = dir.join(format!("ftpgot{fam}{i}"));
            let mut argv = vec![
                "curl",
                fam,
                "-sS",
                "-v",
                "-g",
                "--ftp-pasv",
                "--max-time",
                "30",
                "-o",
                got.to_str().unwrap(),
            ];
            if let Some(s) = src {
                argv.extend(["--interface", s]);
            }
            let url = format!("ftp://{url_host}:2121/file.bin");
            argv.push(&url);
            let out = run(&mut ns.exec(&argv));
            let (_, log) = texts(&out);
            assert!(out.status.success(), "FTP with source {src:?}:\n{log}");
            assert!(log.contains("> EPSV") || log.contains("> PASV"), "{log}");
            assert_eq!(sha256_file(&got), want, "FTP with source {src:?}");
        }
    }

    // iperf3, rate-limited: the point is the path, not the speed.
    {
        let _iperf = Server::start(
            ns,
            &["iperf3", "-s", "-B", peer, "-p", "5201"],
            5201,
            &dir.join(format!("iperf{fam}.log")),
        );
        for src in sources {
            let mut argv = vec![
                "iperf3", fam, "-c", peer, "-p", "5201", "-t", "1", "-b", "20M",
            ];
            match src {
                Some("tun0") => argv.extend(["--bind-dev", "tun0"]),
                Some(s) => argv.extend(["-B", s]),
                None => {}
            }
            run_ok(&mut ns.exec(["timeout", "30"].iter().chain(&argv)));
        }
    }
}

/// Runs every client over every family of the tunnel and checks, from outside, that each
/// packet took the intended path.
fn every_client_takes_the_tunnel(engine: &str, args: &[&str], families: &[(&str, &str)]) {
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], args);
    for (local, peer) in families {
        let v6 = peer.contains(':');
        let (to_peer, to_local) = (route_get(&ns, peer), route_get(&ns, local));
        assert!(
            to_peer.contains("dev tun0") && to_peer.contains(&format!("src {local}")),
            "ip route get {peer}: {to_peer}"
        );
        assert!(
            to_local.contains("dev tun1") && to_local.contains(&format!("src {peer}")),
            "ip route get {local}: {to_local}"
        );
        if v6 {
            // No link-local addresses: no router solicitations across the relay.
            assert!(
                !ns.ip(&["-6", "address"]).contains("fe80"),
                "{}",
                ns.ip(&["-6", "address"])
            );
        }
    }
    let (cap0, cap1) = (
        Capture::start(&ns, "tun0", &dir),
        Capture::start(&ns, "tun1", &dir),
    );
    let lo_before = lo_rx_packets(&ns);
    for (local, peer) in families {
        every_client(&ns, &dir, local, peer);
    }
    assert_eq!(lo_rx_packets(&ns), lo_before, "traffic went through lo");
    let (out0, out1) = (cap0.stop(), cap1.stop());
    // Requests leave through tun0 from addr0 to addr1; replies through tun1, the reverse.
    let req: Vec<(&str, &str)> = families.iter().map(|(l, p)| (*l, *p)).collect();
    let rep: Vec<(&str, &str)> = families.iter().map(|(l, p)| (*p, *l)).collect();
    all_from_to(&out0, "tun0", &req, 30);
    all_from_to(&out1, "tun1", &rep, 30);
    for (dev, lines, what) in [
        ("tun0", &out0, "echo request"),
        ("tun1", &out1, "echo reply"),
        ("tun0", &out0, ".8000: Flags [S]"),
        ("tun1", &out1, ".8000 > "),
        ("tun0", &out0, ".9999: UDP"),
        ("tun1", &out1, ".9999 > "),
        ("tun0", &out0, ".2121: Flags [S]"),
        ("tun0", &out0, ".5201: Flags [S]"),
    ] {
        assert!(
            count(lines, what) >= 3 * families.len(),
            "{what:?} on {dev}: {}",
            count(lines, what)
        );
    }
    let (status, stdout, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        relayed_packets(&stdout, "tun0", "tun1") >= out0.len() as u64 / 2,
        "{stdout}"
    );
    assert!(
        relayed_packets(&stdout, "tun1", "tun0") >= out1.len() as u64 / 2,
        "{stdout}"
    );
}

fn ipv6_only_every_client_takes_the_tunnel(engine: &str) {
    require_root!();
    every_client_takes_the_tunnel(engine, &V6, &[("fd00::1", "fd00::2")]);
}

fn dual_stack_every_client_takes_the_tunnel(engine: &str) {
    require_root!();
    every_client_takes_the_tunnel(
        engine,
        &DUAL,
        &[("fd00::1", "fd00::2"), ("10.0.0.1", "10.0.0.2")],
    );
}

fn an_idle_ipv4_tunnel_carries_no_packet_for_10_s(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    std::thread::sleep(Duration::from_secs(10));
    let links = ns.ip(&["-s", "-j", "link"]);
    let (status, stdout, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    // Not one packet since the devices were created: no router solicitation, no MLD report.
    assert_eq!(relayed_packets(&stdout, "tun0", "tun1"), 0, "{stdout}");
    assert_eq!(relayed_packets(&stdout, "tun1", "tun0"), 0, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&links).unwrap();
    let tunnel: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] == "tun0" || l["ifname"] == "tun1")
        .collect();
    assert_eq!(tunnel.len(), 2, "{links}");
    for l in tunnel {
        assert_eq!(l["stats64"]["tx"]["packets"], 0, "{l}");
        assert_eq!(l["stats64"]["rx"]["packets"], 0, "{l}");
    }
}

/// `Icmp6InEchos` and friends from /proc/net/snmp6.
fn snmp6(ns: &NetNs, field: &str) -> u64 {
    let text = run_ok(&mut ns.exec(["cat", "/proc/net/snmp6"]));
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {field} in /proc/net/snmp6"))
}

fn one_sided_rules_behave_for_ipv6_as_for_ipv4(engine: &str) {
    require_root!();
    for (rules, requests_arrive) in [("second-only", 2), ("first-only", 0)] {
        let (ns, dir) = (NetNs::new(), TestDir::new());
        let mut args = DUAL.to_vec();
        args.extend(["--rules", rules]);
        let up = Up::start(&ns, &dir, engine, &[], &args);
        let out4 = run(&mut ns.exec(["ping", "-c", "2", "-W", "1", "10.0.0.2"]));
        let out6 = run(&mut ns.exec(["ping", "-6", "-c", "2", "-W", "1", "fd00::2"]));
        assert!(
            !out4.status.success() && !out6.status.success(),
            "{rules}: pings should fail"
        );
        let v4 = (
            snmp(&ns, "Icmp", "InEchos"),
            snmp(&ns, "Icmp", "InEchoReps"),
        );
        let v6 = (snmp6(&ns, "Icmp6InEchos"), snmp6(&ns, "Icmp6InEchoReplies"));
        let (status, stdout, _) = up.stop(Signal::SIGTERM);
        assert!(status.success());
        assert_eq!(
            v4,
            (requests_arrive, 0),
            "{rules}: IPv4 requests/replies arrived"
        );
        assert_eq!(v6, v4, "{rules}: IPv6 must behave as IPv4");
        assert!(relayed_packets(&stdout, "tun0", "tun1") >= 4, "{stdout}");
    }
}

fn fragments_and_extension_headers_are_named_with_vv(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-vv"], &V6);
    // 3000 bytes over a 1500-byte MTU: the kernel fragments the request.
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "-s", "3000", "fd00::2"]));
    let (_, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(
        stderr.lines().any(|l| l
            .contains("tun0 -> tun1 ICMPv6 fd00::1 > fd00::2 echo-request (fragment id")
            && l.contains("offset 0 more")),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l
            .contains("tun0 -> tun1 ICMPv6 fragment fd00::1 > fd00::2 (fragment id")
            && l.contains(" last)")),
        "{stderr}"
    );
    assert!(!stderr.contains("proto 44"), "{stderr}");
}

#[test]
fn status_checks_each_peer_path_and_up_warns_when_it_breaks() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let json = run_ok(&mut up.hostkit("status", &["--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["paths_ok"], true, "{json}");
    assert_eq!(v["paths"].as_array().unwrap().len(), 4, "{json}");
    let text = run_ok(&mut up.hostkit("status", &[]));
    assert!(
        text.contains("IPv6 fd00::2: dev tun0 src fd00::1: ok"),
        "{text}"
    );
    assert!(
        text.contains("IPv6 fd00::1: dev tun1 src fd00::2: ok"),
        "{text}"
    );
    // A user's own policy, which is not the tunnel's to repair (a device down and up is: see
    // tun_watch): fd00::2 sent nowhere, 10.0.0.1 delivered through lo.
    ns.ip(&[
        "-6",
        "route",
        "add",
        "unreachable",
        "fd00::2",
        "table",
        "100",
    ]);
    ns.ip(&[
        "-6", "rule", "add", "pref", "10", "to", "fd00::2", "lookup", "100",
    ]);
    ns.ip(&[
        "route", "add", "local", "10.0.0.1", "dev", "lo", "table", "100",
    ]);
    ns.ip(&[
        "rule", "add", "pref", "10", "to", "10.0.0.1", "lookup", "100",
    ]);
    let start = Instant::now();
    while !up
        .stderr()
        .contains("warning: traffic no longer takes the tunnel")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no warning:\n{}",
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&mut up.hostkit("status", &[]));
    let (text, err) = texts(&out);
    assert!(
        text.contains("IPv6 fd00::2: dev none src none, but the tunnel needs dev tun0 src fd00::1"),
        "{text}"
    );
    assert!(text.contains("IPv4 10.0.0.1: dev lo"), "{text}");
    assert!(err.contains("does not take the tunnel"), "{err}");
    let json = run_ok(&mut up.hostkit("status", &["--format", "json"]));
    assert!(json.contains("\"paths_ok\": false"), "{json}");
    // Stopped (exit 0, checked by `stop`), the tunnel is gone and the user's own policy stays:
    // removing it gives back the namespace as it was.
    up.stop(Signal::SIGTERM);
    ns.ip(&["-6", "rule", "del", "pref", "10"]);
    ns.ip(&["rule", "del", "pref", "10"]);
    ns.ip(&[
        "-6",
        "route",
        "del",
        "unreachable",
        "fd00::2",
        "table",
        "100",
    ]);
    ns.ip(&[
        "route", "del", "local", "10.0.0.1", "dev", "lo", "table", "100",
    ]);
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn persistent_devices_with_their_own_ipv6_address_get_it_back_exactly() {
    // tun0 already holds fd00::1/64: its local route must come back as the kernel's own
    // (metric 0, removed with the address), not as a hand-made metric-1024 ghost.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun"]);
    ns.ip(&["link", "set", "tun0", "up"]);
    // Used before by some program: the kernel configured IPv6 on it when it had a carrier.
    drop(plain_relay(&ns));
    ns.ip(&["-6", "address", "add", "fd00::1/64", "dev", "tun0", "nodad"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "simple", &[], &V6);
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    let (status, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("done: re-add address fd00::1/64 on tun0"),
        "{stderr}"
    );
    // (`ip route` without -6 shows an IPv6 route's `linkdown` flag from a cached nexthop flag
    // that the carrier change of our attach/detach leaves behind; `ip -6 route` shows it right.)
    let same = |s: String| s.replace(" linkdown", "");
    assert_eq!(same(snapshot(&ns)), same(before), "teardown:\n{stderr}");
    // And the address takes its route with it: no ghost.
    ns.ip(&["-6", "address", "del", "fd00::1/64", "dev", "tun0"]);
    let routes = ns.ip(&["-6", "route", "show", "table", "all"]);
    assert!(!routes.contains("fd00::1"), "{routes}");
}

/// A plain relay between two existing TUN devices (no offloads, one packet per read).
const PLAIN_RELAY: &str = r#"
import fcntl, os, select, struct, sys
def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))
    return fd
a, b = tun(sys.argv[1]), tun(sys.argv[2])
other = {a: b, b: a}
print("ready", flush=True)
while True:
    for fd in select.select([a, b], [], [])[0]:
        try:
            os.write(other[fd], os.read(fd, 65536))
        except OSError:
            pass
"#;

/// Starts [`PLAIN_RELAY`] on the existing tun0 and tun1; stops it on drop.
fn plain_relay(ns: &NetNs) -> Killed {
    let mut relay = Killed(
        ns.exec([PYTHON, "-c", PLAIN_RELAY, "tun0", "tun1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(relay.0.stdout.as_mut().unwrap(), &mut ready).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    relay
}

#[test]
fn the_dry_run_replayed_with_a_plain_relay_gives_the_same_tables() {
    require_root!();
    let dir = TestDir::new();
    // hostkit's own configuration.
    let ns_a = NetNs::new();
    let up = Up::start(&ns_a, &dir, "simple", &[], &DUAL);
    let with_hostkit = snapshot(&ns_a);
    assert!(up.stop(Signal::SIGTERM).0.success());

    // The dry run, replayed line by line in a fresh namespace.
    let ns_b = NetNs::new();
    let before = snapshot(&ns_b);
    let out = run_ok(
        hostkit()
            .args([
                "tun",
                "up",
                "--dry-run",
                "--engine",
                "simple",
                "--netns",
                ns_b.name(),
            ])
            .args(DUAL)
            .env("HOSTKIT_RUN_DIR", dir.join("run-b")),
    );
    assert_eq!(snapshot(&ns_b), before, "the dry run changed something");
    let lines: Vec<&str> = out.lines().collect();
    let n = ns_b.name();
    for must in [
        format!("ip -n {n} link set dev tun0 addrgenmode none"),
        format!("ip -6 -n {n} address add fd00::1/128 dev tun0 nodad noprefixroute"),
        format!("ip -6 -n {n} route add fd00::2/128 dev tun0 src fd00::1 proto static metric 1024"),
        format!("ip -6 -n {n} route add local fd00::1 dev tun0 table 13 proto kernel metric 1024"),
        format!("ip -6 -n {n} rule add iif tun1 lookup 13"),
        format!(
            "# hostkit's tun1 is not persistent (it vanishes with the relay); after a replay remove it with: ip -n {n} tuntap del dev tun1 mode tun"
        ),
    ] {
        assert!(
            lines.contains(&must.as_str()),
            "missing {must:?} in:\n{out}"
        );
    }
    assert!(!out.contains("ipv6.ip_nonlocal_bind"), "{out}");
    // Devices first, then a relay on them, then the rest in order.
    let (create, rest): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .filter(|l| !l.starts_with('#'))
        .partition(|l| l.contains(" tuntap add "));
    // Every line is run by root in the host's shell: each must name the test's namespace.
    for cmd in create.iter().chain(&rest) {
        assert!(
            [
                format!("ip -n {n} "),
                format!("ip -6 -n {n} "),
                format!("ip netns exec {n} "),
            ]
            .iter()
            .any(|p| cmd.starts_with(p.as_str())),
            "a dry-run line that does not name the namespace: {cmd}"
        );
    }
    for cmd in create {
        run_ok(Command::new("sh").args(["-c", cmd]));
    }
    let _relay = plain_relay(&ns_b);
    for cmd in rest {
        run_ok(Command::new("sh").args(["-c", cmd]));
    }
    run_ok(&mut ns_b.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    run_ok(&mut ns_b.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let replayed = snapshot(&ns_b);
    // The same tables (the relay's devices are persistent here, hostkit's are not: the link
    // lines and the operational state are not part of the comparison).
    let tables = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("link "))
            .map(|l| {
                let l = l.replace(" UNKNOWN ", " STATE ").replace(" UP ", " STATE ");
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(tables(&replayed), tables(&with_hostkit));
}
