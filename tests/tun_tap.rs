//! `hostkit tun up --mode tap`: two TAP devices, Ethernet frames across the relay. Observed
//! from outside, each test in its own network namespace: ARP and neighbour discovery with the
//! real `tcpdump -e` on both devices, `ip neigh` (each side learns the other's MAC address over
//! the relay, not through `lo`), an 802.1Q-tagged frame injected with a raw `AF_PACKET` socket,
//! captures read back by `tcpdump -r` and `tshark -r`, HTTP transfers with the fast engine's
//! super-frames, the dry run, teardown.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::tun::{
    PYTHON, Up, http_transfer, lo_rx_packets, relayed_bytes, relayed_packets, snapshot,
};
use crate::util::{NetNs, TestDir, have_tool, hostkit, run, run_ok, texts};

with_both_engines!(
    ping_crosses_with_arp_seen_on_both_taps,
    ipv6_ping_crosses_with_neighbour_discovery,
    a_vlan_tagged_frame_crosses_unchanged,
    sigterm_and_sigkill_then_down_leave_nothing,
    attaches_to_existing_persistent_tap_devices_and_leaves_them,
);

const TAP: [&str; 2] = ["--mode", "tap"];
const DUAL: [&str; 10] = [
    "--mode", "tap", "--addr0", "fd00::1", "--addr1", "fd00::2", "--addr0", "10.0.0.1", "--addr1",
    "10.0.0.2",
];

/// A device's MAC address, as `ip` shows it.
fn mac_of(ns: &NetNs, dev: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", dev])).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// The link-layer address `ip neigh` has for `addr` on `dev` (None if there is no entry).
fn neighbour(ns: &NetNs, dev: &str, addr: &str) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "neigh", "show", "dev", dev])).unwrap();
    v.as_array()?
        .iter()
        .find(|n| n["dst"] == addr)
        .and_then(|n| n["lladdr"].as_str())
        .map(str::to_string)
}

/// `tcpdump -l -n -e [ARGS] -i DEV FILTER` in the namespace, started and listening.
struct Tcpdump {
    child: Child,
    out: PathBuf,
}

impl Tcpdump {
    fn start(ns: &NetNs, dir: &TestDir, dev: &str, args: &[&str], filter: &str) -> Tcpdump {
        let out = dir.join(format!("tcpdump-{dev}.txt"));
        let err = dir.join(format!("tcpdump-{dev}.err"));
        let child = ns
            .exec(["timeout", "60", "tcpdump", "-l", "-n", "-e", "-i", dev])
            .args(args)
            .arg(filter)
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
                "tcpdump on {dev} did not start: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tcpdump { child, out }
    }

    /// Stops it (after a moment for the last packets) and returns what it printed.
    fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).unwrap()
    }
}

fn ping_crosses_with_arp_seen_on_both_taps(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &TAP);
    let (mac0, mac1) = (mac_of(&ns, "tap0"), mac_of(&ns, "tap1"));
    assert_ne!(mac0, mac1);
    assert!(
        mac0.starts_with("02:") && mac1.starts_with("02:"),
        "{mac0} {mac1}"
    );
    assert!(
        up.stderr().contains(&format!("TAP {mac0} <-> {mac1}")),
        "{}",
        up.stderr()
    );
    assert_eq!(neighbour(&ns, "tap0", "10.0.0.2"), None);
    let dumps = ["tap0", "tap1"].map(|d| Tcpdump::start(&ns, &dir, d, &[], "arp"));
    let lo_before = lo_rx_packets(&ns);
    run_ok(&mut ns.exec(["ping", "-c", "3", "-W", "2", "10.0.0.2"]));
    assert_eq!(
        lo_rx_packets(&ns),
        lo_before,
        "ping traffic went through lo"
    );
    // Each side learnt the other's MAC address, over the relay.
    assert_eq!(neighbour(&ns, "tap0", "10.0.0.2").as_deref(), Some(&*mac1));
    assert_eq!(neighbour(&ns, "tap1", "10.0.0.1").as_deref(), Some(&*mac0));
    // The ARP exchange on both devices: the request leaves tap0 and arrives on tap1, the reply
    // the other way.
    for (dev, text) in ["tap0", "tap1"].iter().zip(dumps.map(Tcpdump::stop)) {
        assert!(
            text.contains(&format!("{mac0} > ff:ff:ff:ff:ff:ff, ethertype ARP"))
                && text.contains("Request who-has 10.0.0.2 tell 10.0.0.1"),
            "tcpdump -e on {dev}:\n{text}"
        );
        assert!(
            text.contains(&format!("{mac1} > {mac0}, ethertype ARP"))
                && text.contains(&format!("Reply 10.0.0.2 is-at {mac1}")),
            "tcpdump -e on {dev}:\n{text}"
        );
    }
    // `tun status` names the mode and the addresses.
    let text = run_ok(&mut up.hostkit("status", &[]));
    assert!(
        text.contains(&format!("tap0: tap up, mtu 1500, mac {mac0}")),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&mut up.hostkit("status", &["--format", "json"]))).unwrap();
    assert_eq!(json["devices"][1]["mode"], "tap");
    assert_eq!(json["devices"][1]["mac"], mac1.as_str());
    let (_, stdout, _) = up.stop(Signal::SIGTERM);
    // Three pings and the ARP exchange (at least).
    assert!(relayed_packets(&stdout, "tap0", "tap1") >= 4, "{stdout}");
    assert!(relayed_packets(&stdout, "tap1", "tap0") >= 4, "{stdout}");
}

