#!/usr/bin/env python3
"""Side-by-side benchmark of hostkit's TUN relay: its engines against the kernel-only bound, the
cost of its pipeline stages, capture against tcpdump, and impairment accuracy.

Run as root from the repository (after `cargo build --release --workspace --bins --examples`):

    python3 benches/tun-bench.py [--runs 3] [--seconds 3] [--only GROUPS] [--json bench.json]
                                 [--baseline-hostkit PATH]

Groups (`--only engines,stages`; `lab` = capture,impair; default: all):

  engines  veth (two namespaces joined by a veth pair: the kernel alone, no userspace hop),
           `hostkit tun up --engine simple`, the simple offload relay (benches/offload-relay.c,
           built here with gcc, on the routing `hostkit tun up --dry-run --engine fast` prints),
           the same relay batched with io_uring (benches/uring-relay.c, needs liburing-dev; the
           ratio uring/offload) and `--engine fast`: ping RTT, iperf3 TCP with 1 and 4 streams,
           iperf3 UDP with 64-byte datagrams at a fixed offered rate and at the maximum, the
           relay's CPU seconds per GB and per UDP packet (its threads' schedstat), its peak RSS
           (VmHWM), the TUN devices' TX drops and TCP retransmits.
  stages   the fast engine with no stage against a build from before the relay had a pipeline
           (`--baseline-hostkit PATH`: the ratio current/baseline, one run, side by side), and
           against the same build with a no-op stage (the `pass-through` example, taken from
           `--pass-through PATH`, by default `examples/pass-through` beside the hostkit binary):
           ping RTT, TCP 1 and 4 streams with CPU s/GB, relay CPU per packet at 64-byte UDP,
           50 kpps. Build the baseline from `70be1ec~` (the commit before "tun: the relay runs its
           pipeline"), e.g. `git archive 70be1ec~ | tar -x -C DIR` and `cargo build --release`.
  capture  `tun up --pcap FILE` (wire-sized, and `--pcap-raw`) against a relay without capture
           plus `tcpdump -w` on tun0 (tun0 alone sees every packet once: what the kernel sent
           into the tunnel and what the relay wrote back out of it), all writing to a tmpfs
           (by default one the script mounts in a private mount namespace): TCP 1 stream, CPU
           s/GB of relay (+tcpdump), and the packets in each file against the capturer's own
           counters (and, for --pcap, against the kernel's TCP InSegs).
  impair   `--impair` against its spec: `delay 10ms` each way (ICMP echo RTT median, timed to
           the ns, against 20 ms plus the undelayed RTT measured alongside), `loss 10%` one way over 5000 pings
           (against the binomial 99.9 % band), `rate 100mbit` one way (iperf3 TCP goodput
           against 100 Mbit/s less the IP and TCP headers; UDP above the rate as a diagnostic). Where the kernel has sch_netem the
           same specs also run on a veth pair with netem, side by side; otherwise a line says so.

In every run each path of a group is measured in turn (interleaved, the order rotating run by
run, so drift hits all alike). It prints a Markdown table per group of medians (with the
min-max spread) and ratios of medians, and writes all raw figures as JSON. Every program runs in
its own session. No traffic ever leaves the namespaces it created.
"""

import argparse
import ctypes
import datetime
import json
import math
import mmap
import os
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
UDP_FIXED_PPS = 50_000
UDP_LEN = 64
GROUPS = ["engines", "stages", "capture", "impair"]
ALIASES = {"lab": ["capture", "impair"], "speed": ["stages"], "all": GROUPS}
DELAY_MS = 10.0
LOSS_PERCENT = 10.0
LOSS_PINGS = 5000
RATE_MBIT = 100
UDP_RATE_LEN = 1472  # a full-sized datagram: 1500-byte IPv4 packets
UDP_RATE_OFFERED_MBIT = 120
MTU = 1500
# Bytes of a full-sized TCP/IPv4 packet that are not payload: IPv4 20, TCP 20, timestamps 12.
TCP_IP_OVERHEAD = 52
ETH_HEADER = 14

_next_port = [5301]


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


def proc_cpu_s(pid):
    """CPU seconds of a process, all its threads: from their schedstat (ns) where the kernel
    has it, else utime + stime (clock ticks)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        return total / 1e9
    except (FileNotFoundError, ProcessLookupError):
        pass
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def wait_for_text(log, proc, needle, what, timeout=15):
    deadline = time.time() + timeout
    while True:
        log.seek(0)
        text = log.read()
        if needle in text:
            return text
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{what} did not start:\n{text}")
        time.sleep(0.05)


# The final report of `tun up` on stdout: a line per relay direction, a line per stage and
# direction.
DIR_RE = re.compile(r"^(\S+) -> (\S+): (\d+) packets, (\d+) bytes(?:, (\d+) write errors)?")
STAGE_RE = re.compile(r"^(\S+) (\S+) -> (\S+): (\d+) packets, (\d+) bytes, (\d+) dropped(.*)$")


def parse_report(text):
    relay, stages = {}, {}
    for line in text.splitlines():
        m = STAGE_RE.match(line)
        if m:
            extra = {}
            tail = re.search(r"\(([^()]*)\)\s*$", m.group(7))
            if tail:
                for part in tail.group(1).split(","):
                    k, _, v = part.strip().rpartition(" ")
                    if k and v.isdigit():
                        extra[k] = int(v)
            stages.setdefault(m.group(1), {})[f"{m.group(2)}->{m.group(3)}"] = {
                "packets": int(m.group(4)), "bytes": int(m.group(5)),
                "dropped": int(m.group(6)), **extra}
            continue
        m = DIR_RE.match(line)
        if m:
            relay[f"{m.group(1)}->{m.group(2)}"] = {"packets": int(m.group(3)),
                                                     "bytes": int(m.group(4))}
            if m.group(5) is not None:
                relay[f"{m.group(1)}->{m.group(2)}"]["write_errors"] = int(m.group(5))
    return relay, stages


class Relay:
    """`hostkit tun up` (or a program built on it) in a namespace, until stop(). With
    run_dir None, a relay that is not hostkit (the C offload relay): run inside the namespace
    by `ip netns exec`, which execs it in place (its pid is the relay's)."""

    def __init__(self, argv, ns, run_dir):
        if run_dir is None:
            self.argv = in_ns(ns, *argv)
        else:
            self.argv = [*argv, "--netns", ns, "--run-dir", run_dir]
        self.out = tempfile.TemporaryFile("w+")
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=self.log,
                                     start_new_session=True)
        text = wait_for_text(self.log, self.proc, "relay running", " ".join(self.argv))
        self.note = [l for l in text.splitlines() if "relay running" in l][0]

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def peak_rss_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self):
        """Stops it; returns (its relay counters, its stage counters) from the final report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        return parse_report(self.out.read())


class Tcpdump:
    """`tcpdump -w FILE` on a device of a namespace, until stop()."""

    def __init__(self, ns, dev, path, buffer_kib):
        self.log = tempfile.TemporaryFile("w+")
        # -Z root: tcpdump would otherwise drop to its own user before opening the file.
        self.proc = subprocess.Popen(
            in_ns(ns, "tcpdump", "-i", dev, "-n", "-Z", "root", "-B", str(buffer_kib), "-w", path),
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        wait_for_text(self.log, self.proc, "listening on", "tcpdump")
        self.pid = self.proc.pid  # `ip netns exec` execs tcpdump in place

    def drain(self, path, timeout=60):
        """Waits until tcpdump has written what its ring still holds (the file stops growing for
        longer than libpcap's 1 s block timeout, after which the kernel hands over a part-filled
        block): stopped earlier, it would discard what it had not read yet."""
        deadline, last, still = time.time() + timeout, -1, 0
        while time.time() < deadline and still < 8:
            size = os.path.getsize(path)
            still = still + 1 if size == last else 0
            last = size
            time.sleep(0.2)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.log.seek(0)
        stats = {}
        for line in self.log.read().splitlines():
            m = re.match(r"(\d+) packets? (captured|received by filter|dropped by kernel)", line)
            if m:
                stats[m.group(2).replace(" ", "_")] = int(m.group(1))
        return stats


def iperf_cpu_s(result):
    """CPU seconds of both iperf3 processes over the test, from iperf3's own report (its
    getrusage, as a percentage of the test's wall time)."""
    end = result["end"]
    pct = end.get("cpu_utilization_percent", {})
    secs = end["sum_received"]["seconds"]
    return (pct.get("host_total", 0) + pct.get("remote_total", 0)) / 100 * secs


