//! `hostkit tun`: end-to-end tests against the real kernel. Every test that configures or sends
//! anything does it inside its own network namespace (`ip netns add`, deleted on drop), and
//! observes with the real `ip`, `ping`, `curl`, `tcpdump`, `socat` and FTP/HTTP servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::util::{NetNs, TestDir, hostkit, run, run_ok, texts};

with_both_engines!(
    ping_crosses_the_relay_and_not_lo,
    decoded_packet_log_with_vv,
    without_the_routing_rewrite_traffic_bypasses_the_relay,
    with_one_sided_rules_the_request_crosses_and_the_reply_is_lost,
    http_transfer_of_8_mib_crosses_the_relay_intact,
    ipv6_http_transfer_crosses_the_relay_intact,
    plain_tcp_stream_crosses_the_relay_intact,
    passive_ftp_download_crosses_the_relay,
    sigterm_restores_rules_routes_and_sysctls_exactly,
    after_sigkill_tun_down_restores_everything_and_is_idempotent,
    tun_down_stops_a_running_relay,
    a_second_up_with_the_same_names_is_refused,
    attaches_to_existing_persistent_tun_devices_and_leaves_them
);

/// How long `up` may take to report that its relay runs.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A `hostkit tun up` running in the background, its output going to files.
pub(crate) struct Up {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    ns: String,
    run_dir: PathBuf,
}

impl Up {
    /// Starts `hostkit [flags] tun up --netns NS --engine ENGINE ARGS…` and waits until the
    /// relay runs.
    pub(crate) fn start(
        ns: &NetNs,
        dir: &TestDir,
        engine: &str,
        flags: &[&str],
        args: &[&str],
    ) -> Up {
        Up::start_with_run_dir(ns, dir, &dir.join("run"), engine, flags, args)
    }