fn ipv6_ping_crosses_with_neighbour_discovery(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &[], &DUAL);
    let (mac0, mac1) = (mac_of(&ns, "tap0"), mac_of(&ns, "tap1"));
    let nd = "icmp6 and (ip6[40] == 135 or ip6[40] == 136)";
    let dumps = ["tap0", "tap1"].map(|d| Tcpdump::start(&ns, &dir, d, &[], nd));
    let lo_before = lo_rx_packets(&ns);
    run_ok(&mut ns.exec(["ping", "-6", "-c", "3", "-W", "2", "fd00::2"]));
    assert_eq!(
        lo_rx_packets(&ns),
        lo_before,
        "ping traffic went through lo"
    );
    assert_eq!(neighbour(&ns, "tap0", "fd00::2").as_deref(), Some(&*mac1));
    assert_eq!(neighbour(&ns, "tap1", "fd00::1").as_deref(), Some(&*mac0));
    for (dev, text) in ["tap0", "tap1"].iter().zip(dumps.map(Tcpdump::stop)) {
        // The solicitation goes to the solicited-node group's MAC address, with our address as
        // the source; the advertisement comes back unicast.
        assert!(
            text.contains(&format!("{mac0} > 33:33:ff:00:00:02"))
                && text.contains(
                    "fd00::1 > ff02::1:ff00:2: ICMP6, neighbor solicitation, who has fd00::2"
                ),
            "tcpdump -e on {dev}:\n{text}"
        );
        assert!(
            text.contains(&format!("{mac1} > {mac0}"))
                && text
                    .contains("fd00::2 > fd00::1: ICMP6, neighbor advertisement, tgt is fd00::2"),
            "tcpdump -e on {dev}:\n{text}"
        );
    }
    // IPv4 too, in the same tunnel.
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    up.stop(Signal::SIGTERM);
}

/// An 802.1Q-tagged frame (VLAN 100, EtherType 0x88b5) from an address of no device.
fn tagged_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
    f.extend_from_slice(&[0x81, 0x00, 0x60, 0x64, 0x88, 0xb5]);
    f.extend_from_slice(b"hostkit: a tagged frame across the relay");
    f.resize(64, 0xa5);
    f
}

/// Sends `frame` out of `dev` with a raw `AF_PACKET` socket, from inside the namespace.
fn inject(ns: &NetNs, dev: &str, frame: &[u8]) {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{dev}', 0))\ns.send(bytes.fromhex('{hex}'))\n"
    );
    run_ok(&mut ns.exec([PYTHON, "-c", &script]));
}

/// The bytes of the frames in `tcpdump -xx` output.
fn hex_frames(text: &str) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("0x") {
            Some(rest) => {
                let bytes = rest.split_once(':').map_or("", |(_, b)| b);
                let frame = frames.last_mut().expect("a header line first");
                for word in bytes.split_whitespace() {
                    for i in (0..word.len()).step_by(2) {
                        frame.push(u8::from_str_radix(&word[i..i + 2], 16).unwrap());
                    }
                }
            }
            None => frames.push(Vec::new()),
        }
    }
    frames
}