def count_capture(path):
    """Records in a pcap or pcapng file, how many of them are IPv4 TCP, and the largest IPv4
    total length among those, walked block by block (independently of hostkit's writer and
    of tcpdump)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    n = tcp = largest = 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        magic = m[:4]
        if magic == b"\x0a\x0d\x0d\x0a":  # pcapng
            bo = "<" if m[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
            off = 0
            while off + 12 <= size:
                btype, blen = struct.unpack_from(bo + "II", m, off)
                if blen < 12:
                    break
                if btype == 1:  # interface description block: its link type
                    links.append(struct.unpack_from(bo + "H", m, off + 8)[0])
                elif btype == 6:  # enhanced packet block
                    n += 1
                    ifid, _, _, caplen = struct.unpack_from(bo + "IIII", m, off + 8)
                    data = off + 28
                    link = links[ifid] if ifid < len(links) else None
                    ip = data + (20 if link == 276 else 16 if link == 113 else 0)  # SLL2, SLL
                    if caplen >= ip - data + 10 and m[ip] >> 4 == 4 and m[ip + 9] == 6:
                        tcp += 1
                        largest = max(largest, struct.unpack_from(">H", m, ip + 2)[0])
                off += blen
        else:  # classic pcap
            bo = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            link = struct.unpack_from(bo + "I", m, 20)[0]
            hdr = 20 if link == 276 else 16 if link == 113 else 0
            off = 24
            while off + 16 <= size:
                caplen = struct.unpack_from(bo + "I", m, off + 8)[0]
                ip = off + 16 + hdr
                n += 1
                if caplen >= hdr + 10 and m[ip] >> 4 == 4 and m[ip + 9] == 6:
                    tcp += 1
                    largest = max(largest, struct.unpack_from(">H", m, ip + 2)[0])
                off += 16 + caplen
    return n, tcp, largest


def count_with_tcpdump(path):
    """Records as `tcpdump -r FILE | wc -l` counts them."""
    p = subprocess.Popen(["tcpdump", "-r", path, "-n", "-q"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    lines = 0
    while chunk := p.stdout.read(1 << 20):
        lines += chunk.count(b"\n")
    p.wait()
    return lines


# ICMP echo with nanosecond timing: ping prints an RTT of 10 ms or more with one decimal only,
# too coarse against a 0.3 ms tolerance. Like ping, it takes the reply's arrival time from the
# kernel (SO_TIMESTAMPNS) and the kernel answers the echo; it prints the RTTs (ms) as JSON.
ICMP_RTT = r"""
import json, os, select, socket, struct, sys, time
count, interval, dst = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
ident = os.getpid() & 0xFFFF
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF
payload = bytes(56)
sent, rtts = {}, {}
seq, next_send, deadline = 0, time.monotonic(), None
while len(rtts) < count:
    if seq < count and time.monotonic() >= next_send:
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
        pkt = struct.pack("!BBHHH", 8, 0, csum(body), ident, seq) + payload
        sent[seq] = time.clock_gettime_ns(time.CLOCK_REALTIME)
        s.sendto(pkt, (dst, 0))
        seq += 1
        next_send += interval
        if seq == count:
            deadline = time.monotonic() + 2
    if seq == count and time.monotonic() >= deadline:
        break
    wake = next_send if seq < count else deadline
    if not select.select([s], [], [], max(0.0, wake - time.monotonic()))[0]:
        continue
    data, anc, _, _ = s.recvmsg(2048, 256)
    ihl = (data[0] & 0xF) * 4
    typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
    if typ != 0 or rid != ident or rseq not in sent or rseq in rtts:
        continue
    ts = time.clock_gettime_ns(time.CLOCK_REALTIME)
    for level, kind, val in anc:
        if level == socket.SOL_SOCKET and kind == 35:
            sec, nsec = struct.unpack("qq", val[:16])
            ts = sec * 10**9 + nsec
    rtts[rseq] = (ts - sent[rseq]) / 1e6
