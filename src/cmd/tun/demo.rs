//! `hostkit tun demo`: the whole tunnel, end to end, inside a private network namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use hostkit_net::{Netlink, SpecInput, Tunnel, TunnelSpec};
use hostkit_tun::{Engine, EngineProfile, PacketLog, Relay};
use sha2::{Digest, Sha256};

use crate::Outcome;
use crate::printer::Printer;
use crate::tunnel::common::{CAP_NET_ADMIN, CAP_SYS_ADMIN, require_capability};

/// The demo's HTTP port on the second address.
const HTTP_PORT: u16 = 8080;
/// How many packet-log lines to keep.
const LOG_KEEP: usize = 400;
/// Bound on every network wait in the demo.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `hostkit tun demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Size of the HTTP transfer, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub size_mib: u32,
    /// Packet-log lines to show.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub show_packets: usize,
    /// Run in this existing named network namespace (`ip netns add NAME`) instead of a private
    /// one, so that another program (tcpdump, a test) can watch the demo from outside. It must
    /// hold no tun0/tun1; everything the demo sets up there is undone at the end.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

/// Runs `hostkit tun demo`.
pub fn run(args: DemoArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    require_capability(CAP_NET_ADMIN, "CAP_NET_ADMIN", "hostkit tun demo")?;
    require_capability(CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "hostkit tun demo")?;
    // Before any thread exists: everything below, threads and child processes included, lives
    // in this namespace, which vanishes with the process. The host is never touched.
    match &args.netns {
        None => {
            hostkit_net::netns::unshare_private()?;
            printer.out("1. created a private network namespace (it vanishes when the demo ends)");
        }
        Some(name) => {
            hostkit_net::netns::enter(name)
                .with_context(|| format!("enter the network namespace {name} (--netns)"))?;
            printer.out(format!(
                "1. entered the network namespace {name} (everything is undone at the end)"
            ));
        }
    }

    let nl = Netlink::connect().context("open a netlink socket")?;
    let lo = nl
        .link_by_name("lo")?
        .ok_or_else(|| anyhow!("no lo in the new namespace"))?;
    nl.set_link_up(lo.index, "lo")?;

    // The demo logs every packet, so the devices are opened without offloads; the host is not
    // tuned (no transmit queue length, priority or interrupt moderation).
    let profile = EngineProfile::untuned(Engine::Fast, PacketLog::Decoded);
    let spec = TunnelSpec::new(SpecInput {
        devs: ["tun0".into(), "tun1".into()],
        table: hostkit_net::DEFAULT_TABLE,
        txqueuelen: profile.txqueuelen(),
        ..Default::default()
    })?;
    let setup = profile.device_setup();
    let tunnel = Tunnel::establish(&nl, &spec, setup, &Default::default(), &mut |_| Ok(()))
        .map_err(|f| anyhow!(f.error).context("set up the tunnel"))?;
    printer.out("2. set up the tunnel, exactly as `hostkit tun up` does:");
    for step in spec.plan(tunnel.created) {
        for cmd in step.commands(None) {
            printer.out(format!("     {cmd}"));
        }
    }

    let log: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let sink_log = log.clone();
    let relay = Relay::start_queues(
        tunnel.queue_pairs(),
        profile.relay_options(Arc::new(move |line: &str| {
            let mut l = sink_log.lock().unwrap_or_else(|p| p.into_inner());
            if l.len() < LOG_KEEP {
                l.push(line.to_string());
            }
        })),
    )?;
    printer.out("3. the relay runs (tun0 <-> tun1), copying every packet");

    let result = traffic(&nl, &args, printer);
    let stats = relay.stats();
    let relay_errors = relay.stop();
    let report = tunnel.teardown(&nl, &[]);
    let (lo_delta, transfer) = result?;
    let failed = hostkit_net::undo::failures(&report);
    ensure!(failed.is_empty(), "teardown failed: {}", failed.join("; "));
    if let Some(e) = relay_errors.into_iter().next() {
        return Err(anyhow!(e).context("the relay failed"));
    }

    printer.out(format!(
        "6. packet log (first {} packets):",
        args.show_packets
    ));
    let lines = log.lock().unwrap_or_else(|p| p.into_inner());
    let shown: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ICMP 10.0.0."))
        .chain(lines.iter().filter(|l| l.contains("TCP ")))
        .take(args.show_packets)
        .collect();
    for line in shown {
        printer.out(format!("     {line}"));
    }
    printer.out("7. relay counters:");
    let snap = stats.snapshot();
    for d in &snap {
        printer.out(format!(
            "     {} -> {}: {} packets, {} bytes, {} write errors",
            d.from, d.to, d.packets, d.bytes, d.write_errors
        ));
    }
    let relayed: u64 = snap.iter().map(|d| d.bytes).sum();
    ensure!(
        relayed >= transfer as u64,
        "the relay counted {relayed} bytes, less than the {transfer}-byte transfer"
    );
    ensure!(
        lo_delta == 0,
        "lo received {lo_delta} packets during the demo: traffic bypassed the relay"
    );
    printer.out(format!(
        "8. verdict: the ping and the HTTP transfer crossed the relay, not lo \
         (relay: {relayed} bytes; lo: {lo_delta} packets received meanwhile)"
    ));
    printer.out(match &args.netns {
        None => "9. tore everything down; the private namespace goes with this process",
        Some(_) => "9. tore everything down",
    });
    Ok(Outcome::Success)
}

