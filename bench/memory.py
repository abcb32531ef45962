#!/usr/bin/env python3
"""Memory side by side: RSS of rnats-server and the reference nats-server holding
10,000 idle client connections, and holding 1,000,000 subscriptions.

    python3 bench/memory.py [--conns 10000] [--subs 1000000] [--rounds 3]

Each (scenario, round, server) uses a fresh server on 127.0.0.1 with a random port.
Connections send CONNECT+PING and wait for the PONG; subscriptions are sent over 10
connections as `SUB bench.<i/1000>.<i%1000> <sid>` (a realistic spread of subjects), then a
PING/PONG confirms the server processed them all. RSS is VmRSS from /proc after the load is
in place (and a 1 s settle), peak is VmHWM. Prints a markdown table.
"""
import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(binary):
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", "-1"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    for line in proc.stderr:
        m = re.search(r"Listening for client connections on [0-9.]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))
        if time.time() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{binary} did not report its port")


def mem(pid):
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return rss, hwm


def read_until(sock, token, timeout=60):
    sock.settimeout(timeout)
    data = b""
    while token not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    read_until(s, b"\r\n")
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
    read_until(s, b"PONG\r\n")
    return s


def idle_conns(port, n):
    socks = []
    batch = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        batch.append(s)
        if len(batch) == 200 or i == n - 1:
            for b in batch:
                read_until(b, b"\r\n")
                b.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
            for b in batch:
                read_until(b, b"PONG\r\n")
            socks.extend(batch)
            batch = []
    return socks


def many_subs(port, n):
    conns = [connect(port) for _ in range(10)]
    per = n // len(conns)
    for c, s in enumerate(conns):
        lines = []
        for j in range(per):
            i = c * per + j
            lines.append(f"SUB bench.{i // 1000}.{i % 1000} {j + 1}\r\n")
            if len(lines) == 10000:
                s.sendall("".join(lines).encode())
                lines = []
        if lines:
            s.sendall("".join(lines).encode())
        s.sendall(b"PING\r\n")
    for s in conns:
        read_until(s, b"PONG\r\n", timeout=300)
    return conns


def measure(binary, scenario, count):
    proc, port = start(binary)
    try:
        base, _ = mem(proc.pid)
        held = idle_conns(port, count) if scenario == "conns" else many_subs(port, count)
        time.sleep(1)
        rss, hwm = mem(proc.pid)
        for s in held:
            s.close()
        return base, rss, hwm
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--subs", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rnats", default=os.path.join(ROOT, "target/release/rnats-server"))
    ap.add_argument("--reference", default=os.path.join(ROOT, ".venv/bin/nats-server"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    rows = []
    for scenario, count in (("conns", args.conns), ("subs", args.subs)):
        results = {"rnats": [], "reference": []}
        for _ in range(args.rounds):
            for name, binary in (("rnats", args.rnats), ("reference", args.reference)):
                results[name].append(measure(binary, scenario, count))
        rows.append((scenario, count, results))
    print(f"Command: python3 bench/memory.py --conns {args.conns} --subs {args.subs} --rounds {args.rounds}")
    print(f"Date: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}")
    print()
    print("| held | rnats RSS (MiB) | reference RSS (MiB) | ratio rnats/ref | rnats peak | ref peak |")
    print("|---|---|---|---|---|---|")
    for scenario, count, results in rows:
        label = f"{count:,} idle connections" if scenario == "conns" else f"{count:,} subscriptions"
        med = {k: statistics.median(r[1] for r in v) / 1024 for k, v in results.items()}
        peak = {k: max(r[2] for r in v) / 1024 for k, v in results.items()}
        print(f"| {label} | {med['rnats']:.1f} | {med['reference']:.1f} | {med['rnats'] / med['reference']:.2f} | {peak['rnats']:.1f} | {peak['reference']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