fn a_vlan_tagged_frame_crosses_unchanged(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, engine, &["-vv"], &TAP);
    let dump = Tcpdump::start(&ns, &dir, "tap1", &["-xx", "-c", "1"], "vlan");
    let frame = tagged_frame();
    inject(&ns, "tap0", &frame);
    let text = dump.stop();
    assert!(
        text.contains(
            "02:00:5e:10:20:30 > ff:ff:ff:ff:ff:ff, ethertype 802.1Q (0x8100), length 64: vlan 100, p 3"
        ),
        "tcpdump -e -i tap1 vlan:\n{text}"
    );
    assert_eq!(
        hex_frames(&text),
        vec![frame],
        "the frame changed on the way:\n{text}"
    );
    let (_, _, stderr) = up.stop(Signal::SIGTERM);
    assert!(
        stderr.contains(
            "tap0 -> tap1 02:00:5e:10:20:30 > ff:ff:ff:ff:ff:ff, vlan 100, ethertype 0x88b5, length 46"
        ),
        "{stderr}"
    );
}

fn sigterm_and_sigkill_then_down_leave_nothing(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let up = Up::start(&ns, &dir, engine, &[], &DUAL);
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    let (_, _, stderr) = up.stop(Signal::SIGTERM);
    assert_eq!(snapshot(&ns), before, "teardown log:\n{stderr}");
    assert_eq!(std::fs::read_dir(dir.join("run")).unwrap().count(), 0);

    let up = Up::start(&ns, &dir, engine, &[], &DUAL);
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    let mut down = up.hostkit("down", &[]);
    up.stop_any(Signal::SIGKILL);
    assert!(
        snapshot(&ns).contains("iif tap0"),
        "SIGKILL leaves the rules"
    );
    let out = run_ok(&mut down);
    assert!(
        out.contains("done: remove IPv6 rule iif tap1 lookup 13"),
        "{out}"
    );
    assert_eq!(snapshot(&ns), before);
}

fn attaches_to_existing_persistent_tap_devices_and_leaves_them(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.ip(&["tuntap", "add", "dev", "tap1", "mode", "tap"]);
    ns.ip(&["link", "set", "dev", "tap1", "address", "02:00:00:00:11:11"]);
    let mac0 = mac_of(&ns, "tap0");
    let before = snapshot(&ns);
    let up = Up::start(
        &ns,
        &dir,
        engine,
        &[],
        &["--mode", "tap", "--mac0", "02:00:00:00:00:0a"],
    );
    // The address asked for; the other device keeps its own.
    assert_eq!(mac_of(&ns, "tap0"), "02:00:00:00:00:0a");
    assert_eq!(mac_of(&ns, "tap1"), "02:00:00:00:11:11");
    run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2", "10.0.0.2"]));
    assert_eq!(
        neighbour(&ns, "tap0", "10.0.0.2").as_deref(),
        Some("02:00:00:00:11:11")
    );
    let (_, stdout, stderr) = up.stop(Signal::SIGTERM);
    assert!(relayed_packets(&stdout, "tap0", "tap1") >= 2);
    assert!(
        stderr.contains(&format!("done: restore address {mac0} on tap0")),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&ns),
        before,
        "the devices should be back as they were"
    );
    assert_eq!(mac_of(&ns, "tap0"), mac0);
    let details = ns.ip(&["-d", "link", "show", "tap0"]);
    assert!(
        details.contains("tun type tap pi off vnet_hdr off persist on"),
        "{details}"
    );
}

#[test]
fn the_watcher_keeps_a_tap_tunnel_through_link_down_and_up() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    // Compared line by line, in any order (the kernel lists re-added routes last).
    let sorted = |s: String| {
        let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
        lines.sort_unstable();
        lines
    };
    let during = sorted(snapshot(&ns));
    // Link down flushes the neighbour entries and the IPv6 address; up brings the local
    // routes back into table local.
    ns.ip(&["link", "set", "tap0", "down"]);
    ns.ip(&["link", "set", "tap0", "up"]);
    let start = Instant::now();
    while sorted(snapshot(&ns)) != during {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not repaired:\n{}\n{}",
            snapshot(&ns),
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up.stderr()
            .contains("warning: tap0: moved local 10.0.0.1 back to table 13"),
        "{}",
        up.stderr()
    );
    // The peers are learnt again over the relay.
    run_ok(&mut ns.exec(["ping", "-c", "1", "-W", "2", "10.0.0.2"]));
    run_ok(&mut ns.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00::2"]));
    assert_eq!(neighbour(&ns, "tap0", "fd00::2"), Some(mac_of(&ns, "tap1")));
    up.stop(Signal::SIGTERM);
}

