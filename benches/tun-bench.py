#!/usr/bin/env python3
"""Side-by-side benchmark of hostkit's TUN relay engines against the kernel-only bound.

Run as root from the repository (after `cargo build --release`):

    python3 benches/tun-bench.py [--runs 3] [--seconds 3] [--json bench.json]

It sets up three paths, each in private network namespaces that it creates and deletes:

  veth    two namespaces joined by a veth pair (the kernel alone: no userspace hop)
  simple  `hostkit tun up --engine simple` (one packet per read/write)
  fast    `hostkit tun up --engine fast` (vnet headers + offloads, epoll, batches, multi-queue)

and, in every run, measures each path in turn (interleaved, so drift hits all alike): ping
RTT, iperf3 TCP with 1 and 4 streams, iperf3 UDP with 64-byte datagrams at a fixed offered
rate and at the maximum, the relay's CPU seconds per GB (from /proc/PID/stat), its peak RSS
(VmHWM), the TUN devices' TX drops and TCP retransmits. It prints a Markdown table of medians
(with the min-max spread) and the ratios fast/simple and fast/veth, and writes all raw
figures as JSON. No traffic ever leaves the namespaces it created.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
UDP_FIXED_PPS = 50_000
UDP_LEN = 64
PATHS = ["veth", "simple", "fast"]


def sh(*argv, timeout=120, check=True):
    # Every program in its own session: with sched_autogroup (the default on desktops and many
    # servers) each session is its own scheduling group, as independent programs would be;
    # sharing one would let the benchmark's own process layout decide who gets the CPU.
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         start_new_session=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


class Path:
    """One path under test: where the client and server run, and the relay process if any."""

    def __init__(self, name, hostkit, tag):
        self.name = name
        self.namespaces = []
        self.relay = None
        self.port = {"veth": 5301, "simple": 5302, "fast": 5303}[name]
        if name == "veth":
            a, b = f"hkb-{tag}-veth-a", f"hkb-{tag}-veth-b"
            for ns in (a, b):
                sh("ip", "netns", "add", ns)
                self.namespaces.append(ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b)
            sh("ip", "-n", a, "address", "add", "10.0.0.1/24", "dev", "veth0")
            sh("ip", "-n", b, "address", "add", "10.0.0.2/24", "dev", "veth1")
            sh("ip", "-n", a, "link", "set", "veth0", "up")
            sh("ip", "-n", b, "link", "set", "veth1", "up")
            self.client_ns, self.server_ns = a, b
        else:
            ns = f"hkb-{tag}-{name}"
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.client_ns = self.server_ns = ns
            # An unnamed temporary file (deleted when closed): no fixed path anywhere.
            self.log = tempfile.TemporaryFile("w+")
            self.relay = subprocess.Popen(
                [hostkit, "tun", "up", "--netns", ns, "--engine", name,
                 "--run-dir", f"/run/hostkit-bench-{tag}"],
                stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
            deadline = time.time() + 15
            while True:
                self.log.seek(0)
                text = self.log.read()
                if "relay running" in text:
                    self.relay_note = text.strip().splitlines()[0]
                    break
                if self.relay.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"hostkit tun up ({name}) did not start:\n{text}")
                time.sleep(0.05)

    def close(self):
        if self.relay and self.relay.poll() is None:
            self.relay.send_signal(signal.SIGTERM)
            try:
                self.relay.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.relay.kill()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def relay_cpu_s(self):
        if not self.relay:
            return None
        fields = open(f"/proc/{self.relay.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def relay_peak_rss_mb(self):
        if not self.relay:
            return None
        for line in open(f"/proc/{self.relay.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def tun_drops(self):
        if not self.relay:
            return 0
        links = json.loads(sh("ip", "-n", self.client_ns, "-s", "-j", "link", "show"))
        return sum(l["stats64"]["tx"]["dropped"] for l in links if l["ifname"].startswith("tun"))

    def ping(self, count=100):
        out = sh(*in_ns(self.client_ns, "ping", "-q", "-c", str(count), "-i", "0.01", "10.0.0.2"))
        line = [l for l in out.splitlines() if "min/avg/max" in l][0]
        mn, avg, mx, mdev = (float(x) for x in line.split("=")[1].split()[0].split("/"))
        return {"rtt_avg_ms": avg, "rtt_mdev_ms": mdev}

    def iperf(self, seconds, extra):
        server = subprocess.Popen(
            in_ns(self.server_ns, "iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", str(self.port)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + 10
            while f":{self.port}" not in sh(*in_ns(self.server_ns, "ss", "-Hltn")):
                if time.time() > deadline:
                    raise RuntimeError("iperf3 server did not start")
                time.sleep(0.05)
            cpu0, drops0 = self.relay_cpu_s(), self.tun_drops()
            out = sh(*in_ns(self.client_ns, "iperf3", "-c", "10.0.0.2", "-B", "10.0.0.1",
                            "-p", str(self.port), "-t", str(seconds), "-J", *extra),
                     timeout=seconds + 60)
            cpu1, drops1 = self.relay_cpu_s(), self.tun_drops()
        finally:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        result = json.loads(out)
        cpu = None if cpu0 is None else cpu1 - cpu0
        return result, cpu, drops1 - drops0

    def tcp(self, seconds, streams):
        r, cpu, drops = self.iperf(seconds, ["-P", str(streams)])
        recv = r["end"]["sum_received"]
        gbytes = recv["bytes"] / 1e9
        return {
            "gbit_s": recv["bits_per_second"] / 1e9,
            "retransmits": r["end"]["sum_sent"].get("retransmits", 0),
            "tun_drops": drops,
            "relay_cpu_s_per_gb": None if cpu is None else cpu / gbytes,
        }

    def udp_counters(self):
        """UDP datagrams that reached the server namespace's UDP layer, and those of them its
        receiving socket had to drop (buffer full: the application was too slow)."""
        lines = [l.split() for l in sh(*in_ns(self.server_ns, "cat", "/proc/net/snmp")).splitlines()
                 if l.startswith("Udp:")]
        row = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
        return row["InDatagrams"] + row["RcvbufErrors"], row["RcvbufErrors"]

    def udp(self, seconds, rate_bps):
        (crossed0, sockdrop0) = self.udp_counters()
        r, _, drops = self.iperf(seconds, ["-u", "-l", str(UDP_LEN), "-b", str(rate_bps)])
        (crossed1, sockdrop1) = self.udp_counters()
        s = r["end"]["sum"]
        delivered = s["packets"] - s["lost_packets"]
        return {
            "offered_pps": s["packets"] / s["seconds"],
            "delivered_pps": delivered / s["seconds"],
            "crossed_pps": (crossed1 - crossed0) / s["seconds"],
            "socket_drops": sockdrop1 - sockdrop0,
            "lost_percent": s.get("lost_percent", 0.0),
            "tun_drops": drops,
        }


def measure(path, seconds):
    fig = {}
    fig.update(path.ping())
    tcp1 = path.tcp(seconds, 1)
    fig["tcp1_gbit_s"] = tcp1["gbit_s"]
    fig["tcp1_retransmits"] = tcp1["retransmits"]
    fig["tcp1_relay_cpu_s_per_gb"] = tcp1["relay_cpu_s_per_gb"]
    fig["tcp1_tun_drops"] = tcp1["tun_drops"]
    tcp4 = path.tcp(seconds, 4)
    fig["tcp4_gbit_s"] = tcp4["gbit_s"]
    fig["tcp4_retransmits"] = tcp4["retransmits"]
    fig["tcp4_tun_drops"] = tcp4["tun_drops"]
    fixed = path.udp(seconds, UDP_FIXED_PPS * UDP_LEN * 8)
    fig["udp64_fixed_delivered_kpps"] = fixed["delivered_pps"] / 1e3
    fig["udp64_fixed_lost_percent"] = fixed["lost_percent"]
    top = path.udp(seconds, 0)
    fig["udp64_max_offered_kpps"] = top["offered_pps"] / 1e3
    fig["udp64_max_delivered_kpps"] = top["delivered_pps"] / 1e3
    fig["udp64_max_crossed_kpps"] = top["crossed_pps"] / 1e3
    fig["udp64_max_socket_drops"] = top["socket_drops"]
    fig["udp64_max_tun_drops"] = top["tun_drops"]
    return fig


ROWS = [
    ("ping RTT avg (ms)", "rtt_avg_ms", "lower"),
    ("ping RTT mdev (ms)", "rtt_mdev_ms", "lower"),
    ("TCP 1 stream (Gbit/s)", "tcp1_gbit_s", "higher"),
    ("TCP 1 stream retransmits", "tcp1_retransmits", "lower"),
    ("TCP 1 stream TUN drops", "tcp1_tun_drops", "lower"),
    ("relay CPU at TCP 1 stream (s/GB)", "tcp1_relay_cpu_s_per_gb", "lower"),
    ("TCP 4 streams (Gbit/s)", "tcp4_gbit_s", "higher"),
    ("TCP 4 streams retransmits", "tcp4_retransmits", "lower"),
    ("TCP 4 streams TUN drops", "tcp4_tun_drops", "lower"),
    (f"UDP {UDP_LEN} B at {UDP_FIXED_PPS // 1000} kpps offered: delivered (kpps)", "udp64_fixed_delivered_kpps", "higher"),
    (f"UDP {UDP_LEN} B at max: offered (kpps)", "udp64_max_offered_kpps", "higher"),
    (f"UDP {UDP_LEN} B at max: delivered to iperf3 (kpps)", "udp64_max_delivered_kpps", "higher"),
    (f"UDP {UDP_LEN} B at max: crossed to the far UDP layer (kpps)", "udp64_max_crossed_kpps", "higher"),
    (f"UDP {UDP_LEN} B at max: dropped by the full receiving socket", "udp64_max_socket_drops", "lower"),
    (f"UDP {UDP_LEN} B at max: TUN drops", "udp64_max_tun_drops", "lower"),
    ("relay peak RSS (MB)", "relay_peak_rss_mb", "lower"),
]


def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def table(summary, runs, seconds, notes):
    lines = [
        f"Medians of {runs} runs ({seconds} s each), spread min–max in brackets; "
        "ratios of medians.",
        "",
        "| figure | veth (kernel only) | hostkit simple | hostkit fast | fast/simple | fast/veth |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, _ in ROWS:
        cells, med = [], {}
        for p in PATHS:
            s = summary[p].get(key)
            med[p] = s["median"] if s else None
            cells.append("—" if not s else
                         fmt(s["median"]) if s["min"] == s["max"] else
                         f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]")

        def ratio(a, b):
            if med[a] is None or med[b] in (None, 0):
                return "—"
            return f"{med[a] / med[b]:.2f}×"

        lines.append(f"| {label} | {' | '.join(cells)} | {ratio('fast', 'simple')} | {ratio('fast', 'veth')} |")
    lines.append("")
    lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds per iperf3 measurement (default 3)")
    ap.add_argument("--hostkit", default="target/release/hostkit", help="hostkit binary")
    ap.add_argument("--json", default="bench.json", help="where to write the raw figures")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: the benchmark needs root (network namespaces, TUN devices)")
    if not os.path.exists(args.hostkit):
        sys.exit(f"error: {args.hostkit} not found: run `cargo build --release` first")
    tag = str(os.getpid())
    paths = {}
    try:
        for name in PATHS:
            paths[name] = Path(name, args.hostkit, tag)
        raw = {p: [] for p in PATHS}
        for run in range(args.runs):
            for name in PATHS:
                print(f"run {run + 1}/{args.runs}: {name} …", file=sys.stderr, flush=True)
                raw[name].append(measure(paths[name], args.seconds))
        summary = {}
        for name in PATHS:
            keys = raw[name][0].keys()
            summary[name] = {k: summarize([r[k] for r in raw[name]]) for k in keys}
            summary[name]["relay_peak_rss_mb"] = summarize([paths[name].relay_peak_rss_mb()])
        notes = [
            f"{os.cpu_count()} CPUs, kernel {os.uname().release}; "
            f"iperf3 {sh('iperf3', '--version').split()[1]}.",
            "hostkit engines as run: " + "; ".join(
                f"{n}: " + ", ".join(
                    part.strip() for part in paths[n].relay_note.split(" — ")[0].split(";")
                    if part.strip().startswith("engine"))
                for n in ("simple", "fast")),
            "each program (relay, iperf3 client, iperf3 server) runs in its own session, so with "
            f"sched_autogroup ({open('/proc/sys/kernel/sched_autogroup_enabled').read().strip()} "
            "here) each is its own scheduling group, as independent programs are.",
            "load on the machine during the run: " + open("/proc/loadavg").read().split()[0]
            + " (1-min load average at the end; the machine is shared).",
            "CPU per GB counts every relay thread (utime+stime of the hostkit process).",
            "UDP 'crossed' counts datagrams that reached the receiving namespace's UDP layer "
            "(InDatagrams + RcvbufErrors from /proc/net/snmp): what the path carried, whether "
            "or not the receiving iperf3 kept up; 'delivered' is what iperf3 read.",
        ]
        md = table(summary, args.runs, args.seconds, notes)
        print(md)
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "seconds": args.seconds, "raw": raw,
                       "summary": summary, "notes": notes}, f, indent=2)
        print(f"\nraw figures: {args.json}", file=sys.stderr)
    finally:
        for p in paths.values():
            p.close()
        # The relays removed their state files; remove the run directory they shared.
        shutil.rmtree(f"/run/hostkit-bench-{tag}", ignore_errors=True)


if __name__ == "__main__":
    main()