print(json.dumps({"sent": seq, "rtt_ms": [rtts[k] for k in sorted(rtts)]}))
"""


def tcp_ext(ns, key):
    """A TcpExt counter of the namespace (/proc/net/netstat)."""
    lines = [l.split() for l in sh(*in_ns(ns, "cat", "/proc/net/netstat")).splitlines()
             if l.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))[key])


class Path:
    """One path under test: where the client and server run, and the relay process if any.

    relay_argv: the relay's command line without --netns and --run-dir (None: a veth pair);
    netem: {"veth0": SPEC, "veth1": SPEC} qdiscs on the veth pair; start: start the relay now
    (or leave it to start_relay); replay: a `hostkit tun up` command line whose dry run is
    replayed in the namespace, with the devices made persistent (`ip tuntap add … vnet_hdr`),
    for a relay that is not hostkit (relay_argv then runs inside the namespace, on them)."""

    def __init__(self, name, tag, relay_argv=None, netem=None, start=True, replay=None):
        self.name = name
        self.namespaces = []
        self.relay = None
        self.relay_argv = relay_argv
        self.replay = replay
        self.run_dir = f"/run/hostkit-bench-{tag}"
        self.port = _next_port[0]
        _next_port[0] += 1
        base = f"hkb-{tag}-{len(_all_paths)}"
        _all_paths.append(self)
        if relay_argv is None:
            a, b = f"{base}-a", f"{base}-b"
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
            for dev, spec in (netem or {}).items():
                ns = a if dev == "veth0" else b
                sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", *spec.split())
        else:
            ns = base
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.client_ns = self.server_ns = ns
            if replay:
                self.replayed = replay_dry_run(replay, ns, self.run_dir)
            if start:
                self.start_relay()

    def start_relay(self, extra=()):
        self.relay = Relay([*self.relay_argv, *extra], self.client_ns,
                           None if self.replay else self.run_dir)
        self.relay_note = self.relay.note
        return self.relay

    def stop_relay(self):
        relay, self.relay = self.relay, None
        return relay.stop()

    def close(self):
        if self.relay:
            self.stop_relay()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def relay_cpu_s(self):
        return self.relay.cpu_s() if self.relay else None

    def relay_peak_rss_mb(self):
        return self.relay.peak_rss_mb() if self.relay else None

    def tun_drops(self):
        if not self.relay:
            return 0
        links = json.loads(sh("ip", "-n", self.client_ns, "-s", "-j", "link", "show"))
        return sum(l["stats64"]["tx"]["dropped"] for l in links if l["ifname"].startswith("tun"))

    def ping(self, count=100, interval=0.01):
        out = sh(*in_ns(self.client_ns, "ping", "-n", "-c", str(count), "-i", str(interval),
                        "-W", "2", "10.0.0.2"), timeout=count * interval + 60)
        rtts = [float(m.group(1)) for m in re.finditer(r"time=([\d.]+) ms", out)]
        line = [l for l in out.splitlines() if "min/avg/max" in l][0]
        mn, avg, mx, mdev = (float(x) for x in line.split("=")[1].split()[0].split("/"))
        return {"rtt_avg_ms": avg, "rtt_mdev_ms": mdev, "rtt_median_ms": statistics.median(rtts)}

    def icmp_rtt(self, count=200, interval=0.01):
        out = sh(*in_ns(self.client_ns, sys.executable, "-c", ICMP_RTT, str(count), str(interval),
                        "10.0.0.2"), timeout=count * interval + 60)
        r = json.loads(out)
        return {"rtt_median_ms": statistics.median(r["rtt_ms"]), "rtt_replies": len(r["rtt_ms"])}

    def ping_loss(self, count, interval):
        out = sh(*in_ns(self.client_ns, "ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                        "-W", "1", "10.0.0.2"), timeout=count * interval + 60, check=False)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        return int(m.group(1)), int(m.group(2))

    def iperf(self, seconds, extra, extra_pids=(), settle=None):
        server = subprocess.Popen(
            in_ns(self.server_ns, "iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", str(self.port)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + 10
            while f":{self.port}" not in sh(*in_ns(self.server_ns, "ss", "-Hltn")):
                if time.time() > deadline:
                    raise RuntimeError("iperf3 server did not start")
                time.sleep(0.05)
            pids_cpu = lambda: [proc_cpu_s(p) for p in extra_pids]
            cpu0, extra0, drops0 = self.relay_cpu_s(), pids_cpu(), self.tun_drops()
            out = sh(*in_ns(self.client_ns, "iperf3", "-c", "10.0.0.2", "-B", "10.0.0.1",
                            "-p", str(self.port), "-t", str(seconds), "-J", *extra),
                     timeout=seconds + 60)
            if settle:
                settle()
            cpu1, extra1, drops1 = self.relay_cpu_s(), pids_cpu(), self.tun_drops()
        finally:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        result = json.loads(out)
        cpu = None if cpu0 is None else cpu1 - cpu0 + sum(b - a for a, b in zip(extra0, extra1))
        return result, cpu, drops1 - drops0

    def tcp(self, seconds, streams, extra=(), extra_pids=(), settle=None):
        r, cpu, drops = self.iperf(seconds, ["-P", str(streams), *extra], extra_pids, settle)
        recv = r["end"]["sum_received"]
        gbytes = recv["bytes"] / 1e9
        return {
            "intervals_gbit_s": [i["sum"]["bits_per_second"] / 1e9 for i in r.get("intervals", [])],
            "gbit_s": recv["bits_per_second"] / 1e9,
            "retransmits": r["end"]["sum_sent"].get("retransmits", 0),
            "tun_drops": drops,
            "relay_cpu_s_per_gb": None if cpu is None else cpu / gbytes,
            "all_cpu_s_per_gb": None if cpu is None else (cpu + iperf_cpu_s(r)) / gbytes,
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
        r, cpu, drops = self.iperf(seconds, ["-u", "-l", str(UDP_LEN), "-b", str(rate_bps)])
        (crossed1, sockdrop1) = self.udp_counters()
        s = r["end"]["sum"]
        delivered = s["packets"] - s["lost_packets"]
        crossed = crossed1 - crossed0
        return {
            # the relay's CPU per datagram it carried to the far UDP layer
            "relay_cpu_us_per_pkt": None if cpu is None or not crossed else cpu / crossed * 1e6,
            "offered_pps": s["packets"] / s["seconds"],
            "delivered_pps": delivered / s["seconds"],
            "crossed_pps": crossed / s["seconds"],
            "socket_drops": sockdrop1 - sockdrop0,
            "lost_percent": s.get("lost_percent", 0.0),
            "tun_drops": drops,
        }


_all_paths = []


def replay_dry_run(argv, ns, run_dir):
    """Sets up in `ns` exactly what `argv` (a `hostkit tun up` command line) would — devices,
    addresses, queue lengths, the moved local routes, table, rules, sysctls — by running the
    commands its dry run prints, so that a relay which is not hostkit runs on hostkit's routing.
    The devices are created persistent with a vnet header (`ip tuntap add … vnet_hdr`): the
    relay attaches to them and they go with the namespace. Returns the commands run."""
    out = sh(*argv, "--dry-run", "--netns", ns, "--run-dir", run_dir)
    done = []
    for line in out.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cmd = shlex.split(line)
        # Every line must act inside the namespace: never on the host's own.
        if not (cmd[:3] == ["ip", "-n", ns] or cmd[:4] == ["ip", "-6", "-n", ns]
                or cmd[:4] == ["ip", "netns", "exec", ns]):
            raise RuntimeError(f"dry-run line outside namespace {ns}: {line}")
        if cmd[3:5] == ["tuntap", "add"]:
            cmd.append("vnet_hdr")
        sh(*cmd)
        done.append(shlex.join(cmd))
    return done


def fmt(x):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def summarize(values):
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def cell(s):
    if not s:
        return "—"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def cell3(s):
    """A cell with three decimals (ms figures compared to a fraction of a ms)."""
    if not s:
        return "—"
    return f"{s['median']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def summarize_raw(raw):
    """{path: [run figures]} → {path: {key: summary}}."""
    out = {}
    for name, runs in raw.items():
        keys = []
        for r in runs:
            keys.extend(k for k in r if k not in keys)
        out[name] = {k: summarize([r.get(k) for r in runs]) for k in keys}
    return out


def rotated(names, run):
    k = run % len(names)
    return names[k:] + names[:k]


def run_interleaved(label, paths, runs, measure_one):
    """Measures every path once per run, in an order rotating run by run."""
    raw = {n: [] for n in paths}
    for run in range(runs):
        for name in rotated(list(paths), run):
            print(f"{label}: run {run + 1}/{runs}: {name} …", file=sys.stderr, flush=True)
            raw[name].append(measure_one(name, paths[name], run))
    return raw


def ratio_cell(summary, raw, a, b, key):
    """Ratio of medians a/b, with the range of the per-run (paired) ratios in brackets."""
    sa, sb = summary.get(a, {}).get(key), summary.get(b, {}).get(key)
    if not sa or not sb or not sb["median"]:
        return "—", None
    r = sa["median"] / sb["median"]
    per_run = [x[key] / y[key] for x, y in zip(raw[a], raw[b])
               if x.get(key) is not None and y.get(key)]
    text = f"{r:.3f}×"
    if len(per_run) > 1:
        text += (f" (per run: median {statistics.median(per_run):.3f}×, "
                 f"{min(per_run):.2f}–{max(per_run):.2f})")
    return text, r


# ---------------------------------------------------------------------------------------------
# engines: veth, simple, fast


ENGINE_ROWS = [
    ("ping RTT avg (ms)", "rtt_avg_ms"),
    ("ping RTT mdev (ms)", "rtt_mdev_ms"),
    ("TCP 1 stream (Gbit/s)", "tcp1_gbit_s"),
    ("TCP 1 stream retransmits", "tcp1_retransmits"),
    ("TCP 1 stream TUN drops", "tcp1_tun_drops"),
    ("relay CPU at TCP 1 stream (s/GB)", "tcp1_relay_cpu_s_per_gb"),
    ("TCP 4 streams (Gbit/s)", "tcp4_gbit_s"),
    ("TCP 4 streams retransmits", "tcp4_retransmits"),
    ("TCP 4 streams TUN drops", "tcp4_tun_drops"),
    ("relay CPU at TCP 4 streams (s/GB)", "tcp4_relay_cpu_s_per_gb"),
    (f"UDP {UDP_LEN} B at {UDP_FIXED_PPS // 1000} kpps offered: delivered (kpps)", "udp64_fixed_delivered_kpps"),
    (f"relay CPU per packet at UDP {UDP_LEN} B, {UDP_FIXED_PPS // 1000} kpps (µs)", "udp64_fixed_relay_cpu_us_per_pkt"),
    (f"UDP {UDP_LEN} B at max: offered (kpps)", "udp64_max_offered_kpps"),
    (f"UDP {UDP_LEN} B at max: delivered to iperf3 (kpps)", "udp64_max_delivered_kpps"),
    (f"UDP {UDP_LEN} B at max: crossed to the far UDP layer (kpps)", "udp64_max_crossed_kpps"),
    (f"UDP {UDP_LEN} B at max: dropped by the full receiving socket", "udp64_max_socket_drops"),
    (f"UDP {UDP_LEN} B at max: TUN drops", "udp64_max_tun_drops"),
    (f"relay CPU per packet at UDP {UDP_LEN} B at max (µs)", "udp64_max_relay_cpu_us_per_pkt"),
    ("relay peak RSS (MB)", "relay_peak_rss_mb"),
]


def measure_tcp(path, seconds, fig, streams_list=(1, 4)):
    for streams in streams_list:
        t = path.tcp(seconds, streams)
        fig[f"tcp{streams}_gbit_s"] = t["gbit_s"]
        fig[f"tcp{streams}_retransmits"] = t["retransmits"]
        fig[f"tcp{streams}_relay_cpu_s_per_gb"] = t["relay_cpu_s_per_gb"]
        fig[f"tcp{streams}_tun_drops"] = t["tun_drops"]


def measure_engine(path, seconds):
    fig = {}
    fig.update(path.ping())
    measure_tcp(path, seconds, fig)
    fixed = path.udp(seconds, UDP_FIXED_PPS * UDP_LEN * 8)
    fig["udp64_fixed_delivered_kpps"] = fixed["delivered_pps"] / 1e3
    fig["udp64_fixed_lost_percent"] = fixed["lost_percent"]
    fig["udp64_fixed_relay_cpu_us_per_pkt"] = fixed["relay_cpu_us_per_pkt"]
    top = path.udp(seconds, 0)
    fig["udp64_max_offered_kpps"] = top["offered_pps"] / 1e3
    fig["udp64_max_delivered_kpps"] = top["delivered_pps"] / 1e3
    fig["udp64_max_crossed_kpps"] = top["crossed_pps"] / 1e3
    fig["udp64_max_socket_drops"] = top["socket_drops"]
    fig["udp64_max_tun_drops"] = top["tun_drops"]
    fig["udp64_max_relay_cpu_us_per_pkt"] = top["relay_cpu_us_per_pkt"]
    return fig


# The C relay runs at the fast engine's default nice value (`--nice`, -10 for fast): the same
# priority, so that the two differ only in the relay.
OFFLOAD_NICE = -10


def build_c_relay(outdir, name, libs=(), package=None):
    """Builds benches/NAME.c with gcc into outdir (linked with libs); returns the binary and
    gcc's version line. package: the Debian package holding the headers libs need."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.c")
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit(f"error: gcc not found: the engines group builds the C relay {name} "
                 f"({src}) with it (Debian: apt-get install gcc libc6-dev)")
    binary = os.path.join(outdir, name)
    res = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-o", binary, src, *libs],
                         capture_output=True, text=True)
    if res.returncode != 0:
        hint = ""
        if package and "No such file" in res.stderr:
            hint = (f"\n(its headers come from {package}: apt-get install {package}; "
                    "`.ci/deps` installs it)")
        sys.exit(f"error: gcc could not build {src}:\n{res.stderr.strip()}{hint}")
    if res.stderr.strip():
        print(f"warning: gcc warned on {src}:\n{res.stderr.strip()}", file=sys.stderr)
    return binary, sh(gcc, "--version").splitlines()[0]


