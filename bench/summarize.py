#!/usr/bin/env python3
"""Turns bench/compare.sh's raw results into the markdown report.

usage: summarize.py RESULTS.jsonl CEILING.jsonl QUICK(0|1) ROUNDS COMMAND WALL_SECONDS LABELS
LABELS: lines "id|label" giving the scenarios' order and names.
"""
import json, statistics, subprocess, sys
raw, ceiling, quick, rounds, cmd, elapsed, labels = sys.argv[1:8]
quick = quick == "1"
order = [l.split("|", 1) for l in labels.strip().splitlines()]
runs = [json.loads(l) for l in open(raw) if l.strip()]
impls = ["rnats"] if quick else ["rnats", "reference"]

def fmt_rate(v):
    if v is None: return "–"
    if v >= 1e6: return f"{v/1e6:.2f} M/s"
    if v >= 1e3: return f"{v/1e3:.1f} k/s"
    return f"{v:.0f}/s"

def fmt_mb(kb):
    return f"{kb/1024:.0f} MiB" if kb else "–"

def sel(impl, sid):
    return [r for r in runs if r["impl"] == impl and r["id"] == sid]

def failed(r):
    b = r["bench"]
    return r["rc"] != 0 or not b or b.get("lost", 0) > 0 or bool(b.get("errors"))

def problems(rs):
    bad = [r for r in rs if failed(r)]
    if not bad: return ""
    errs = [e for r in bad for e in r["bench"].get("errors", [])]
    what = []
    if any(r["bench"].get("lost", 0) > 0 for r in bad):
        pct = sorted(100.0 * r["bench"]["received"] / r["bench"]["expected"]
                     for r in bad if r["bench"].get("expected"))
        what.append(f"lost msgs, received only {pct[0]:.0f}–{pct[-1]:.0f} %" if pct else "lost msgs")
    if any("closed by server" in e for e in errs): what.append("subscriber disconnected by the server")
    if any(not r["bench"] for r in bad): what.append("run failed")
    if not what: what.append("; ".join(errs)[:80])
    return f"{len(bad)}/{len(rs)} runs failed: " + ", ".join(what)

def med(rs, key):
    vals = [key(r["bench"]) for r in rs if not failed(r) and key(r["bench"]) is not None]
    return statistics.median(vals) if vals else None

out = []
p = out.append
date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
ref_ver = ""
p(f"Command: `{cmd}`  ")
p(f"Date: {date}  ")
p(f"Machine: {nproc} CPUs, {cpu}  ")
p(f"Rounds: {rounds} per scenario and server (fresh server process each), servers alternating; wall time {elapsed}s")
p("")
hdr = "| scenario | rnats median | reference median | ratio rnats/ref | rnats peak RSS | ref peak RSS |"
if quick: hdr = "| scenario | rnats median | rnats peak RSS |"
p(hdr)
p("|" + "---|" * (hdr.count("|") - 1))
for sid, label in order:
    if sid == "reqrep":
        metrics = [("p50", lambda b: (b.get("latency_us") or {}).get("p50")),
                   ("p90", lambda b: (b.get("latency_us") or {}).get("p90")),
                   ("p99", lambda b: (b.get("latency_us") or {}).get("p99")),
                   ("p99.9", lambda b: (b.get("latency_us") or {}).get("p99_9")),
                   ("max", lambda b: (b.get("latency_us") or {}).get("max"))]
        rows = [(f"{label}, latency {m} (µs, lower is better)", k, lambda v: f"{v:.1f} µs" if v is not None else "–") for m, k in metrics]
        rows.append((f"{label}, round trips/s", lambda b: b.get("msgs_per_sec"), fmt_rate))
    else:
        rows = [(f"{label} (msgs/s)", lambda b: b.get("msgs_per_sec"), fmt_rate)]
    for i, (name, key, f) in enumerate(rows):
        cells = [name]
        vals = {}
        for impl in impls:
            rs = sel(impl, sid)
            vals[impl] = med(rs, key)
            prob = problems(rs)
            if vals[impl] is None:
                cells.append(f"**FAILED** ({prob})" if i == 0 and prob else "–")
            else:
                cells.append(f(vals[impl]) + (f" ⚠ {prob}" if i == 0 and prob else ""))
        if not quick:
            a, b = vals["rnats"], vals["reference"]
            cells.append(f"{a/b:.2f}" if a and b else "–")
        for impl in impls:
            rss = max((r["rss_kb"] for r in sel(impl, sid)), default=0)
            cells.append(fmt_mb(rss) if i == 0 else "")
        p("| " + " | ".join(cells) + " |")
p("")
p("Throughput: pub-only = messages accepted per second at the publisher (end marked by a PING/PONG);")
p("pub→sub / fan-out / queue = messages received by all subscribers together ÷ (first publish → last receive).")
p("Medians are over the runs that delivered every message; a run that lost messages is reported, not averaged in.")
p("Peak RSS: the highest VmHWM of the server over the rounds of that scenario.")
if any("cpu_s" in r for r in runs):
    p("")
    p("Server CPU time (user+system, from /proc/PID/stat) per run, median; the work is the same for both servers:")
    p("")
    h = "| scenario | " + " | ".join(f"{i} CPU s" for i in impls) + (" | ratio rnats/ref |" if not quick else "")
    p(h)
    p("|" + "---|" * (h.count("|") - 1))
    for sid, label in order:
        meds = {}
        for impl in impls:
            vals = [r["cpu_s"] for r in sel(impl, sid) if not failed(r) and "cpu_s" in r]
            meds[impl] = statistics.median(vals) if vals else None
        cells = [label] + [f"{meds[i]:.2f}" if meds[i] is not None else "–" for i in impls]
        if not quick:
            a, b = meds["rnats"], meds["reference"]
            cells.append(f"{a/b:.2f}" if a and b else "–")
        p("| " + " | ".join(cells) + " |")
cl = [json.loads(l) for l in open(ceiling) if l.strip()]
if cl:
    p("")
    for size in sorted({c["size"] for c in cl}):
        vals = [c["msgs_per_sec"] for c in cl if c["size"] == size]
        errs = sum(1 for c in cl if c["size"] == size and c["errors"])
        p(f"Tool ceiling (rnats-bench `--sink`, pub-only {size} B into a built-in read-and-discard sink, no server): "
          f"median {fmt_rate(statistics.median(vals))} ({statistics.median(vals)*size/1e6:.0f} MB/s) over {len(vals)} runs"
          + (f", {errs} with errors" if errs else ""))
print("\n".join(out))