/// The ping and the HTTP transfer; returns (packets lo received meanwhile, bytes transferred).
fn traffic(nl: &Netlink, args: &DemoArgs, printer: &Printer) -> anyhow::Result<(u64, usize)> {
    let lo_rx = || -> anyhow::Result<u64> {
        Ok(nl
            .link_by_name("lo")?
            .and_then(|l| l.stats)
            .map(|s| s.rx_packets)
            .unwrap_or(0))
    };
    let lo_before = lo_rx()?;

    let ping = Command::new("ping")
        .args(["-c", "3", "-W", "2", "10.0.0.2"])
        .output()
        .context("run ping (install iputils-ping)")?;
    let text = String::from_utf8_lossy(&ping.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("no summary");
    ensure!(ping.status.success(), "ping 10.0.0.2 failed: {summary}");
    printer.out(format!("4. ping -c 3 10.0.0.2: {summary}"));

    let size = args.size_mib as usize * 1024 * 1024;
    let data = Arc::new(demo_bytes(size));
    let started = Instant::now();
    let got = http_transfer(data.clone())?;
    let secs = started.elapsed().as_secs_f64();
    let want = format!("{:x}", Sha256::digest(&data[..]));
    let have = format!("{:x}", Sha256::digest(&got));
    ensure!(
        have == want,
        "HTTP body damaged: sha256 {have}, expected {want}"
    );
    printer.out(format!(
        "5. HTTP GET http://10.0.0.2:{HTTP_PORT}/blob from 10.0.0.1: {} MiB in {secs:.2} s ({:.0} Mbit/s), sha256 match ({})",
        args.size_mib,
        size as f64 * 8.0 / secs / 1e6,
        &want[..16]
    ));
    Ok((lo_rx()? - lo_before, size))
}

/// Serves `data` once over HTTP on 10.0.0.2 and fetches it from 10.0.0.1.
fn http_transfer(data: Arc<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    let server_addr = SocketAddr::new(IpAddr::from([10, 0, 0, 2]), HTTP_PORT);
    // Binding the moved address works because `up` turned on ip_nonlocal_bind.
    let listener = TcpListener::bind(server_addr).context("bind 10.0.0.2:8080")?;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        listener.set_nonblocking(false)?;
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        for _ in 0..100 {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        )?;
        conn.write_all(&data)?;
        Ok(())
    });
    let mut client =
        TcpStream::connect_timeout(&server_addr, IO_TIMEOUT).context("connect to 10.0.0.2:8080")?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        client,
        "GET /blob HTTP/1.1\r\nHost: 10.0.0.2\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    client
        .read_to_end(&mut response)
        .context("read the HTTP response")?;
    server
        .join()
        .map_err(|_| anyhow!("HTTP server thread panicked"))??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("HTTP error: {}", head.lines().next().unwrap_or(""));
    }
    Ok(response[split + 4..].to_vec())
}

/// Incompressible-looking bytes (xorshift64).
fn demo_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
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