def build_offload_relay(outdir):
    """Builds benches/offload-relay.c (see build_c_relay)."""
    return build_c_relay(outdir, "offload-relay")


def build_uring_relay(outdir):
    """Builds benches/uring-relay.c against liburing (see build_c_relay); exits naming
    liburing-dev when its header is missing."""
    if not any(os.path.exists(os.path.join(d, "liburing.h"))
               for d in ("/usr/include", "/usr/local/include")):
        sys.exit("error: liburing.h not found: the engines group builds the C io_uring relay "
                 "(benches/uring-relay.c) against liburing (Debian: apt-get install "
                 "liburing-dev; `.ci/deps` installs it)")
    return build_c_relay(outdir, "uring-relay", ["-luring"], package="liburing-dev")


ENGINE_PATHS = {"veth": "veth (kernel only)", "simple": "hostkit simple",
                "offload": "C offload relay", "uring": "C io_uring relay", "fast": "hostkit fast"}
# uring/offload: does batching several packets per system call (io_uring) beat one read and one
# write per packet, all else equal?
ENGINE_RATIOS = [("fast", "simple"), ("fast", "offload"), ("fast", "veth"), ("uring", "offload")]
# Issue 16's goals for the fast engine: (row key, against, target ratio of medians).
ENGINE_TARGETS = [("tcp4_gbit_s", "offload", 1.05), ("tcp1_gbit_s", "offload", 1.1),
                  ("tcp1_gbit_s", "veth", 0.85)]


