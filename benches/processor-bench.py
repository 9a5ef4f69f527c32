#!/usr/bin/env python3
"""Throughput of external processors (`hostkit tun up --processor-exec`): how many packets per
second a program in another language moves, in batch mode and one packet at a time.

Run as root from the repository (after `cargo build --release`):

    python3 benches/processor-bench.py [--runs 3] [--seconds 3] [--json processor-bench.json]

For each configuration it starts `hostkit tun up` (fast engine) in a private network namespace
that it creates and deletes, with `--processor-filter udp` (so the processor sees exactly the
benchmark's datagrams), and measures, interleaved run by run:

  none              no processor: the relay alone (the bound)
  python-batch      examples/processors/drop_every_nth.py (batch 256, window 1024)
  python-per-packet the same with --per-packet (batch 1, window 1: one round trip per packet)
  c-batch           examples/processors/set_ttl.c, compiled with cc (batch 256, window 1024)

the figures: iperf3 UDP with 64-byte datagrams at a fixed 10 kpps and at the most the sender
manages — datagrams that crossed the relay per second (the receiving namespace's UDP counters),
and the packets the processor answered per second
(its `answered` counter, from `tun status --format json`); packets dropped because its queue
was full (`overflow`); the processor's CPU seconds per million packets; ping RTT through it.
drop_every_nth.py runs with N = 10^9, so it drops nothing. A run in which the processor failed
(deadline, garbage) is reported as such. No traffic leaves the namespaces.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
UDP_LEN = 64
FIXED_PPS = 10_000
CONFIGS = ["none", "python-batch", "python-per-packet", "c-batch"]


def sh(*argv, timeout=120, check=True):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         start_new_session=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def processor_cmd(config, c_binary):
    script = os.path.join(ROOT, "examples/processors/drop_every_nth.py")
    python = shutil.which("python3") or "/usr/bin/python3"
    return {
        "none": None,
        "python-batch": f"{python} {script} 1000000000",
        "python-per-packet": f"{python} {script} 1000000000 --per-packet",
        "c-batch": f"{c_binary} 64" if c_binary else None,
    }[config]


class Relay:
    """`hostkit tun up` in its own namespace, with a processor or none."""

    def __init__(self, hostkit, config, cmd, tag, port):
        self.hostkit = hostkit
        self.ns = f"hkp-{tag}-{config}"
        self.port = port
        self.run_dir = f"/run/hostkit-pbench-{tag}-{config}"
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        self.log = tempfile.TemporaryFile("w+")
        argv = [hostkit, "tun", "up", "--netns", self.ns, "--run-dir", self.run_dir]
        if cmd:
            argv += ["--processor-exec", cmd, "--processor-filter", "udp or icmp",
                     "--processor-timeout", "1000"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                     start_new_session=True)
        deadline = time.time() + 15
        while True:
            self.log.seek(0)
            text = self.log.read()
            if "relay running" in text:
                break
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"hostkit tun up ({config}) did not start:\n{text}")
            time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def stage(self):
        """The processor stage's counters (forward direction) from `tun status`."""
        out = sh(self.hostkit, "tun", "status", "--netns", self.ns, "--run-dir", self.run_dir,
                 "--format", "json")
        stages = (json.loads(out).get("relay") or {}).get("stages") or []
        for s in stages:
            if s["name"] == "processor":
                return s["directions"][0]
        return None

    def processor_cpu_s(self):
        """CPU seconds of the relay's child processes (the processor)."""
        total = 0.0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                children = open(f"/proc/{self.proc.pid}/task/{task}/children").read().split()
            except OSError:
                continue
            for pid in children:
                try:
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def failed(self):
        self.log.seek(0)
        lines = [l for l in self.log.read().splitlines() if "failing" in l]
        return lines[0] if lines else None

    def ping(self):
        out = sh(*in_ns(self.ns, "ping", "-q", "-c", "50", "-i", "0.01", "10.0.0.2"))
        line = [l for l in out.splitlines() if "min/avg/max" in l][0]
        return float(line.split("=")[1].split("/")[1])

    def udp_in(self):
        """Datagrams that reached the namespace's UDP layer (read, or dropped by a full
        socket): what crossed the relay (iperf3's own loss figures count late packets as lost
        and lost ones as late)."""
        lines = [l.split() for l in sh(*in_ns(self.ns, "cat", "/proc/net/snmp")).splitlines()
                 if l.startswith("Udp:")]
        row = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
        return row["InDatagrams"] + row["RcvbufErrors"]

    def udp(self, seconds, rate_bps):
        server = subprocess.Popen(
            in_ns(self.ns, "iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", str(self.port)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + 10
            while f":{self.port}" not in sh(*in_ns(self.ns, "ss", "-Hltn")):
                if time.time() > deadline:
                    raise RuntimeError("iperf3 server did not start")
                time.sleep(0.05)
            before, cpu0, in0 = self.stage(), self.processor_cpu_s(), self.udp_in()
            out = sh(*in_ns(self.ns, "iperf3", "-c", "10.0.0.2", "-B", "10.0.0.1",
                            "-p", str(self.port), "-t", str(seconds), "-J", "-u",
                            "-l", str(UDP_LEN), "-b", str(rate_bps)),
                     timeout=seconds + 60)
            # The last verdicts come in after the sender stops.
            time.sleep(0.3)
            after, cpu1, in1 = self.stage(), self.processor_cpu_s(), self.udp_in()
        finally:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        s = json.loads(out)["end"]["sum"]
        fig = {
            "offered_kpps": s["packets"] / s["seconds"] / 1e3,
            "delivered_kpps": (in1 - in0) / s["seconds"] / 1e3,
        }
        if before is not None and after is not None:
            answered = after["extra"].get("answered", 0) - before["extra"].get("answered", 0)
            fig["answered_kpps"] = answered / s["seconds"] / 1e3
            fig["overflow"] = after["extra"].get("overflow", 0) - before["extra"].get("overflow", 0)
            fig["cpu_s_per_mpkt"] = (cpu1 - cpu0) / answered * 1e6 if answered else None
        return fig


def measure(relay, seconds):
    fig = {"rtt_avg_ms": relay.ping()}
    fixed = relay.udp(seconds, FIXED_PPS * UDP_LEN * 8)
    fig["fixed_delivered_kpps"] = fixed["delivered_kpps"]
    top = relay.udp(seconds, 0)
    for k, v in top.items():
        fig[f"max_{k}"] = v
    fig["failed"] = relay.failed()
    return fig


ROWS = [
    ("ping RTT avg (ms)", "rtt_avg_ms"),
    (f"UDP {UDP_LEN} B at {FIXED_PPS // 1000} kpps offered: crossed the relay (kpps)", "fixed_delivered_kpps"),
    (f"UDP {UDP_LEN} B at max: offered (kpps)", "max_offered_kpps"),
    (f"UDP {UDP_LEN} B at max: crossed the relay (kpps)", "max_delivered_kpps"),
    ("processor: packets answered (kpps)", "max_answered_kpps"),
    ("processor: dropped, queue full (overflow)", "max_overflow"),
    ("processor CPU (s per million packets)", "max_cpu_s_per_mpkt"),
]


def fmt(x):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds per iperf3 measurement (3)")
    ap.add_argument("--hostkit", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "hostkit"))
    ap.add_argument("--json", help="write every raw figure here")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)}")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("processor-bench: run as root (it creates network namespaces)")
    for tool in ("iperf3", "ping", "ip"):
        if not shutil.which(tool):
            sys.exit(f"processor-bench: {tool} is missing")
    if not os.access(args.hostkit, os.X_OK):
        sys.exit(f"processor-bench: no hostkit at {args.hostkit} (cargo build --release, or --hostkit)")
    configs = [c for c in args.configs.split(",") if c]
    build = tempfile.mkdtemp(prefix="hkp-")
    c_binary = None
    if "c-batch" in configs:
        c_binary = os.path.join(build, "set_ttl")
        res = subprocess.run(["cc", "-O2", "-o", c_binary,
                              os.path.join(ROOT, "examples/processors/set_ttl.c")],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"processor-bench: no C configuration (cc failed: {res.stderr.strip()})",
                  file=sys.stderr)
            configs.remove("c-batch")
            c_binary = None
    tag = str(os.getpid())
    raw = {c: [] for c in configs}
    try:
        for run in range(args.runs):
            for i, config in enumerate(configs):
                relay = Relay(args.hostkit, config, processor_cmd(config, c_binary), tag,
                              5401 + i)
                try:
                    fig = measure(relay, args.seconds)
                finally:
                    relay.close()
                raw[config].append(fig)
                print(f"run {run + 1}/{args.runs} {config}: "
                      + ", ".join(f"{k} {fmt(v)}" for k, v in fig.items() if v is not None),
                      file=sys.stderr)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    print(f"Medians of {args.runs} runs ({args.seconds} s each), min–max in brackets; fast engine, "
          f"`--processor-filter 'udp or icmp'`; {os.cpu_count()} CPUs.\n")
    print("| figure | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for label, key in ROWS:
        cells = []
        for c in configs:
            vals = [r.get(key) for r in raw[c] if r.get(key) is not None]
            if not vals:
                cells.append("—")
            elif min(vals) == max(vals):
                cells.append(fmt(statistics.median(vals)))
            else:
                cells.append(f"{fmt(statistics.median(vals))} [{fmt(min(vals))}–{fmt(max(vals))}]")
        print(f"| {label} | " + " | ".join(cells) + " |")
    failures = [(c, r["failed"]) for c in configs for r in raw[c] if r.get("failed")]
    for c, why in failures:
        print(f"\nnote: {c}: the processor failed in a run: {why}")
    if args.json:
        summary = {}
        for c in configs:
            summary[c] = {}
            for _, key in ROWS:
                vals = [r.get(key) for r in raw[c] if r.get(key) is not None]
                if vals:
                    summary[c][key] = {"median": statistics.median(vals),
                                       "min": min(vals), "max": max(vals)}
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "seconds": args.seconds, "summary": summary,
                       "raw": raw}, f, indent=2)


if __name__ == "__main__":
    main()