#[test]
fn tun_and_tap_devices_are_not_mixed() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tun"]);
    ns.ip(&["tuntap", "add", "dev", "tun1", "mode", "tap"]);
    let before = snapshot(&ns);
    for (args, dev, is) in [
        (&["--mode", "tap"][..], "tap0", "TUN"),
        (
            &["--mode", "tun", "--dev0", "tun0", "--dev1", "tun1"][..],
            "tun1",
            "TAP",
        ),
    ] {
        for dry in [true, false] {
            let mut cmd = if dry {
                // The dry run looks at existing devices only without --netns: run it inside.
                let mut cmd = ns.exec([crate::util::hostkit_bin().to_str().unwrap(), "tun", "up"]);
                cmd.arg("--dry-run");
                cmd
            } else {
                let mut cmd = hostkit();
                cmd.args(["tun", "up", "--netns", ns.name()])
                    .env("HOSTKIT_RUN_DIR", dir.join("run"));
                cmd
            };
            cmd.args(args);
            let out = crate::util::run_with_timeout(&mut cmd, 20);
            let (stdout, stderr) = texts(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?} dry {dry}: {stderr}");
            assert!(
                stderr.contains(&format!("device \"{dev}\" exists as a {is} device")),
                "{args:?} dry {dry}: {stderr}"
            );
            assert!(stdout.is_empty(), "{stdout}");
            assert_eq!(snapshot(&ns), before);
        }
    }
}

