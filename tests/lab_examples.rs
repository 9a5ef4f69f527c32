//! The programs in `examples/`, built on `hostkit::tunnel::Relay`, run as their users run them:
//! the binary cargo built, started with `--netns` in a namespace the test made, observed from
//! outside with the real `ping`, `traceroute`, `tcpdump`, `socat` and `ss`, then stopped with
//! SIGTERM — exit 0 and the namespace exactly as before. Each has a control: the same
//! namespace setup with a plain `hostkit tun up`, where the example's effect must be absent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use crate::tun::{Server, Up, blob, sha256_file, snapshot};
use crate::util::{Background, NetNs, TestDir, run, run_ok, run_with_timeout, texts};

with_both_engines!(
    icmp_responder_answers_pings_the_kernel_never_sees,
    ttl_decrement_is_a_router_hop_traceroute_shows,
    tcp_window_clamp_limits_the_window_the_sender_sees,
);

/// Both address families: `--addr0 10.0.0.1 --addr0 fd00::1 --addr1 …`.
const DUAL: [&str; 8] = [
    "--addr0", "10.0.0.1", "--addr0", "fd00::1", "--addr1", "10.0.0.2", "--addr1", "fd00::2",
];

/// How long an example may take to report that its relay runs.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The directory holding the example binaries, up to date: `cargo build --examples` with the
/// profile and target directory of this test binary, once per test run. (`cargo test` builds
/// the examples already, and then this finds everything fresh; `cargo test --test
/// integration` does not, and a stale binary would test old code.)
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/hostkit, built for this test run.
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_hostkit"))
            .parent()
            .expect("the hostkit binary's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = profile_dir.file_name().unwrap().to_str().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--examples", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = run_with_timeout(&mut cmd, 900);
        if out.status.success() {
            Ok(profile_dir.join("examples"))
        } else {
            Err(format!(
                "{cmd:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match dir {
        Ok(d) => d,
        Err(e) => panic!("cannot build the examples: {e}"),
    }
}

/// An example running in the background (like `tun up`).
struct Example {
    bg: Background,
    name: String,
    ns: String,
}

impl Example {
    /// Starts `examples/NAME --netns NS --engine ENGINE ARGS…` and waits until its relay runs.
    fn start(ns: &NetNs, dir: &TestDir, name: &str, engine: &str, args: &[&str]) -> Example {
        let bin = examples_dir().join(name);
        assert!(bin.is_file(), "no example binary {}", bin.display());
        let mut cmd = Command::new(&bin);
        cmd.args(["--netns", ns.name(), "--engine", engine])
            .args(args)
            .env("HOSTKIT_RUN_DIR", dir.join("run"))
            .env("RUST_BACKTRACE", "0");
        Example {
            bg: Background::start(&mut cmd, dir, name, "relay running", READY_TIMEOUT),
            name: name.to_string(),
            ns: ns.name().to_string(),
        }
    }

    /// SIGTERM, then (bounded) the exit: it must be 0, a full teardown, with no TUN device left
    /// in the namespace. Returns stdout (the final report) and stderr.
    fn stop(self) -> (String, String) {
        let (stdout, stderr) = self.bg.stop();
        assert!(
            stderr.contains("stopping (got SIGTERM); tearing down"),
            "{stderr}"
        );
        let links = run_ok(Command::new("ip").args(["-n", &self.ns, "-d", "link"]));
        assert!(
            !links.contains("tun0") && !links.contains("tun1") && !links.contains(" tun "),
            "{}: TUN devices left behind:\n{links}",
            self.name
        );
        (stdout, stderr)
    }
}

/// The stage's report line for a direction: `NAME tun0 -> tun1: …`.
fn stage_line<'a>(stdout: &'a str, stage: &str, from: &str, to: &str) -> &'a str {
    let prefix = format!("{stage} {from} -> {to}: ");
    stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
}

/// A counter of a stage line, `N WORD`: `3 packets`, `2 dropped`, `5 injected`.
fn count(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no `N {word}` in `{line}`"))
}