def group_engines(args, tag):
    fast = [args.hostkit, "tun", "up", "--engine", "fast"]
    paths = {"veth": Path("veth", tag),
             "simple": Path("simple", tag, [args.hostkit, "tun", "up", "--engine", "simple"]),
             "offload": Path("offload", tag, ["nice", "-n", str(OFFLOAD_NICE), args.offload_relay,
                                              "tun0", "tun1"], replay=fast),
             "uring": Path("uring", tag, ["nice", "-n", str(OFFLOAD_NICE), args.uring_relay,
                                          "tun0", "tun1"], replay=fast),
             "fast": Path("fast", tag, fast)}
    raw = run_interleaved("engines", paths, args.runs,
                          lambda n, p, run: measure_engine(p, args.seconds))
    summary = summarize_raw(raw)
    for name, p in paths.items():
        summary[name]["relay_peak_rss_mb"] = summarize([p.relay_peak_rss_mb()])
    # The C relay's own counters: traffic really crossed it, and how many writes failed.
    offload_counts, _ = paths["offload"].stop_relay()
    uring_relay = paths["uring"].relay
    uring_counts, _ = paths["uring"].stop_relay()
    uring_relay.log.seek(0)
    uring_calls = "; ".join(l.split(": ", 1)[1] for l in uring_relay.log.read().splitlines()
                            if "io_uring_enter calls" in l)
    head = ["figure", *ENGINE_PATHS.values(), *(f"{a}/{b}" for a, b in ENGINE_RATIOS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in ENGINE_ROWS:
        cells = [cell(summary[p].get(key)) for p in paths]
        med = {p: (summary[p].get(key) or {}).get("median") for p in paths}

        def ratio(a, b):
            if med[a] is None or med[b] in (None, 0):
                return "—"
            return f"{med[a] / med[b]:.2f}×"

        lines.append(f"| {label} | {' | '.join(cells)} | "
                     + " | ".join(ratio(a, b) for a, b in ENGINE_RATIOS) + " |")
    verdicts = []
    for key, other, target in ENGINE_TARGETS:
        label = dict((k, l) for l, k in ENGINE_ROWS)[key]
        _, r = ratio_cell(summary, raw, "fast", other, key)
        verdicts.append(target_line(f"engines: {label}, fast / {ENGINE_PATHS[other]}",
                                    with_per_run(raw, "fast", other, key, r), target))
    notes = ["hostkit engines as run: " + "; ".join(
        f"{n}: " + ", ".join(part.strip() for part in paths[n].relay_note.split(" — ")[0].split(";")
                             if part.strip().startswith("engine"))
        for n in ("simple", "fast"))]
    moved = ", ".join(f"{d}: {c['packets']} packets, {c['bytes']} bytes, "
                      f"{c.get('write_errors', 0)} failed writes" for d, c in offload_counts.items())
    notes.append(
        "C offload relay: benches/offload-relay.c, built by this script (`gcc -O2 -Wall -Wextra`, "
        f"{args.offload_relay_gcc}): one thread, select() on both devices opened with "
        "IFF_VNET_HDR and TUNSETOFFLOAD csum|tso4|tso6|tso-ecn, one read then one write of each "
        "super-packet with its 10-byte virtio_net_hdr, nothing else. Its namespace is set up by "
        "replaying `hostkit tun up --dry-run --engine fast` (the same addresses and peers, "
        "addrgenmode none, txqueuelen 5000 as the fast engine sets it, the local routes moved to "
        "table 13, `iif` rules, ip_nonlocal_bind) on persistent single-queue TUN devices (`ip "
        f"tuntap add … vnet_hdr`), and it runs at nice {OFFLOAD_NICE} like the fast engine's "
        f"workers: only the relay differs. It moved {moved}.")
    moved = ", ".join(f"{d}: {c['packets']} packets, {c['bytes']} bytes, "
                      f"{c.get('write_errors', 0)} failed writes" for d, c in uring_counts.items())
    notes.append(
        "C io_uring relay: benches/uring-relay.c, built likewise (`-luring`): the offload "
        "relay on the same devices, setup and priority, but batched — one io_uring "
        "(single-issuer, defer-taskrun, the devices as fixed files, opened blocking), one "
        "multishot read per device into a ring of 32 provided buffers, one io_uring_enter per "
        "turn that submits every queued write and waits for one completion, then reaps every "
        "completion; each direction's writes go as a hard-linked chain, one chain in flight per "
        "direction (the read order kept). uring/offload is the gain of several packets per "
        f"system call. It moved {moved}; over all runs: {uring_calls or 'no call count'} "
        "(a read and a write per packet each complete once).")
    return {"raw": raw, "summary": summary, "offload_relay_counters": offload_counts,
            "uring_relay_counters": uring_counts,
            "offload_setup": paths["offload"].replayed}, lines, notes, verdicts


# ---------------------------------------------------------------------------------------------
# stages: the fast engine with no stage against the baseline build and against a no-op stage


STAGE_ROWS = [
    ("ping RTT median (ms)", "rtt_median_ms", False),
    ("TCP 1 stream (Gbit/s)", "tcp1_gbit_s", True),
    ("relay CPU at TCP 1 stream (s/GB)", "tcp1_relay_cpu_s_per_gb", False),
    ("TCP 1 stream retransmits", "tcp1_retransmits", False),
    ("TCP 4 streams (Gbit/s)", "tcp4_gbit_s", True),
    ("relay CPU at TCP 4 streams (s/GB)", "tcp4_relay_cpu_s_per_gb", False),
    ("TCP 4 streams retransmits", "tcp4_retransmits", False),
    (f"UDP {UDP_LEN} B at {UDP_FIXED_PPS // 1000} kpps: delivered (kpps)", "udp64_fixed_delivered_kpps", False),
    (f"relay CPU per packet at UDP {UDP_LEN} B, {UDP_FIXED_PPS // 1000} kpps (µs)", "udp64_fixed_relay_cpu_us_per_pkt", False),
]


def group_stages(args, tag):
    paths, notes, verdicts = {}, [], []
    if args.baseline_hostkit:
        paths["baseline"] = Path("baseline", tag, [args.baseline_hostkit, "tun", "up", "--engine", "fast"])
    else:
        notes.append("no --baseline-hostkit: the comparison with the fast engine from before the "
                     "pipeline is skipped.")
    paths["fast"] = Path("fast", tag, [args.hostkit, "tun", "up", "--engine", "fast"])
    if os.path.exists(args.pass_through):
        paths["pass-through"] = Path("pass-through", tag, [args.pass_through, "--engine", "fast"])
    else:
        notes.append(f"{args.pass_through} not found: the no-op stage row is skipped (build the "
                     "pass-through example).")

    def measure(name, path, run):
        fig = path.ping()
        measure_tcp(path, args.seconds, fig)
        # Per-packet cost at a fixed load the relay carries whole: small packets, where a
        # per-packet overhead shows most.
        c0 = path.relay_cpu_s()
        u = path.udp(args.seconds, UDP_FIXED_PPS * UDP_LEN * 8)
        c1 = path.relay_cpu_s()
        fig["udp64_fixed_delivered_kpps"] = u["delivered_pps"] / 1e3
        fig["udp64_fixed_relay_cpu_us_per_pkt"] = (c1 - c0) / (u["offered_pps"] * args.seconds) * 1e6
        return fig

    raw = run_interleaved("stages", paths, args.runs, measure)
    summary = summarize_raw(raw)
    base_label = args.baseline_label or "baseline"
    head = ["figure"]
    if "baseline" in paths:
        head.append(f"fast, before the pipeline ({base_label})")
    head.append("fast, no stage")
    if "pass-through" in paths:
        head.append("fast + no-op stage (pass-through)")
    if "baseline" in paths:
        head.append("no stage / before")
    if "pass-through" in paths:
        head.append("no-op stage / no stage")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, is_target in STAGE_ROWS:
        row = [label] + [cell(summary[p].get(key)) for p in paths]
        if "baseline" in paths:
            text, r = ratio_cell(summary, raw, "fast", "baseline", key)
            row.append(text)
            if is_target:
                verdicts.append(target_line(f"stages: {label}, no stage / before the pipeline",
                                            with_per_run(raw, "fast", "baseline", key, r), 0.97))
        if "pass-through" in paths:
            text, r = ratio_cell(summary, raw, "pass-through", "fast", key)
            row.append(text)
            if is_target:
                verdicts.append(target_line(f"stages: {label}, no-op stage / no stage",
                                            with_per_run(raw, "pass-through", "fast", key, r), 0.90))
        lines.append("| " + " | ".join(row) + " |")
    notes.append("ratios are of medians (the targets are judged on them); after them the median "
                 "and range of the per-run ratios (paths measured back to back in each run).")
    notes.append("relay CPU from the threads' schedstat (ns); per packet = relay CPU during the "
                 "UDP run / datagrams offered.")
    notes.append("relays as run: " + "; ".join(f"{n}: {p.relay_note.split(';')[2].strip()}"
                                                for n, p in paths.items()))
    return {"raw": raw, "summary": summary}, lines, notes, verdicts


def with_per_run(raw, a, b, key, r):
    per_run = [x[key] / y[key] for x, y in zip(raw[a], raw[b]) if x.get(key) and y.get(key)]
    return None if r is None else (r, statistics.median(per_run))


def target_line(what, value, target, higher=True):
    if value is None:
        return f"{what}: not measured"
    if isinstance(value, tuple):
        value, per_run = value
        what += f" (per-run median {per_run:.3f})"
    ok = value >= target if higher else value <= target
    return f"{what}: {value:.3f} (target {'≥' if higher else '≤'} {target}) — {'met' if ok else 'MISSED'}"


# ---------------------------------------------------------------------------------------------
# capture: --pcap against tcpdump -w beside a relay without capture


def mount_private_tmpfs(size):
    """A tmpfs in a mount namespace of this process's own (gone when the benchmark ends)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    sh("mount", "--make-rprivate", "/")
    d = tempfile.mkdtemp(prefix="hkb-capture-")
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "hkb-capture", d)
    return d


CAPTURE_ROWS = [
    ("TCP 1 stream (Gbit/s)", "tcp1_gbit_s"),
    ("relay (+tcpdump) CPU at TCP 1 stream (s/GB)", "cpu_s_per_gb"),
    ("CPU of everything at TCP 1 stream: relay, tcpdump, both iperf3 (s/GB)", "all_cpu_s_per_gb"),
    ("… per GB that reached the file (s/GB: what a capture that drops did not pay for)", "all_cpu_s_per_gb_kept"),
    ("TCP 1 stream retransmits", "tcp1_retransmits"),
    ("records in the file", "file_records"),
    ("file size (GB)", "file_gb"),
    ("packets the capturer saw", "seen"),
    ("missing from the file (relay's or stage's packets − records)", "missing"),
    ("largest IPv4 TCP packet in the file (bytes)", "largest_tcp"),
    ("`tcpdump -r FILE | wc -l` − records", "tcpdump_r_diff"),
    ("capture drops (hostkit's capture_drops / tcpdump's 'dropped by kernel')", "capture_drops"),
]


def group_capture(args, tag, capdir):
    names = ["none", "pcap", "pcap-raw", "tcpdump"]
    argv = [args.hostkit, "tun", "up", "--engine", "fast"]
    paths = {n: Path(n, tag, argv, start=False) for n in names}

    def measure(name, path, run):
        f = os.path.join(capdir, f"{name}-{run}.{'pcap' if name == 'tcpdump' else 'pcapng'}")
        extra = {"pcap": ["--pcap", f], "pcap-raw": ["--pcap", f, "--pcap-raw"]}.get(name, [])
        path.start_relay(extra)
        dump = Tcpdump(path.client_ns, "tun0", f, args.tcpdump_buffer_kib) if name == "tcpdump" else None
        try:
            t = path.tcp(args.seconds, 1, extra_pids=[dump.pid] if dump else [],
                         settle=(lambda: dump.drain(f)) if dump else None)
        finally:
            dstats = dump.stop() if dump else {}
            relay, stages = path.stop_relay()
        fig = {"tcp1_gbit_s": t["gbit_s"], "tcp1_retransmits": t["retransmits"],
               "cpu_s_per_gb": t["relay_cpu_s_per_gb"], "all_cpu_s_per_gb": t["all_cpu_s_per_gb"],
               "tun_drops": t["tun_drops"],
               "relay_packets": sum(d["packets"] for d in relay.values())}
        if name != "none":
            records, _, largest = count_capture(f)
            fig["file_records"] = records
            fig["largest_tcp"] = largest
            fig["file_gb"] = os.path.getsize(f) / 1e9
            fig["tcpdump_r_diff"] = count_with_tcpdump(f) - records
            os.unlink(f)
            if name == "tcpdump":
                # tun0 sees every packet the relay moved once: read from tun0 (sent by the
                # kernel) or written to it (by the relay), as the kernel handled it
                # (super-packets whole).
                # Linux libpcap counts the packets it dropped in 'received by filter' too.
                fig["tcpdump_stats"] = dstats
                fig["seen"] = dstats.get("received_by_filter")
                fig["capture_drops"] = dstats.get("dropped_by_kernel")
                fig["missing"] = fig["relay_packets"] - records
                kept = records / fig["relay_packets"] if fig["relay_packets"] else None
                fig["all_cpu_s_per_gb_kept"] = (fig["all_cpu_s_per_gb"] / kept
                                                if kept and fig["all_cpu_s_per_gb"] else None)
                fig["relay_packets_minus_seen"] = fig["relay_packets"] - fig["seen"]
            else:
                cap = stages.get("capture", {})
                fig["seen"] = sum(d["packets"] for d in cap.values())
                fig["captured"] = sum(d.get("captured", 0) for d in cap.values())
                fig["capture_drops"] = sum(d.get("capture_drops", 0) for d in cap.values())
                fig["missing"] = fig["seen"] - records
                kept = records / fig["seen"] if fig["seen"] else None
                fig["all_cpu_s_per_gb_kept"] = (fig["all_cpu_s_per_gb"] / kept
                                                if kept and fig["all_cpu_s_per_gb"] else None)
                fig["relay_packets_minus_records"] = fig["relay_packets"] - records
                fig["captured_minus_records"] = fig["captured"] - records
        return fig

    raw = run_interleaved("capture", paths, args.runs, measure)
    summary = summarize_raw(raw)
    head = ["figure", "relay, no capture", "relay + `--pcap` (wire-sized)",
            "relay + `--pcap --pcap-raw`", "relay + `tcpdump -w` on tun0",
            "`--pcap` / tcpdump", "`--pcap --pcap-raw` / tcpdump", "`--pcap` / no capture"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for label, key in CAPTURE_ROWS:
        row = [label] + [cell(summary[p].get(key)) for p in names]
        if key in ("tcp1_gbit_s", "cpu_s_per_gb", "all_cpu_s_per_gb", "all_cpu_s_per_gb_kept"):
            t1, r1 = ratio_cell(summary, raw, "pcap", "tcpdump", key)
            t3, r3 = ratio_cell(summary, raw, "pcap-raw", "tcpdump", key)
            t2, _ = ratio_cell(summary, raw, "pcap", "none", key)
            row += [t1, t3, t2]
            if key == "tcp1_gbit_s":
                verdicts.append(target_line("capture: TCP 1 stream, --pcap / tcpdump", r1, 1.0))
                verdicts.append(target_line("capture: TCP 1 stream, --pcap --pcap-raw / tcpdump", r3, 1.0))
            else:
                what = {"cpu_s_per_gb": "relay (+tcpdump)", "all_cpu_s_per_gb": "everything",
                        "all_cpu_s_per_gb_kept": "everything, per GB in the file"}[key]
                verdicts.append(target_line(f"capture: CPU s/GB of {what}, --pcap / tcpdump", r1, 1.0, higher=False))
                verdicts.append(target_line(f"capture: CPU s/GB of {what}, --pcap --pcap-raw / tcpdump", r3, 1.0, higher=False))
        else:
            row += ["", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    for n in ("pcap", "pcap-raw", "tcpdump"):
        worst = max((r.get("missing") or 0) for r in raw[n])
        drops = max((r.get("capture_drops") or 0) for r in raw[n])
        verdicts.append(f"capture: {n}: packets missing from the file, worst run: {worst}, "
                        f"capture drops, worst run: {drops} — {'met' if worst == 0 and drops == 0 else 'MISSED'}"
                        + (" (target 0)" if n == "pcap" else ""))
    notes = [
        f"capture files on a tmpfs ({capdir}); each measurement starts its own relay (and "
        "tcpdump), the file is counted after it stopped and then deleted.",
        "tcpdump runs on tun0 only: tun0 already sees every packet once (what the kernel sent "
        "into the tunnel and what the relay wrote back out of it); on tun1 too it would record "
        "each packet twice. It records what the kernel handled — GSO super-packets whole — so "
        "it writes fewer, larger records than the wire-sized `--pcap`, like `--pcap-raw`.",
        "CPU per GB: the relay process, plus tcpdump's for the tcpdump column; the kernel's "
        "copy of each packet into tcpdump's ring is charged to whoever sent it (iperf3 or the "
        "relay), not to tcpdump — so the row 'CPU of everything' adds both iperf3 processes "
        "(their own getrusage, from `iperf3 -J`): what capturing costs wherever it is charged.",
        f"tcpdump runs with `-B {args.tcpdump_buffer_kib}` (KiB): with its default 2 MiB ring it "
        "drops a third of the super-packets at this rate, which would make it cheaper. After "
        "iperf3 ends, tcpdump gets the time to write what its ring still holds (until the file "
        "has not grown for 1.6 s: libpcap's ring hands over a part-filled block after 1 s), and its CPU and the relay's are read after that.",
        "missing: for `--pcap`, the capture stage's packet count − records in the file; for "
        "tcpdump, the relay's packet count (each crossed tun0 once) − records.",
        "'seen': the capture stage's packet counter (hostkit) or tcpdump's 'received by "
        "filter'; records counted by walking the file's blocks. 'largest': the IPv4 total "
        "length of the largest TCP record, read from the file — at most the MTU (1500) when "
        "the records are wire-sized, up to 64 KiB for super-packets.",
    ]
    return {"raw": raw, "summary": summary}, lines, notes, verdicts


# ---------------------------------------------------------------------------------------------
# impair: accuracy of --impair against its spec (and netem, where the kernel has it)


def binomial_band(n, p, conf=0.999):
    """The central `conf` interval [lo, hi] of Binomial(n, p), exact."""
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p) for k in range(n + 1)]
    pmf = [math.exp(x) for x in logs]
    tail = (1 - conf) / 2
    acc, lo = 0.0, 0
    for k, v in enumerate(pmf):
        if acc + v > tail:
            lo = k
            break
        acc += v
    acc, hi = 0.0, n
    for k in range(n, -1, -1):
        if acc + pmf[k] > tail:
            hi = k
            break
        acc += pmf[k]
    return lo, hi


def netem_available(tag):
    ns = f"hkb-{tag}-netem-probe"
    sh("ip", "netns", "add", ns)
    try:
        res = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                             capture_output=True, text=True)
        return res.returncode == 0, res.stderr.strip()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def group_impair(args, tag):
    argv = [args.hostkit, "tun", "up", "--engine", "fast"]
    delay = f"delay {DELAY_MS:g}ms"
    loss = f"tun0->tun1: loss {LOSS_PERCENT:g}%"
    rate = f"tun0->tun1: rate {RATE_MBIT}mbit"
    paths = {"none": Path("none", tag, argv),
             "delay": Path("delay", tag, [*argv, "--impair", delay]),
             "loss": Path("loss", tag, argv, start=False),
             "rate": Path("rate", tag, [*argv, "--impair", rate])}
    has_netem, why = netem_available(tag)
    notes = []
    if has_netem:
        paths["netem-none"] = Path("netem-none", tag)
        paths["netem-delay"] = Path("netem-delay", tag, netem={"veth0": delay, "veth1": delay})
        paths["netem-loss"] = Path("netem-loss", tag, netem={"veth0": f"loss {LOSS_PERCENT:g}%"})
        paths["netem-rate"] = Path("netem-rate", tag, netem={"veth0": f"rate {RATE_MBIT}mbit"})
    else:
        notes.append(f"netem side by side: skipped — this kernel has no sch_netem (`tc qdisc add … "
                     f"netem`: {why or 'failed'}).")
    seed0 = args.seed

    def measure(name, path, run):
        kind = name.removeprefix("netem-")
        fig = {}
        if kind in ("none", "delay"):
            fig.update(path.icmp_rtt(count=200, interval=0.01))
        elif kind == "loss":
            if name == "loss":
                path.start_relay(["--impair", loss, "--seed", str(seed0 + run)])
            try:
                tx, rx = path.ping_loss(LOSS_PINGS, 0.001)
            finally:
                if name == "loss":
                    _, stages = path.stop_relay()
                    d = stages.get("impair", {}).get("tun0->tun1", {})
                    fig["stage_packets"] = d.get("packets")
                    fig["stage_dropped_loss"] = d.get("dropped_loss")
                    fig["seed"] = seed0 + run
            fig["sent"] = tx
            fig["lost"] = tx - rx
            fig["lost_percent"] = 100 * (tx - rx) / tx
        elif kind == "rate":
            rto0 = tcp_ext(path.client_ns, "TCPTimeouts")
            t = path.tcp(args.seconds + 1, 1, extra=["-O", "1"])
            fig["tcp_timeouts"] = tcp_ext(path.client_ns, "TCPTimeouts") - rto0
            fig["goodput_mbit_s"] = t["gbit_s"] * 1e3
            fig["retransmits"] = t["retransmits"]
            fig["intervals_mbit_s"] = [x * 1e3 for x in t["intervals_gbit_s"]]
            # The engine alone, without TCP's congestion control: UDP offered above the rate.
            _, sockdrop0 = path.udp_counters()
            r, _, _ = path.iperf(args.seconds, ["-u", "-l", str(UDP_RATE_LEN), "-b",
                                                f"{UDP_RATE_OFFERED_MBIT}M"])
            _, sockdrop1 = path.udp_counters()
            s = r["end"]["sum_received"]
            # What crossed the path: what iperf3 read, plus what its full socket dropped.
            crossed = s["packets"] - s["lost_packets"] + (sockdrop1 - sockdrop0)
            fig["udp_delivered_mbit_s"] = s["bits_per_second"] / 1e6
            fig["udp_socket_drops"] = sockdrop1 - sockdrop0
            fig["udp_crossed_mbit_s"] = crossed * UDP_RATE_LEN * 8 / s["seconds"] / 1e6
        return fig

    raw = run_interleaved("impair", paths, args.runs, measure)
    summary = summarize_raw(raw)
    lo, hi = binomial_band(LOSS_PINGS, LOSS_PERCENT / 100)
    payload = MTU - TCP_IP_OVERHEAD
    expect = {"": RATE_MBIT * payload / MTU,
              "netem-": RATE_MBIT * payload / (MTU + ETH_HEADER)}
    expect_udp = {"": RATE_MBIT * UDP_RATE_LEN / MTU,
                  "netem-": RATE_MBIT * UDP_RATE_LEN / (MTU + ETH_HEADER)}
    lines = ["| spec | measured | expected | error | target | |", "|---|---|---|---|---|---|"]
    verdicts = []
    for prefix, who in (("", "hostkit `--impair`"), ("netem-", "kernel netem on veth")):
        if f"{prefix}none" not in paths:
            continue
        # delay: per run, the delayed median against 2 × delay + the undelayed median measured
        # alongside.
        errs, got, base = [], [], []
        for dr, nr in zip(raw[f"{prefix}delay"], raw[f"{prefix}none"]):
            got.append(dr["rtt_median_ms"])
            base.append(nr["rtt_median_ms"])
            errs.append(dr["rtt_median_ms"] - (2 * DELAY_MS + nr["rtt_median_ms"]))
        worst = max(errs, key=abs)
        ok = abs(statistics.median(errs)) <= 0.3
        lines.append(f"| {who}: `{delay}` each way, ICMP echo RTT median (ms) | {cell3(summarize(got))} | "
                     f"{2 * DELAY_MS:g} + {cell3(summarize(base))} (undelayed) | "
                     f"{statistics.median(errs):+.3f} (worst run {worst:+.3f}) | ±0.3 ms | "
                     f"{'met' if ok else 'MISSED'} |")
        verdicts.append(f"impair: {who}: delay error per run (ms): "
                        + ", ".join(f"{e:+.3f}" for e in errs)
                        + f"; median {statistics.median(errs):+.3f} — {'met' if ok else 'MISSED'}")
        lost = [r["lost"] for r in raw[f"{prefix}loss"]]
        ok = all(lo <= x <= hi for x in lost)
        lines.append(f"| {who}: `{loss}`, pings lost of {LOSS_PINGS} | {cell(summarize(lost))} | "
                     f"{LOSS_PINGS * LOSS_PERCENT / 100:g} | "
                     f"{', '.join(str(x) for x in lost)} (per run) | 99.9 % band [{lo}, {hi}] | "
                     f"{'met' if ok else 'MISSED'} |")
        verdicts.append(f"impair: {who}: lost per run " + ", ".join(map(str, lost))
                        + f" in [{lo}, {hi}] — {'met' if ok else 'MISSED'}")
        gp = [r["goodput_mbit_s"] for r in raw[f"{prefix}rate"]]
        e = expect[prefix]
        errs = [x / e - 1 for x in gp]
        ok = abs(statistics.median(errs)) <= 0.05
        lines.append(f"| {who}: `{rate}`, TCP goodput (Mbit/s) | {cell(summarize(gp))} | "
                     f"{e:.2f} | {100 * statistics.median(errs):+.2f} % (worst run "
                     f"{100 * max(errs, key=abs):+.2f} %) | ±5 % | {'met' if ok else 'MISSED'} |")
        verdicts.append(f"impair: {who}: rate error per run " + ", ".join(f"{100 * x:+.2f} %" for x in errs)
                        + f"; median {100 * statistics.median(errs):+.2f} % — {'met' if ok else 'MISSED'}"
                        + ("" if all(abs(x) <= 0.05 for x in errs) else " (some runs outside ±5 %)"))
        udp = [r["udp_crossed_mbit_s"] for r in raw[f"{prefix}rate"]]
        e = expect_udp[prefix]
        errs = [x / e - 1 for x in udp]
        lines.append(f"| {who}: `{rate}`, UDP {UDP_RATE_LEN} B offered at {UDP_RATE_OFFERED_MBIT} "
                     f"Mbit/s, crossed (Mbit/s) | {cell(summarize(udp))} | {e:.2f} | "
                     f"{100 * statistics.median(errs):+.2f} % (worst run {100 * max(errs, key=abs):+.2f} %) "
                     f"| (diagnostic) | |")
    sp = [(r.get("stage_packets"), r.get("stage_dropped_loss"), r["sent"], r["lost"], r.get("seed"))
          for r in raw["loss"]]
    notes += [
        f"delay: 200 ICMP echoes at 10 ms intervals per run, median RTT, timed to the ns (the "
        f"script's own echo client: ping prints RTTs of 10 ms or more with one decimal); the "
        f"undelayed RTT is the same "
        f"measurement through a relay without impairment (netem: a veth pair without netem), "
        f"taken in the same run.",
        f"loss: {LOSS_PINGS} pings at 1 ms intervals per run, loss on echo requests only "
        f"(tun0->tun1); the band is the exact central 99.9 % of Binomial({LOSS_PINGS}, "
        f"{LOSS_PERCENT / 100:g}). Seeds {seed0}…{seed0 + args.runs - 1} (`--seed`), a fresh relay "
        f"per run; the impair stage's own count (packets seen, dropped_loss) per run: "
        + "; ".join(f"{a}, {b}" for a, b, *_ in sp) + " (ping: "
        + "; ".join(f"{c} sent, {d} lost" for _, _, c, d, _ in sp) + ").",
        "delay and rate are judged on the median of the runs (the worst run is shown); loss "
        "on every run.",
        f"rate: iperf3 TCP 1 stream, {args.seconds + 1} s with the first second omitted (-O 1, "
        f"slow start); expected goodput = {RATE_MBIT} Mbit/s × {payload}/{MTU} (IPv4 20 + TCP 20 "
        f"+ timestamps 12 bytes of each {MTU}-byte packet; hostkit's rate counts IP packets, "
        f"netem's counts the {ETH_HEADER}-byte Ethernet header too). The UDP row shows the "
        f"engine without TCP's congestion control: {UDP_RATE_LEN}-byte datagrams offered at "
        f"{UDP_RATE_OFFERED_MBIT} Mbit/s, expected {RATE_MBIT} Mbit/s × {UDP_RATE_LEN}/{MTU} "
        f"crossing the path (the excess is dropped at the queue limit); 'crossed' counts what "
        f"iperf3 read plus what its full socket dropped (RcvbufErrors), {args.seconds} s.",
    ]
    return {"raw": raw, "summary": summary, "binomial_band": [lo, hi],
            "expected_goodput_mbit_s": expect, "expected_udp_mbit_s": expect_udp}, lines, notes, verdicts


# ---------------------------------------------------------------------------------------------


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds per iperf3 measurement (default 3)")
    ap.add_argument("--only", default="all",
                    help="comma-separated groups: engines, stages, capture, impair; lab = "
                         "capture,impair; speed = stages (default: all)")
    ap.add_argument("--hostkit", default=f"{target}/release/hostkit", help="hostkit binary")
    ap.add_argument("--baseline-hostkit", metavar="PATH",
                    help="a hostkit binary built from before the relay had a pipeline (stages group)")
    ap.add_argument("--baseline-label", help="what the baseline is, for the table (e.g. a commit)")
    ap.add_argument("--pass-through", metavar="PATH",
                    help="the pass-through example (default: examples/pass-through beside --hostkit)")
    ap.add_argument("--capture-dir", metavar="DIR",
                    help="an existing tmpfs directory for capture files (default: a tmpfs mounted "
                         "in a private mount namespace)")
    ap.add_argument("--capture-tmpfs-size", default="12g", help="size of that tmpfs (default 12g)")
    ap.add_argument("--tcpdump-buffer-kib", type=int, default=131072,
                    help="tcpdump's -B for the capture group (default 131072: 128 MiB, so that "
                         "it keeps up rather than drops)")
    ap.add_argument("--seed", type=int, default=1, help="first --seed of the loss runs (default 1)")
    ap.add_argument("--json", default="bench.json", help="where to write the raw figures")
    args = ap.parse_args()
    groups = []
    for g in args.only.split(","):
        for x in ALIASES.get(g.strip(), [g.strip()]):
            if x not in GROUPS:
                sys.exit(f"error: unknown group {x!r} (groups: {', '.join(GROUPS)}, lab, speed, all)")
            if x not in groups:
                groups.append(x)
    if args.pass_through is None:
        args.pass_through = os.path.join(os.path.dirname(args.hostkit), "examples", "pass-through")
    if os.geteuid() != 0:
        sys.exit("error: the benchmark needs root (network namespaces, TUN devices)")
    if not os.path.exists(args.hostkit):
        sys.exit(f"error: {args.hostkit} not found: run `cargo build --release` first")
    if args.baseline_hostkit and not os.path.exists(args.baseline_hostkit):
        sys.exit(f"error: {args.baseline_hostkit} not found")
    tag = str(os.getpid())
    capdir, mounted = args.capture_dir, False
    if "capture" in groups and not capdir:
        capdir = mount_private_tmpfs(args.capture_tmpfs_size)
        mounted = True
    started = datetime.datetime.now(datetime.timezone.utc)
    output = {"date": started.isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "runs": args.runs, "seconds": args.seconds, "groups": {}}
    md, verdicts = [], []
    builders = {"engines": group_engines, "stages": group_stages,
                "capture": lambda a, t: group_capture(a, t, capdir), "impair": group_impair}
    titles = {"engines": "Engines against the kernel alone",
              "stages": "The pipeline's cost",
              "capture": "Capture: `--pcap` against `tcpdump -w`",
              "impair": "Impairment against its spec"}
    # The C offload relay is built for this run only, into a directory removed at the end.
    builddir = tempfile.mkdtemp(prefix="hkb-offload-relay-")
    try:
        if "engines" in groups:
            args.offload_relay, args.offload_relay_gcc = build_offload_relay(builddir)
            args.uring_relay, _ = build_uring_relay(builddir)
        for g in groups:
            data, lines, notes, vs = builders[g](args, tag)
            output["groups"][g] = {**data, "notes": notes, "verdicts": vs}
            md += [f"### {titles[g]}", "", *lines, "", *(f"- {n}" for n in notes), ""]
            verdicts += vs
            with open(args.json, "w") as f:  # what is measured so far, in case a later group fails
                json.dump(output, f, indent=2)
            for p in _all_paths:
                p.close()
            _all_paths.clear()
        machine = [
            f"{os.cpu_count()} CPUs, kernel {os.uname().release}; "
            f"iperf3 {sh('iperf3', '--version').split()[1]}.",
            f"medians of {args.runs} runs ({args.seconds} s each), spread min–max in brackets.",
            "each program (relay, iperf3 client, iperf3 server, tcpdump) runs in its own session, "
            "so with sched_autogroup "
            f"({open('/proc/sys/kernel/sched_autogroup_enabled').read().strip()} here) each is its "
            "own scheduling group, as independent programs are.",
            "load on the machine during the run: " + open("/proc/loadavg").read().split()[0]
            + " (1-min load average at the end; the machine is shared).",
        ]
        output["notes"] = machine
        output["verdicts"] = verdicts
        print(f"Run {output['date']}: `{output['command']}`\n")
        print("\n".join(f"- {n}" for n in machine) + "\n")
        print("\n".join(md))
        if verdicts:
            print("Targets:\n" + "\n".join(f"- {v}" for v in verdicts))
        with open(args.json, "w") as f:
            json.dump(output, f, indent=2)
        print(f"\nraw figures: {args.json}", file=sys.stderr)
    finally:
        for p in _all_paths:
            p.close()
        # The relays removed their state files; remove the run directory they shared.
        shutil.rmtree(f"/run/hostkit-bench-{tag}", ignore_errors=True)
        shutil.rmtree(builddir, ignore_errors=True)
        if mounted:
            subprocess.run(["umount", capdir], capture_output=True)
            os.rmdir(capdir)


if __name__ == "__main__":
    main()