#[test]
fn dry_run_prints_the_tap_commands() {
    let dir = TestDir::new();
    let out = run_ok(
        hostkit()
            .args(["tun", "up", "--dry-run", "--netns", "lab", "--mode", "tap"])
            .args(["--mac1", "02:00:00:00:00:0b", "--engine", "simple"])
            .env("HOSTKIT_RUN_DIR", dir.join("run")),
    );
    // tap0's address is derived from its name: the same on every run and every host.
    let expected = [
        "ip -n lab tuntap add dev tap0 mode tap",
        "ip -n lab link set dev tap0 address 02:7d:0b:55:45:4e",
        "ip -n lab link set dev tap0 addrgenmode none",
        "ip -n lab address add 10.0.0.1 peer 10.0.0.2 dev tap0",
        "ip -n lab link set dev tap0 up",
        "ip -n lab tuntap add dev tap1 mode tap",
        "ip -n lab link set dev tap1 address 02:00:00:00:00:0b",
        "ip -n lab link set dev tap1 addrgenmode none",
        "ip -n lab address add 10.0.0.2 peer 10.0.0.1 dev tap1",
        "ip -n lab link set dev tap1 up",
        "ip -n lab route del local 10.0.0.1 dev tap0 table local",
        "ip -n lab route add local 10.0.0.1 dev tap0 table 13 proto kernel scope host src 10.0.0.1",
        "ip -n lab route del local 10.0.0.2 dev tap1 table local",
        "ip -n lab route add local 10.0.0.2 dev tap1 table 13 proto kernel scope host src 10.0.0.2",
        "ip -n lab rule add iif tap0 lookup 13",
        "ip -n lab rule add iif tap1 lookup 13",
        "ip netns exec lab sysctl -w net.ipv4.ip_nonlocal_bind=1",
        "# hostkit's tap0 is not persistent (it vanishes with the relay); after a replay remove it with: ip -n lab tuntap del dev tap0 mode tap",
        "# hostkit's tap1 is not persistent (it vanishes with the relay); after a replay remove it with: ip -n lab tuntap del dev tap1 mode tap",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn bad_mac_addresses_are_refused() {
    for (args, want) in [
        (
            &["--mode", "tap", "--mac0", "01:00:5e:00:00:01"][..],
            "invalid value '01:00:5e:00:00:01' for '--mac0 <MAC>': 01:00:5e:00:00:01 is a multicast address",
        ),
        (
            &["--mode", "tap", "--mac0", "02:00:00:00:01"],
            "\"02:00:00:00:01\" is not a MAC address",
        ),
        (
            &["--mode", "tap", "--mac1", "00:00:00:00:00:00"],
            "00:00:00:00:00:00 is not an address a device can have",
        ),
        (
            &[
                "--mode",
                "tap",
                "--mac0",
                "02:00:00:00:00:01",
                "--mac1",
                "02:00:00:00:00:01",
            ],
            "both devices would have the MAC address 02:00:00:00:00:01",
        ),
        (
            &["--mac0", "02:00:00:00:00:01"],
            "--mac0 applies to --mode tap only",
        ),
        (
            &["--mode", "tap", "--mtu", "65535"],
            "a TAP device takes 68 to 65521",
        ),
    ] {
        let out = run(hostkit()
            .args(["tun", "up", "--dry-run", "--netns", "lab"])
            .args(args));
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn http_over_tap_with_the_fast_engine_is_intact() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let lo_before = lo_rx_packets(&ns);
    http_transfer(&ns, &dir, "10.0.0.2", "10.0.0.2");
    // IPv6 through the same tunnel.
    http_transfer(&ns, &dir, "fd00::2", "[fd00::2]");
    assert_eq!(lo_rx_packets(&ns), lo_before, "traffic went through lo");
    let (_, stdout, _) = up.stop(Signal::SIGTERM);
    let (bytes, packets) = (
        relayed_bytes(&stdout, "tap1", "tap0"),
        relayed_packets(&stdout, "tap1", "tap0"),
    );
    assert!(bytes > 16 << 20, "{stdout}");
    // Super-frames crossed: far more than a 1514-byte frame each on average.
    assert!(
        bytes / packets > 4 * 1514,
        "{packets} frames, {bytes} bytes:\n{stdout}"
    );
}

#[test]
fn a_capture_in_tap_mode_has_ethernet_headers_and_wire_sized_frames() {
    require_root!();
    if !have_tool("tshark", "--version") {
        return;
    }
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let pcap = dir.join("tap.pcapng");
    let up = Up::start(
        &ns,
        &dir,
        "fast",
        &[],
        &[
            "--mode",
            "tap",
            "--pcap",
            pcap.to_str().unwrap(),
            // tcpdump's own language on frames (`vlan` last: it shifts what follows it).
            "--pcap-filter",
            "arp or icmp or tcp port 8000 or vlan",
            "--impair",
            "delay 40ms",
            "--impair-filter",
            "icmp",
        ],
    );
    let (mac0, mac1) = (mac_of(&ns, "tap0"), mac_of(&ns, "tap1"));
    let ping = run_ok(&mut ns.exec(["ping", "-c", "2", "-W", "2", "10.0.0.2"]));
    // Each ICMP frame is delayed 40 ms, the ARP exchange is not.
    let rtt: f64 = ping
        .lines()
        .find_map(|l| l.split("time=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{ping}"));
    assert!((80.0..400.0).contains(&rtt), "rtt {rtt} ms:\n{ping}");
    http_transfer(&ns, &dir, "10.0.0.2", "10.0.0.2");
    inject(&ns, "tap0", &tagged_frame());
    std::thread::sleep(Duration::from_millis(200));
    up.stop(Signal::SIGTERM);

    let out = run(Command::new("tcpdump").args(["-r", pcap.to_str().unwrap(), "-n", "-e"]));
    let (text, err) = texts(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("link-type EN10MB (Ethernet)"), "{err}");
    for want in [
        format!(
            "{mac0} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 10.0.0.2 tell 10.0.0.1"
        ),
        format!("{mac1} > {mac0}, ethertype ARP (0x0806), length 42: Reply 10.0.0.2 is-at {mac1}"),
        format!(
            "{mac0} > {mac1}, ethertype IPv4 (0x0800), length 98: 10.0.0.1 > 10.0.0.2: ICMP echo request"
        ),
        "ethertype 802.1Q (0x8100), length 64: vlan 100, p 3, ethertype Unknown (0x88b5)"
            .to_string(),
    ] {
        assert!(text.contains(&want), "no `{want}` in:\n{text}");
    }
    // Every frame on the interface it was read from, wire-sized, with right checksums.
    let fields = run_ok(Command::new("tshark").args([
        "-r",
        pcap.to_str().unwrap(),
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "eth.src",
        "-e",
        "frame.len",
        "-e",
        "ip.checksum.status",
        "-e",
        "tcp.checksum.status",
        "tcp",
    ]));
    let mut per_iface = std::collections::BTreeMap::new();
    for line in fields.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let want_src = if f[0] == "tap0" { &mac0 } else { &mac1 };
        assert_eq!(f[1], want_src, "{line}");
        let len: usize = f[2].parse().unwrap();
        assert!(len <= 1514, "not wire-sized: {line}");
        assert_eq!((f[3], f[4]), ("1", "1"), "checksums: {line}");
        *per_iface.entry(f[0].to_string()).or_insert(0usize) += 1;
    }
    assert!(
        per_iface.get("tap1").copied().unwrap_or(0) > 8 << 20 >> 11,
        "{per_iface:?}"
    );
    assert!(per_iface.contains_key("tap0"), "{per_iface:?}");
}