/// One of the stage's own counters, listed last in its line: `(answered 3, …)`.
fn extra(line: &str, name: &str) -> u64 {
    let own = line
        .rsplit_once('(')
        .map(|(_, own)| own.trim_end_matches(')'))
        .unwrap_or_else(|| panic!("no counters of its own in `{line}`"));
    own.split(", ")
        .find_map(|c| c.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{name} N` in `{line}`"))
}

/// A counter from /proc/net/snmp (`Icmp`, `InEchos`) or /proc/net/snmp6 (`Icmp6InEchos`).
fn snmp(ns: &NetNs, group: &str, field: &str) -> u64 {
    if group == "Icmp6" {
        let text = run_ok(&mut ns.exec(["cat", "/proc/net/snmp6"]));
        let name = format!("Icmp6{field}");
        return text
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(&name)).then(|| it.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6"));
    }
    crate::tun::snmp(ns, group, field)
}

/// `tcpdump` on one device of the namespace, printing every packet at once.
struct Tcpdump {
    child: Child,
    out: PathBuf,
}

impl Tcpdump {
    /// Starts capturing `filter` on `dev` and waits until it listens.
    fn start(ns: &NetNs, dir: &TestDir, dev: &str, filter: &str) -> Tcpdump {
        let out = dir.join(format!("tcpdump-{dev}.txt"));
        let err = out.with_extension("err");
        let child = ns
            // Bounded even if the test fails before stopping it.
            .exec([
                "timeout",
                "-s",
                "INT",
                "120",
                "tcpdump",
                "--immediate-mode",
                "-l",
                "-n",
                "-i",
                dev,
                filter,
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
                start.elapsed() < Duration::from_secs(30),
                "tcpdump did not start: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tcpdump { child, out }
    }

    /// Stops it and returns the packets it printed, a line each.
    fn stop(mut self) -> Vec<String> {
        // Whatever is in flight reaches it first.
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGINT,
        )
        .unwrap();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// `sysctl -w` inside the namespace.
fn sysctl(ns: &NetNs, settings: &[&str]) {
    run_ok(&mut ns.exec(["sysctl", "-q", "-w"].iter().chain(settings)));
}

// ---------------------------------------------------------------------------------------------
// icmp-responder
// ---------------------------------------------------------------------------------------------

/// What pinging 10.0.0.2 and fd00::2 three times each gives, in a namespace whose kernel
/// ignores echo requests: (both pings answered, echo requests seen on tun1, echo requests
/// the kernel received).
fn ping_with_echo_ignored(ns: &NetNs, dir: &TestDir) -> (bool, Vec<String>, u64) {
    let on_tun1 = Tcpdump::start(ns, dir, "tun1", "icmp or icmp6");
    let echos = snmp(ns, "Icmp", "InEchos") + snmp(ns, "Icmp6", "InEchos");
    let v4 = run(&mut ns.exec(["ping", "-n", "-c", "3", "-W", "2", "10.0.0.2"]));
    let v6 = run(&mut ns.exec(["ping", "-6", "-n", "-c", "3", "-W", "2", "fd00::2"]));
    let seen = snmp(ns, "Icmp", "InEchos") + snmp(ns, "Icmp6", "InEchos") - echos;
    let captured = on_tun1.stop();
    // iputils ping verifies each reply's checksum, and says so when it is wrong.
    let answered = |out: &std::process::Output| {
        let text = texts(out).0;
        out.status.success()
            && text.contains("3 packets transmitted, 3 received")
            && !text.contains("BAD CHECKSUM")
    };
    (answered(&v4) && answered(&v6), captured, seen)
}

fn icmp_responder_answers_pings_the_kernel_never_sees(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    sysctl(
        &ns,
        &[
            "net.ipv4.icmp_echo_ignore_all=1",
            "net.ipv6.icmp.echo_ignore_all=1",
        ],
    );
    let before = snapshot(&ns);
    let ex = Example::start(&ns, &dir, "icmp-responder", engine, &DUAL);
    let (answered, on_tun1, kernel_echos) = ping_with_echo_ignored(&ns, &dir);
    let (stdout, stderr) = ex.stop();
    assert!(answered, "pings unanswered with the responder:\n{stderr}");
    assert!(
        on_tun1.is_empty(),
        "ICMP reached tun1 (the far end): {on_tun1:?}"
    );
    assert_eq!(kernel_echos, 0, "the kernel received echo requests");
    let fwd = stage_line(&stdout, "icmp-responder", "tun0", "tun1");
    assert_eq!(extra(fwd, "answered"), 6, "{fwd}");
    assert_eq!(count(fwd, "dropped"), 6, "{fwd}");
    let back = stage_line(&stdout, "icmp-responder", "tun1", "tun0");
    assert_eq!(count(back, "injected"), 6, "{back}");
    assert_eq!(snapshot(&ns), before, "the namespace changed");
}

#[test]
fn without_the_icmp_responder_pings_ignored_by_the_kernel_go_unanswered() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    sysctl(
        &ns,
        &[
            "net.ipv4.icmp_echo_ignore_all=1",
            "net.ipv6.icmp.echo_ignore_all=1",
        ],
    );
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let (answered, on_tun1, kernel_echos) = ping_with_echo_ignored(&ns, &dir);
    up.stop(Signal::SIGTERM);
    assert!(!answered, "pings answered although the kernel ignores them");
    // The same capture sees the requests reach the far end (so it would have seen them above).
    let requests = |needle: &str| on_tun1.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        requests("10.0.0.1 > 10.0.0.2: ICMP echo request"),
        3,
        "{on_tun1:?}"
    );
    assert_eq!(
        requests("fd00::1 > fd00::2: ICMP6, echo request"),
        3,
        "{on_tun1:?}"
    );
    assert_eq!(kernel_echos, 6);
}

// ---------------------------------------------------------------------------------------------
// ttl-decrement
// ---------------------------------------------------------------------------------------------

/// The TTL `ping -c 1` reports for the reply (`ttl=63`).
fn ping_ttl(ns: &NetNs, args: &[&str]) -> u32 {
    let out = run_ok(&mut ns.exec(["ping", "-n", "-c", "1", "-W", "2"].iter().chain(args)));
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no ttl= in:\n{out}"))
}

/// The hops `traceroute -n` lists: (hop number, first address answering), `*` for none.
fn traceroute(ns: &NetNs, args: &[&str]) -> Vec<(u32, String)> {
    // One probe in flight at a time (-N 1): the far end's port unreachables stay within the
    // kernel's ICMP rate limit; -m 5 bounds a run that goes wrong.
    let out = run_with_timeout(
        &mut ns.exec(
            ["traceroute", "-n", "-N", "1", "-w", "2", "-m", "5"]
                .iter()
                .chain(args),
        ),
        60,
    );
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "traceroute failed:\n{stdout}{stderr}");
    stdout
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            let hop = w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let addr = w.find(|x| *x != "*").unwrap_or("*").to_string();
            (hop, addr)
        })
        .collect()
}

fn ttl_decrement_is_a_router_hop_traceroute_shows(engine: &str) {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    // A strict reverse-path filter: the hop's address must still be accepted (the example's
    // documentation explains the choice).
    sysctl(
        &ns,
        &[
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.default.rp_filter=1",
        ],
    );
    let before = snapshot(&ns);
    let ex = Example::start(&ns, &dir, "ttl-decrement", engine, &DUAL);
    // Each way one decrement: the request arrives with 63, the reply too.
    let ttl4 = ping_ttl(&ns, &["10.0.0.2"]);
    let ttl6 = ping_ttl(&ns, &["-6", "fd00::2"]);
    let hops4 = traceroute(&ns, &["10.0.0.2"]);
    let hops6 = traceroute(&ns, &["-6", "fd00::2"]);
    let (stdout, _) = ex.stop();
    assert_eq!((ttl4, ttl6), (63, 63));
    let two = |a: &str| vec![(1, a.to_string()), (2, a.to_string())];
    assert_eq!(hops4, two("10.0.0.2"), "IPv4: the relay is a hop");
    assert_eq!(hops6, two("fd00::2"), "IPv6: the relay is a hop");
    // Three probes with TTL 1 per traceroute expired in the relay, each answered.
    let fwd = stage_line(&stdout, "ttl-decrement", "tun0", "tun1");
    assert_eq!(extra(fwd, "expired"), 6, "{fwd}");
    assert_eq!(extra(fwd, "time_exceeded_sent"), 6, "{fwd}");
    let back = stage_line(&stdout, "ttl-decrement", "tun1", "tun0");
    assert_eq!(count(back, "injected"), 6, "{back}");
    assert!(extra(back, "decremented") >= 8, "{back}");
    assert_eq!(snapshot(&ns), before, "the namespace changed");
}

#[test]
fn without_ttl_decrement_the_far_end_is_one_hop_and_ttl_64() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    sysctl(
        &ns,
        &[
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.default.rp_filter=1",
        ],
    );
    let up = Up::start(&ns, &dir, "fast", &[], &DUAL);
    let ttl4 = ping_ttl(&ns, &["10.0.0.2"]);
    let ttl6 = ping_ttl(&ns, &["-6", "fd00::2"]);
    let hops4 = traceroute(&ns, &["10.0.0.2"]);
    let hops6 = traceroute(&ns, &["-6", "fd00::2"]);
    up.stop(Signal::SIGTERM);
    assert_eq!((ttl4, ttl6), (64, 64));
    assert_eq!(hops4, vec![(1, "10.0.0.2".to_string())]);
    assert_eq!(hops6, vec![(1, "fd00::2".to_string())]);
}

// ---------------------------------------------------------------------------------------------
// tcp-window-clamp
// ---------------------------------------------------------------------------------------------

/// One TCP connection's `ss -tin` entry, as seen from one end.
#[derive(Debug)]
struct SsEntry {
    local: String,
    info: String,
}

impl SsEntry {
    /// The window its peer last advertised (`snd_wnd:N`).
    fn snd_wnd(&self) -> u64 {
        self.info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("snd_wnd:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no snd_wnd in {self:?}"))
    }
}

/// Sends 1 MiB from 10.0.0.1 to a server on 10.0.0.2:5001 across the tunnel; once it has
/// all arrived, intact, and while the connection is still open, returns both ends' `ss -tin`
/// entries.
fn transfer_and_look(ns: &NetNs, dir: &TestDir) -> Vec<SsEntry> {
    use std::io::Write;
    let data = blob(1 << 20, 0xc1a9);
    let dst = dir.join("dst.bin");
    let _server = Server::start(
        ns,
        &[
            "socat",
            "-u",
            "TCP-LISTEN:5001,bind=10.0.0.2,reuseaddr",
            &format!("CREATE:{}", dst.display()),
        ],
        5001,
        &dir.join("server.log"),
    );
    // The client sends what the test writes to its stdin, and stays connected until it closes.
    let mut client = ns
        .exec([
            "timeout",
            "60",
            "socat",
            "-u",
            "-",
            "TCP:10.0.0.2:5001,bind=10.0.0.1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("client.err")).unwrap())
        .spawn()
        .expect("socat client");
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(&data).expect("send to the client");
    stdin.flush().unwrap();
    let start = Instant::now();
    while std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0) < data.len() as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the transfer did not complete: {} of {} bytes",
            std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0),
            data.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sha256_file(&dst),
        format!("{:x}", Sha256::digest(&data)),
        "the data arrived damaged"
    );
    let ss = run_ok(&mut ns.exec(["ss", "-H", "-tin", "state", "established"]));
    drop(stdin);
    let _ = client.wait();
    // Entries: a line `Recv-Q Send-Q LOCAL PEER`, then an indented info line.
    let mut entries = Vec::new();
    let mut lines = ss.lines().peekable();
    while let Some(line) = lines.next() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || line.starts_with(char::is_whitespace) {
            continue;
        }
        let info = match lines.peek() {
            Some(l) if l.starts_with(char::is_whitespace) => lines.next().unwrap().to_string(),
            _ => String::new(),
        };
        if cols[2].ends_with(":5001") || cols[3].ends_with(":5001") {
            entries.push(SsEntry {
                local: cols[2].to_string(),
                info,
            });
        }
    }
    assert_eq!(entries.len(), 2, "both ends of the connection:\n{ss}");
    entries
}

fn tcp_window_clamp_limits_the_window_the_sender_sees(engine: &str) {
    require_root!();
    // The default clamp with one engine, the option with the other.
    let (clamp, args): (u64, &[&str]) = match engine {
        "simple" => (1000, &[]),
        _ => (2000, &["--clamp", "2000"]),
    };
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let ex = Example::start(&ns, &dir, "tcp-window-clamp", engine, args);
    let entries = transfer_and_look(&ns, &dir);
    let (stdout, stderr) = ex.stop();
    for e in &entries {
        assert!(
            e.snd_wnd() <= clamp && e.snd_wnd() > 0,
            "{}: the peer advertised more than {clamp} bytes: {}",
            e.local,
            e.info
        );
        assert!(
            !e.info.contains("wscale:"),
            "window scaling negotiated: {}",
            e.info
        );
    }
    assert!(
        stderr.contains(&format!("TCP windows clamped to {clamp} bytes")),
        "{stderr}"
    );
    let fwd = stage_line(&stdout, "tcp-window-clamp", "tun0", "tun1");
    let back = stage_line(&stdout, "tcp-window-clamp", "tun1", "tun0");
    // The SYN lost its window scale; the SYN-ACK, answering a SYN without one, had none.
    assert_eq!(extra(fwd, "wscale_stripped"), 1, "{fwd}");
    assert_eq!(extra(back, "wscale_stripped"), 0, "{back}");
    // 1 MiB in segments of at most half the window (Linux bounds its MSS so): many clamped.
    assert!(extra(fwd, "clamped") > (1 << 20) / clamp, "{fwd}");
    assert!(extra(back, "clamped") > 100, "{back}");
    assert_eq!(snapshot(&ns), before, "the namespace changed");
}

#[test]
fn without_tcp_window_clamp_the_peer_advertises_a_large_scaled_window() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let up = Up::start(&ns, &dir, "fast", &[], &[]);
    let entries = transfer_and_look(&ns, &dir);
    up.stop(Signal::SIGTERM);
    for e in &entries {
        assert!(e.snd_wnd() > 10_000, "{}: {}", e.local, e.info);
        assert!(e.info.contains("wscale:"), "{}", e.info);
    }
}

// ---------------------------------------------------------------------------------------------
// pass-through
// ---------------------------------------------------------------------------------------------

#[test]
fn pass_through_forwards_everything_and_reports_its_counters() {
    require_root!();
    let (ns, dir) = (NetNs::new(), TestDir::new());
    let before = snapshot(&ns);
    let ex = Example::start(&ns, &dir, "pass-through", "fast", &[]);
    run_ok(&mut ns.exec(["ping", "-n", "-c", "3", "-W", "2", "10.0.0.2"]));
    let entries = transfer_and_look(&ns, &dir);
    let (stdout, stderr) = ex.stop();
    assert!(
        stderr.contains("stage 1: pass-through: forwards every packet unchanged"),
        "{stderr}"
    );
    // It changes nothing: the windows are the kernel's own.
    assert!(entries.iter().all(|e| e.snd_wnd() > 10_000), "{entries:?}");
    let fwd = stage_line(&stdout, "pass-through", "tun0", "tun1");
    let back = stage_line(&stdout, "pass-through", "tun1", "tun0");
    // Not wire-sized: the fast engine's GSO super-packets crossed it whole (1 MiB in packets
    // far larger than the MTU on average).
    assert!(
        count(fwd, "bytes") / count(fwd, "packets") > 1500,
        "super-packets were segmented: {fwd}"
    );
    for line in [fwd, back] {
        assert!(count(line, "packets") >= 3 + 3, "{line}");
        assert_eq!(count(line, "dropped"), 0, "{line}");
        assert_eq!(count(line, "injected"), 0, "{line}");
    }
    assert!(count(fwd, "bytes") > 1 << 20, "{fwd}");
    // The stage saw every packet the relay carried, each way.
    for (from, to, line) in [("tun0", "tun1", fwd), ("tun1", "tun0", back)] {
        assert_eq!(
            count(line, "packets"),
            crate::tun::relayed_packets(&stdout, from, to),
            "{stdout}"
        );
    }
    assert_eq!(snapshot(&ns), before, "the namespace changed");
}