    /// As [`Up::start`], with another run directory (to share one between tunnels).
    pub(crate) fn start_with_run_dir(
        ns: &NetNs,
        dir: &TestDir,
        run_dir: &Path,
        engine: &str,
        flags: &[&str],
        args: &[&str],
    ) -> Up {
        let run_dir = run_dir.to_path_buf();
        let out = dir.join("up.stdout");
        let err = dir.join("up.stderr");
        let child = hostkit()
            .args(flags)
            .args(["tun", "up", "--netns", ns.name(), "--engine", engine])
            .args(args)
            .env("HOSTKIT_RUN_DIR", &run_dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn hostkit tun up");
        let mut up = Up {
            child: Some(child),
            out,
            err,
            ns: ns.name().to_string(),
            run_dir,
        };
        let start = Instant::now();
        loop {
            if up.stderr().contains("relay running") {
                return up;
            }
            if let Ok(Some(status)) = up.child.as_mut().unwrap().try_wait() {
                panic!("hostkit tun up exited early ({status}):\n{}", up.stderr());
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "relay not running after {READY_TIMEOUT:?}:\n{}",
                up.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends `sig` and waits (bounded) for the process to exit. A stop by SIGINT, SIGTERM or
    /// SIGHUP must end in exit 0 (a full teardown): checked here, for every test.
    pub(crate) fn stop(self, sig: nix::sys::signal::Signal) -> (ExitStatus, String, String) {
        use nix::sys::signal::Signal;
        let clean = matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP);
        let (status, stdout, stderr) = self.stop_any(sig);
        if clean {
            assert!(
                status.success(),
                "hostkit tun up stopped by {sig} exited with {status}:\n{stderr}"
            );
        }
        (status, stdout, stderr)
    }

    /// Sends `sig` and waits (bounded) for the process to exit, whatever its status.
    pub(crate) fn stop_any(self, sig: nix::sys::signal::Signal) -> (ExitStatus, String, String) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit on its own; returns its status and output.
    pub(crate) fn wait_exit(mut self) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("hostkit tun up did not exit:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stdout(), self.stderr())
    }

    /// `hostkit tun <sub> --netns NS ARGS…` with the same run directory.
    pub(crate) fn hostkit(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = hostkit();
        cmd.args(["tun", sub, "--netns", &self.ns])
            .args(args)
            .env("HOSTKIT_RUN_DIR", &self.run_dir);
        cmd
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything `up` may touch in a namespace: rules, every routing table, the links, the
/// non-local-bind sysctls.
pub(crate) fn snapshot(ns: &NetNs) -> String {
    let mut s = String::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["-br", "address"],
    ] {
        s.push_str(&format!("$ ip {}\n{}", args.join(" "), ns.ip(args)));
    }
    // Links: name, flags, state, MTU and transmit queue length. (Not the qdisc or the IPv6
    // address-generation mode: the kernel sets those on a device's first `up` and keeps them.)
    let links: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link"])).unwrap();
    for l in links.as_array().unwrap() {
        s.push_str(&format!(
            "link {} {} {} mtu {} qlen {}\n",
            l["ifname"], l["flags"], l["operstate"], l["mtu"], l["txqlen"]
        ));
    }
    for key in ["net.ipv4.ip_nonlocal_bind", "net.ipv6.ip_nonlocal_bind"] {
        s.push_str(&run_ok(&mut ns.exec(["sysctl", key])));
    }
    s
}

/// Packets received by `lo` in the namespace.
pub(crate) fn lo_rx_packets(ns: &NetNs) -> u64 {
    let json = ns.ip(&["-s", "-j", "link", "show", "lo"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// A counter from /proc/net/snmp (e.g. `Icmp`, `InEchos`) inside the namespace.
pub(crate) fn snmp(ns: &NetNs, group: &str, field: &str) -> u64 {
    let text = run_ok(&mut ns.exec(["cat", "/proc/net/snmp"]));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{group}:")))
        .collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == field).unwrap();
    values[i].parse().unwrap()
}

/// The relay's final counter line for a direction, e.g. `tun0 -> tun1: 3 packets, …`.
pub(crate) fn relayed_packets(stdout: &str, from: &str, to: &str) -> u64 {
    let prefix = format!("{from} -> {to}: ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no counters for {from} -> {to} in:\n{stdout}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

pub(crate) fn relayed_bytes(stdout: &str, from: &str, to: &str) -> u64 {
    let prefix = format!("{from} -> {to}: ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap();
    line.split(", ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so transfers are not trivially compressible.
pub(crate) fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&data))
}

/// A server process in the namespace, killed on drop.
pub(crate) struct Server(Child);

impl Server {
    /// Starts `argv` in the namespace and waits until something listens on TCP `port`.
    pub(crate) fn start(ns: &NetNs, argv: &[&str], port: u16, log: &Path) -> Server {
        let child = ns
            .exec(argv)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        let server = Server(child);
        let start = Instant::now();
        loop {
            let listening = run_ok(&mut ns.exec(["ss", "-Hltn", &format!("sport = :{port}")]));
            if !listening.trim().is_empty() {
                return server;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{argv:?} is not listening on {port}: {}",
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) const PYTHON: &str = "/usr/bin/python3";

fn ping_crosses_the_relay_and_not_lo(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-v"], &[]);
    // Capture on tun0 with the real tcpdump while pinging.
    let pcap_log = dir.join("tcpdump.txt");
    let mut tcpdump = ns
        .exec([
            "timeout", "20", "tcpdump", "-l", "-n", "-i", "tun0", "-c", "2", "icmp",
        ])
        .stdout(std::fs::File::create(&pcap_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let lo_before = lo_rx_packets(&ns);
    run_ok(&mut ns.exec(["ping", "-c", "3", "-W", "2", "10.0.0.2"]));
    let lo_after = lo_rx_packets(&ns);
    assert!(
        tcpdump.wait().unwrap().success(),
        "tcpdump saw nothing on tun0"
    );
    let captured = std::fs::read_to_string(&pcap_log).unwrap();
    assert!(
        captured.contains("10.0.0.1 > 10.0.0.2: ICMP echo request")
            && captured.contains("10.0.0.2 > 10.0.0.1: ICMP echo reply"),
        "tcpdump on tun0:\n{captured}"
    );
    assert_eq!(lo_after, lo_before, "ping traffic went through lo");

    let (status, stdout, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}\n{stderr}");
    assert!(relayed_packets(&stdout, "tun0", "tun1") >= 3, "{stdout}");
    assert!(relayed_packets(&stdout, "tun1", "tun0") >= 3, "{stdout}");
    let classic = stderr
        .lines()
        .filter(|l| l.starts_with("read 84 from fd "))
        .count();
    assert!(
        classic >= 6,
        "expected >= 6 `read 84 from fd N` lines:\n{stderr}"
    );
}

fn decoded_packet_log_with_vv(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-vv"], &[]);
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let (_, _, stderr) = up.stop(nix::sys::signal::Signal::SIGINT);
    assert!(
        stderr.lines().any(|l| l.starts_with("read 84 from fd ")
            && l.ends_with("tun0 -> tun1 ICMP 10.0.0.1 > 10.0.0.2 echo-request, length 84")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.ends_with("tun1 -> tun0 ICMP 10.0.0.2 > 10.0.0.1 echo-reply, length 84")),
        "{stderr}"
    );
}

fn without_the_routing_rewrite_traffic_bypasses_the_relay(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-v"], &["--no-routing"]);
    let lo_before = lo_rx_packets(&ns);
    run_ok(&mut ns.exec(["ping", "-c", "3", "-W", "2", "10.0.0.2"]));
    let lo_after = lo_rx_packets(&ns);
    let (status, stdout, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    assert!(
        lo_after >= lo_before + 6,
        "ping should use lo: {lo_before} -> {lo_after}"
    );
    assert!(
        !stderr.contains("read 84 from fd"),
        "relay saw the ping:\n{stderr}"
    );
    assert!(relayed_bytes(&stdout, "tun0", "tun1") < 84 * 3, "{stdout}");
}

fn with_one_sided_rules_the_request_crosses_and_the_reply_is_lost(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-v"], &["--rules", "second-only"]);
    let echos_before = snmp(&ns, "Icmp", "InEchos");
    let out = run(&mut ns.exec(["ping", "-c", "2", "-W", "1", "10.0.0.2"]));
    assert!(
        !out.status.success(),
        "ping should fail with one-sided rules"
    );
    let echos = snmp(&ns, "Icmp", "InEchos") - echos_before;
    let replies = snmp(&ns, "Icmp", "InEchoReps");
    let (_, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(echos, 2, "both requests should arrive at 10.0.0.2");
    assert_eq!(replies, 0, "no reply should arrive at 10.0.0.1");
    assert!(relayed_packets(&stdout, "tun0", "tun1") >= 2, "{stdout}");
    assert!(
        relayed_packets(&stdout, "tun1", "tun0") >= 2,
        "replies cross the relay too:\n{stdout}"
    );
}

pub(crate) fn http_transfer(ns: &NetNs, dir: &TestDir, bind: &str, url_host: &str) {
    let data = blob(8 << 20, 0x5eed);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("blob"), &data).unwrap();
    let _server = Server::start(
        ns,
        &[
            PYTHON,
            "-m",
            "http.server",
            "--bind",
            bind,
            "--directory",
            www.to_str().unwrap(),
            "8000",
        ],
        8000,
        &dir.join("http.log"),
    );
    let got = dir.join("got");
    run_ok(&mut ns.exec([
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "60",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{url_host}:8000/blob"),
    ]));
    assert_eq!(sha256_file(&got), format!("{:x}", Sha256::digest(&data)));
}

/// Sets up a tunnel with `up_args`, pings `ping_args`, transfers 8 MiB over HTTP from a server
/// bound to `bind`, and checks that lo saw none of it and the relay all of it.
fn http_through_the_relay(
    engine: &str,
    up_args: &[&str],
    ping_args: &[&str],
    bind: &str,
    url_host: &str,
) {
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], up_args);
    let lo_before = lo_rx_packets(&ns);
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2"].iter().chain(ping_args)));
    http_transfer(&ns, &dir, bind, url_host);
    assert_eq!(lo_rx_packets(&ns), lo_before, "traffic went through lo");
    let (status, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    assert!(relayed_bytes(&stdout, "tun1", "tun0") > 8 << 20, "{stdout}");
}

fn http_transfer_of_8_mib_crosses_the_relay_intact(engine: &str) {
    require_root!();
    http_through_the_relay(engine, &[], &["10.0.0.2"], "10.0.0.2", "10.0.0.2");
}

fn ipv6_http_transfer_crosses_the_relay_intact(engine: &str) {
    require_root!();
    let dual = [
        "--addr0", "fd00::1", "--addr1", "fd00::2", "--addr0", "10.0.0.1", "--addr1", "10.0.0.2",
    ];
    http_through_the_relay(engine, &dual, &["-6", "fd00::2"], "fd00::2", "[fd00::2]");
}

fn plain_tcp_stream_crosses_the_relay_intact(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    socat_stream_arrives_intact(&ns, &dir, &blob(6 << 20, 42));
    let (_, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(relayed_bytes(&stdout, "tun0", "tun1") > 6 << 20, "{stdout}");
}

/// Sends `data` over one TCP stream 10.0.0.1 -> 10.0.0.2:9000 in `ns` (socat at both ends)
/// and waits (bounded) until the receiving end has written all of it, intact.
pub(crate) fn socat_stream_arrives_intact(ns: &NetNs, dir: &TestDir, data: &[u8]) {
    let src = dir.write("src.bin", data);
    let dst = dir.join("dst.bin");
    let _server = Server::start(
        ns,
        &[
            "socat",
            "-u",
            "TCP-LISTEN:9000,bind=10.0.0.2,reuseaddr",
            &format!("CREATE:{}", dst.display()),
        ],
        9000,
        &dir.join("socat.log"),
    );
    run_ok(&mut ns.exec([
        "timeout",
        "60",
        "socat",
        "-u",
        &format!("OPEN:{}", src.display()),
        "TCP:10.0.0.2:9000,bind=10.0.0.1",
    ]));
    // The server writes and exits once the stream ends.
    let want = format!("{:x}", Sha256::digest(data));
    let start = Instant::now();
    while std::fs::read(&dst)
        .ok()
        .map(|d| format!("{:x}", Sha256::digest(&d)))
        != Some(want.clone())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stream arrived damaged or incomplete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn passive_ftp_download_crosses_the_relay(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    let data = blob(3 << 20, 7);
    let ftproot = dir.join("ftp");
    std::fs::create_dir_all(&ftproot).unwrap();
    std::fs::write(ftproot.join("file.bin"), &data).unwrap();
    // pyftpdlib binds the passive data socket to the control connection's address (10.0.0.2),
    // which needs the non-local bind `up` turned on.
    let _server = Server::start(
        &ns,
        &[
            PYTHON,
            "-m",
            "pyftpdlib",
            "-i",
            "10.0.0.2",
            "-p",
            "2121",
            "-d",
            ftproot.to_str().unwrap(),
        ],
        2121,
        &dir.join("ftp.log"),
    );
    let got = dir.join("got.bin");
    let out = run(&mut ns.exec([
        "curl",
        "-sS",
        "-v",
        "--ftp-pasv",
        "--disable-epsv",
        "--max-time",
        "60",
        "-o",
        got.to_str().unwrap(),
        "ftp://10.0.0.2:2121/file.bin",
    ]));
    let (_, curl_log) = texts(&out);
    assert!(out.status.success(), "curl failed:\n{curl_log}");
    assert_eq!(sha256_file(&got), format!("{:x}", Sha256::digest(&data)));
    // The client really used passive mode, and the server opened its data socket on the moved
    // address (which needs the non-local bind).
    assert!(curl_log.contains("> PASV"), "{curl_log}");
    assert!(
        curl_log.contains("227 Entering passive mode (10,0,0,2,"),
        "{curl_log}"
    );
    let (_, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(relayed_bytes(&stdout, "tun1", "tun0") > 3 << 20, "{stdout}");
}

fn sigterm_restores_rules_routes_and_sysctls_exactly(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(
        &ns,
        &dir,
        engine,
        &[],
        &[
            "--addr0", "10.9.0.1", "--addr1", "10.9.0.2", "--addr0", "fd09::1", "--addr1",
            "fd09::2", "--table", "77", "--mtu", "1400",
        ],
    );
    let during = snapshot(&ns);
    assert!(during.contains("iif tun0 lookup 77"), "{during}");
    assert!(
        during.contains("local 10.9.0.1 dev tun0 table 77"),
        "{during}"
    );
    assert!(during.contains("net.ipv4.ip_nonlocal_bind = 1"), "{during}");
    // IPv6 bind() checks the interfaces' addresses: the IPv6 switch stays off.
    assert!(during.contains("net.ipv6.ip_nonlocal_bind = 0"), "{during}");
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.9.0.2"]));
    let (status, _, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert_eq!(snapshot(&ns), before, "teardown log:\n{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.join("run")).unwrap().count(),
        0,
        "state left behind"
    );
}

fn after_sigkill_tun_down_restores_everything_and_is_idempotent(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(
        &ns,
        &dir,
        engine,
        &[],
        &[
            "--addr0", "fd00::1", "--addr1", "fd00::2", "--addr0", "10.0.0.1", "--addr1",
            "10.0.0.2",
        ],
    );
    let status_json = run_ok(&mut up.hostkit("status", &["--format", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    assert_eq!(status["relay"]["running"], true, "{status_json}");
    assert_eq!(status["local_routes_moved"], true, "{status_json}");
    assert_eq!(
        status["rules"].as_array().unwrap().len(),
        4,
        "{status_json}"
    );

    let mut down = up.hostkit("down", &[]);
    let (_, _, _) = up.stop(nix::sys::signal::Signal::SIGKILL);
    let after_kill = snapshot(&ns);
    assert_ne!(after_kill, before, "SIGKILL should leave rules behind");
    assert!(after_kill.contains("iif tun0"), "{after_kill}");
    let text = run_ok(&mut hostkit_status(&ns, &dir));
    assert!(text.contains("NOT running"), "{text}");

    let out = run_ok(&mut down);
    assert!(
        out.contains("done: remove IPv4 rule iif tun0 lookup 13"),
        "{out}"
    );
    assert!(
        out.contains("done: remove IPv6 rule iif tun1 lookup 13"),
        "{out}"
    );
    assert!(
        out.contains("done: restore net.ipv4.ip_nonlocal_bind=0"),
        "{out}"
    );
    assert_eq!(snapshot(&ns), before);

    let again = run_ok(
        hostkit()
            .args(["tun", "down", "--netns", ns.name()])
            .env("HOSTKIT_RUN_DIR", dir.join("run")),
    );
    assert!(again.contains("nothing to remove"), "{again}");
    assert_eq!(snapshot(&ns), before);
}

fn hostkit_status(ns: &NetNs, dir: &TestDir) -> Command {
    let mut cmd = hostkit();
    cmd.args(["tun", "status", "--netns", ns.name()])
        .env("HOSTKIT_RUN_DIR", dir.join("run"));
    cmd
}

fn tun_down_stops_a_running_relay(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    let out = run_ok(&mut up.hostkit("down", &[]));
    assert!(out.contains("stopped the relay"), "{out}");
    assert_eq!(snapshot(&ns), before);
}

fn a_second_up_with_the_same_names_is_refused(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    let during = snapshot(&ns);
    let out = run(&mut up.hostkit("up", &[]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("already running"), "{stderr}");
    assert_eq!(snapshot(&ns), during, "the refused up changed something");
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let (status, _, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
}

fn attaches_to_existing_persistent_tun_devices_and_leaves_them(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, engine, &[], &[]);
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2", "10.0.0.2"]));
    let (status, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    assert!(relayed_packets(&stdout, "tun0", "tun1") >= 2);
    assert_eq!(
        snapshot(&ns),
        before,
        "the persistent devices should be back as they were"
    );
}

#[test]
fn dry_run_prints_the_ip_commands_and_changes_nothing() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let out = run_ok(
        hostkit()
            .args(["tun", "up", "--dry-run", "--netns", ns.name()])
            .env("HOSTKIT_RUN_DIR", dir.join("run")),
    );
    let n = ns.name();
    let expected: Vec<String> = [
        "ip -n NS tuntap add dev tun0 mode tun",
        "ip -n NS link set dev tun0 txqueuelen 5000",
        "ip -n NS link set dev tun0 addrgenmode none",
        "ip -n NS address add 10.0.0.1 peer 10.0.0.2 dev tun0",
        "ip -n NS link set dev tun0 up",
        "ip -n NS tuntap add dev tun1 mode tun",
        "ip -n NS link set dev tun1 txqueuelen 5000",
        "ip -n NS link set dev tun1 addrgenmode none",
        "ip -n NS address add 10.0.0.2 peer 10.0.0.1 dev tun1",
        "ip -n NS link set dev tun1 up",
        "ip -n NS route del local 10.0.0.1 dev tun0 table local",
        "ip -n NS route add local 10.0.0.1 dev tun0 table 13 proto kernel scope host src 10.0.0.1",
        "ip -n NS route del local 10.0.0.2 dev tun1 table local",
        "ip -n NS route add local 10.0.0.2 dev tun1 table 13 proto kernel scope host src 10.0.0.2",
        "ip -n NS rule add iif tun0 lookup 13",
        "ip -n NS rule add iif tun1 lookup 13",
        "ip netns exec NS sysctl -w net.ipv4.ip_nonlocal_bind=1",
        "# hostkit's tun0 is not persistent (it vanishes with the relay); after a replay remove it with: ip -n NS tuntap del dev tun0 mode tun",
        "# hostkit's tun1 is not persistent (it vanishes with the relay); after a replay remove it with: ip -n NS tuntap del dev tun1 mode tun",
    ]
    .iter()
    .map(|l| l.replace("NS", n))
    .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    assert_eq!(snapshot(&ns), before);
    assert!(
        !dir.join("run").exists(),
        "dry run created the run directory"
    );
}

/// Runs `hostkit tun up ARGS` expecting a usage/runtime error; returns stderr.
fn up_fails(args: &[&str]) -> String {
    let out = run(hostkit().args(["tun", "up"]).args(args));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_settings_are_refused_with_the_offending_value() {
    // Validation happens before anything is touched, so this needs no privileges.
    let cases: &[(&[&str], &str)] = &[
        (
            &["--addr0", "10.0.0.300", "--addr1", "10.0.0.2"],
            "10.0.0.300",
        ),
        (
            &["--addr0", "10.0.0.2", "--addr1", "10.0.0.2"],
            "duplicate address 10.0.0.2",
        ),
        (&["--addr0", "10.0.0.1", "--addr1", "fd00::2"], "10.0.0.1"),
        (&["--dev0", "a-name-far-too-long"], "a-name-far-too-long"),
        (&["--dev0", "tun1"], "\"tun1\""),
        (&["--table", "0"], "table 0 is reserved"),
        (&["--table", "253"], "table 253 is reserved"),
        (&["--table", "254"], "table 254 is reserved"),
        (&["--table", "255"], "table 255 is reserved"),
        (&["--table", "-3"], "-3"),
        (&["--mtu", "40"], "MTU 40"),
        (&["--addr0", "10.0.0.1"], "--addr0 and --addr1"),
        (
            &["--addr0", "fe80::1", "--addr1", "fe80::2"],
            "fe80::1 cannot be a tunnel end: it is link-local",
        ),
    ];
    for (args, needle) in cases {
        let stderr = up_fails(args);
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
}

#[test]
fn a_device_that_is_not_tun_is_refused_and_nothing_is_left() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&[
        "link", "add", "tun1", "type", "veth", "peer", "name", "tun1p",
    ]);
    let before = snapshot(&ns);
    let stderr = up_fails(&[
        "--netns",
        ns.name(),
        "--run-dir",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("\"tun1\" exists but is not a TUN device"),
        "{stderr}"
    );
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn without_cap_net_admin_up_says_so() {
    require_root!();
    // Run a copy of the binary from a directory anyone can enter: the build directory may be
    // private to root.
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("hostkit");
    std::fs::copy(crate::util::hostkit_bin(), &bin).unwrap();
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["tun", "up"]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
}

#[test]
fn a_missing_dev_net_tun_is_reported_and_nothing_is_left() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    // Hide /dev/net/tun in a private mount namespace.
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /dev/net && exec {} tun up --netns {} --run-dir {}",
        crate::util::hostkit_bin().display(),
        ns.name(),
        dir.join("run").display()
    );
    let out = run(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/net/tun does not exist"), "{stderr}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn demo_runs_in_a_private_namespace_and_leaves_the_host_untouched() {
    require_root!();
    let host_rules = run_ok(Command::new("ip").arg("rule"));
    let host_links = run_ok(Command::new("ip").args(["-br", "link"]));
    let out = run(hostkit().args(["tun", "demo"]));
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("crossed the relay, not lo"), "{stdout}");
    assert!(stdout.contains("sha256 match"), "{stdout}");
    assert!(stdout.contains("read 84 from fd"), "{stdout}");
    assert_eq!(run_ok(Command::new("ip").arg("rule")), host_rules);
    assert_eq!(run_ok(Command::new("ip").args(["-br", "link"])), host_links);
}

#[test]
fn fast_engine_passes_super_packets_through_unchanged() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    assert!(
        up.stderr().contains("offloads csum,tso4,tso6"),
        "{}",
        up.stderr()
    );
    http_transfer(&ns, &dir, "10.0.0.2", "10.0.0.2");
    let (status, stdout, _) = up.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    // 8 MiB in 1448-byte segments would be ~5800 packets; GSO super-packets are far fewer.
    let packets = relayed_packets(&stdout, "tun1", "tun0");
    assert!(relayed_bytes(&stdout, "tun1", "tun0") > 8 << 20, "{stdout}");
    assert!(
        packets < 3000,
        "expected super-packets, got {packets} packets:\n{stdout}"
    );
}

#[test]
fn with_the_packet_log_the_fast_engine_shows_wire_sized_packets() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &["-v"], &[]);
    assert!(up.stderr().contains("offloads none"), "{}", up.stderr());
    http_transfer(&ns, &dir, "10.0.0.2", "10.0.0.2");
    let (_, _, stderr) = up.stop(nix::sys::signal::Signal::SIGTERM);
    let sizes: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("read "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(
        sizes.len() > 5000,
        "expected one line per wire packet, got {}",
        sizes.len()
    );
    assert!(
        sizes.iter().all(|&n| n <= 1500),
        "a packet above the MTU was logged"
    );
}

#[test]
fn a_simple_relay_after_a_fast_one_on_persistent_devices_still_works() {
    // Offload state is per device and sticky; the simple engine must reset it to zero or TCP
    // stalls.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun", "multi_queue"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun", "multi_queue"]);
    let fast = Up::start(&ns, &dir, "fast", &[], &["--queues", "2"]);
    http_transfer(&ns, &dir, "10.0.0.2", "10.0.0.2");
    assert!(fast.stop(nix::sys::signal::Signal::SIGTERM).0.success());
    let dir2 = TestDir::new();
    let simple = Up::start(&ns, &dir2, "simple", &[], &[]);
    assert!(
        simple.stderr().contains("offloads none"),
        "{}",
        simple.stderr()
    );
    http_transfer(&ns, &dir2, "10.0.0.2", "10.0.0.2");
    let (status, stdout, _) = simple.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success());
    assert!(relayed_bytes(&stdout, "tun1", "tun0") > 8 << 20, "{stdout}");
}

#[test]
fn the_benchmark_script_runs_and_reports_every_figure() {
    // Not a timed test: it only checks that `benches/tun-bench.py` still runs end to end and
    // reports every figure for the five paths — veth, the two engines and the two C relays
    // (offload, and io_uring-batched) it builds with gcc (speed is judged from its output, by
    // people).
    require_root!();
    let dir = TestDir::new();
    let json = dir.join("bench.json");
    let out = run_ok(
        Command::new(PYTHON)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/tun-bench.py"))
            .args([
                "--only",
                "engines",
                "--runs",
                "1",
                "--seconds",
                "1",
                "--hostkit",
            ])
            .arg(crate::util::hostkit_bin())
            .arg("--json")
            .arg(&json),
    );
    for row in [
        "ping RTT avg (ms)",
        "TCP 1 stream (Gbit/s)",
        "relay CPU at TCP 1 stream (s/GB)",
        "TCP 4 streams retransmits",
        "UDP 64 B at max: crossed to the far UDP layer (kpps)",
        "relay CPU per packet at UDP 64 B at max (µs)",
        "relay peak RSS (MB)",
    ] {
        assert!(out.contains(&format!("| {row} |")), "missing {row}:\n{out}");
    }
    assert!(
        out.contains("| C offload relay | C io_uring relay | hostkit fast |")
            && out.contains("| fast/offload |")
            && out.contains("| uring/offload |"),
        "no C offload or io_uring relay column:\n{out}"
    );
    assert!(
        out.contains("engines: TCP 1 stream (Gbit/s), fast / C offload relay"),
        "no target line for the C offload relay:\n{out}"
    );
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The figures of each group of rows are under `groups.NAME`.
    let v = &all["groups"]["engines"];
    for path in ["veth", "simple", "offload", "uring", "fast"] {
        let gbit = v["summary"][path]["tcp1_gbit_s"]["median"]
            .as_f64()
            .unwrap();
        assert!(gbit > 0.0, "{path}: no TCP throughput measured");
    }
    for path in ["fast", "offload", "uring"] {
        for key in ["tcp1_relay_cpu_s_per_gb", "udp64_max_relay_cpu_us_per_pkt"] {
            assert!(
                v["summary"][path][key]["median"].as_f64().is_some(),
                "{path}: no relay CPU measured ({key})"
            );
        }
    }
    // The traffic crossed both C relays (their own counters, read when they stopped).
    for relay in ["offload", "uring"] {
        let crossed = v[format!("{relay}_relay_counters")]["tun0->tun1"]["packets"]
            .as_u64()
            .unwrap();
        assert!(crossed > 0, "the C {relay} relay moved nothing");
    }
}

#[test]
fn a_setup_failing_half_way_is_undone_exactly() {
    // Debug builds honour HOSTKIT_TUN_FAIL_AT_STEP: fail before plan step 20 of a
    // dual-stack plan, after devices, addresses, moved routes and most rules are in place.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let out = run(hostkit()
        .args(["tun", "up", "--netns", ns.name(), "--run-dir"])
        .arg(dir.join("run"))
        .args([
            "--addr0", "10.0.0.1", "--addr0", "fd00::1", "--addr1", "10.0.0.2", "--addr1",
            "fd00::2",
        ])
        .env("HOSTKIT_TUN_FAIL_AT_STEP", "20"));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("injected failure before step 20"),
        "{stderr}"
    );
    assert!(
        stderr.contains("everything done so far was undone"),
        "{stderr}"
    );
    assert!(
        stderr.contains("done: remove IPv4 rule iif tun0 lookup 13"),
        "{stderr}"
    );
    assert_eq!(snapshot(&ns), before);
    assert_eq!(
        std::fs::read_dir(dir.join("run")).unwrap().count(),
        0,
        "state left behind"
    );
}

#[test]
fn a_device_deleted_under_the_relay_stops_it_and_everything_is_undone() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    ns.ip(&["link", "del", "tun0"]);
    let (status, _, stderr) = up.wait_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reading from tun0 failed"), "{stderr}");
    assert!(stderr.contains("the tunnel was torn down"), "{stderr}");
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn after_sigkill_on_persistent_devices_tun_down_puts_them_back() {
    // Persistent devices survive the relay: their addresses, table routes and queue length
    // stay behind after SIGKILL, and the kernel's local routes stay moved. `down` must undo
    // all of it from the record.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun", "multi_queue"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun", "multi_queue"]);
    let before = snapshot(&ns);
    let up = Up::start(
        &ns,
        &dir,
        "fast",
        &[],
        &["--addr0", "fd00::1", "--addr1", "fd00::2"],
    );
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    let mut down = up.hostkit("down", &[]);
    up.stop(nix::sys::signal::Signal::SIGKILL);
    let left = snapshot(&ns);
    assert!(left.contains("local fd00::1 dev tun0 table 13"), "{left}");
    assert!(left.contains("qlen 5000"), "{left}");
    let out = run_ok(&mut down);
    assert!(
        out.contains("done: remove route local fd00::1 dev tun0 table 13"),
        "{out}"
    );
    // The address is ours: its local route goes with it, never put back by hand (that
    // would leave a ghost `local fd00::1 … metric 1024` behind).
    assert!(!out.contains("restore route local"), "{out}");
    assert!(
        out.contains("done: restore txqueuelen 500 on tun0"),
        "{out}"
    );
    assert_eq!(snapshot(&ns), before);
}

#[test]
fn tun_down_reports_what_someone_else_already_removed() {
    // After a SIGKILL on persistent devices, a person removes one address by hand: `down`
    // reports it as already gone (the kernel's EADDRNOTAVAIL) and undoes the rest.
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tun"]);
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, "simple", &[], &[]);
    let mut down = up.hostkit("down", &[]);
    up.stop(nix::sys::signal::Signal::SIGKILL);
    ns.ip(&[
        "address", "del", "10.0.0.1", "peer", "10.0.0.2", "dev", "tun0",
    ]);
    let out = run_ok(&mut down);
    assert!(
        out.contains("already gone: remove address 10.0.0.1 peer 10.0.0.2 from tun0"),
        "{out}"
    );
    assert!(
        out.contains("done: remove address 10.0.0.2 peer 10.0.0.1 from tun1"),
        "{out}"
    );
    assert_eq!(snapshot(&ns), before);
}
