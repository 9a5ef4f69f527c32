#!/usr/bin/env python3
"""Drops every Nth packet it sees in each direction: a hostkit processor in Python, standard
library only (the protocol: docs/processors.md).

    hostkit tun up --processor-exec 'python3 examples/processors/drop_every_nth.py 3' \\
        --processor-filter 'icmp[icmptype] == icmp-echo'
    ping -c 9 10.0.0.2        # icmp_seq 3, 6 and 9 get no reply

Batch mode by default: hostkit sends up to --batch packets per message and keeps up to
--window awaiting verdicts, so one system call moves many packets. --per-packet asks for one
packet at a time (batch 1, window 1) instead, for comparison (benches/processor-bench.py).

hostkit starts it with the socket on descriptor $HOSTKIT_PROCESSOR_FD (3). With --listen PATH
it serves `hostkit tun up --processor-socket PATH` instead (run it as root: hostkit trusts only
a root-owned socket, in directories only root can change, with a root listener).
"""

import argparse
import os
import socket
import struct
import sys

MAGIC = b"HKPR"
VERSION = 1
HELLO, PACKETS, VERDICTS = 1, 2, 3
FORWARD, DROP, REPLACE, INJECT = 0, 1, 2, 3

PACKET_HEADER = struct.Struct(">QBBHQI")  # id, direction, 0, 0, timestamp (ns), length
VERDICT_HEADER = struct.Struct(">QBBHI")  # id, action, direction, 0, length
LENGTH = struct.Struct(">I")


def read_message(f):
    """The next message as (type, body); None at EOF (hostkit stopped)."""
    head = f.read(5)
    if len(head) < 5:
        return None
    (length,) = LENGTH.unpack_from(head)
    body = f.read(length - 1)
    if len(body) < length - 1:
        return None
    return head[4], body


def message(kind, body):
    return LENGTH.pack(len(body) + 1) + bytes([kind]) + body


def serve(sock, nth, batch, window):
    """Talks to one relay until it hangs up; returns how many packets it dropped."""
    f = sock.makefile("rb", buffering=1 << 20)
    first = read_message(f)
    if first is None:
        return 0
    kind, body = first
    if kind != HELLO or body[:4] != MAGIC:
        sys.exit("drop_every_nth: the relay did not say hello")
    (version,) = struct.unpack_from(">H", body, 4)
    if version != VERSION:
        sys.exit(f"drop_every_nth: the relay speaks version {version}, I speak {VERSION}")
    options = dict(
        line.split("=", 1) for line in body[6:].decode().splitlines() if "=" in line
    )
    print(f"drop_every_nth: dropping 1 packet in {nth} each way on {options.get('dev0')} <-> "
          f"{options.get('dev1')}, batch {batch}, window {window}", file=sys.stderr)
    sock.sendall(message(HELLO, MAGIC + struct.pack(">HII", VERSION, batch, window)
                         + b"drop-every-nth"))
    seen = [0, 0]
    dropped = 0
    unpack_packet = PACKET_HEADER.unpack_from
    pack_verdict = VERDICT_HEADER.pack
    while True:
        msg = read_message(f)
        if msg is None:
            return dropped
        kind, body = msg
        if kind != PACKETS:
            sys.exit(f"drop_every_nth: unexpected message type {kind}")
        (count,) = LENGTH.unpack_from(body)
        out = [LENGTH.pack(count)]
        at = 4
        for _ in range(count):
            pid, direction, _, _, _ts, length = unpack_packet(body, at)
            at += PACKET_HEADER.size + length
            seen[direction] += 1
            if seen[direction] % nth == 0:
                dropped += 1
                out.append(pack_verdict(pid, DROP, 0, 0, 0))
            else:
                out.append(pack_verdict(pid, FORWARD, 0, 0, 0))
        sock.sendall(message(VERDICTS, b"".join(out)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("nth", type=int, nargs="?", default=3, help="drop every NTH packet (3)")
    ap.add_argument("--per-packet", action="store_true",
                    help="one packet at a time (batch 1, window 1)")
    ap.add_argument("--batch", type=int, default=256, help="packets per message (256)")
    ap.add_argument("--window", type=int, default=1024,
                    help="packets awaiting verdicts at once (1024)")
    ap.add_argument("--listen", metavar="PATH",
                    help="serve hostkit's --processor-socket PATH (one relay at a time)")
    args = ap.parse_args()
    if args.nth < 1:
        ap.error("N must be at least 1")
    batch, window = (1, 1) if args.per_packet else (args.batch, args.window)
    try:
        if args.listen:
            os.umask(0o077)
            try:
                os.unlink(args.listen)
            except FileNotFoundError:
                pass
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(args.listen)
            server.listen(1)
            print(f"drop_every_nth: listening on {args.listen}", file=sys.stderr, flush=True)
            while True:
                conn, _ = server.accept()
                with conn:
                    try:
                        serve(conn, args.nth, batch, window)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
        else:
            fd = int(os.environ.get("HOSTKIT_PROCESSOR_FD", "3"))
            sock = socket.socket(fileno=fd)
            dropped = serve(sock, args.nth, batch, window)
            print(f"drop_every_nth: dropped {dropped} packets", file=sys.stderr)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
