#!/usr/bin/env python3
"""Turns bench/persist.sh's raw results into the markdown report.

usage: persist_summary.py RESULTS.jsonl ROUNDS COMMAND WALL_SECONDS LABELS LOAD_BEFORE LOAD_AFTER REF_VERSION
LABELS: lines "id|label|impl impl ..." giving the scenarios' order, names and servers.
"""
import json, statistics, subprocess, sys

raw, rounds, cmd, elapsed, labels, load_before, load_after, ref_version = sys.argv[1:9]
order = [l.split("|") for l in labels.strip().splitlines()]
runs = [json.loads(l) for l in open(raw) if l.strip()]

NAMES = {
    "rnats": "rnats (fsync per batch)",
    "js": "JetStream (default)",
    "js-ack": "JetStream, acking consumer",
    "rnats-nosync": "rnats --file_sync false",
    "js-sync": "JetStream sync_interval: always",
    "rnats-sql-pg": "rnats -st SQL, PostgreSQL",
    "rnats-sql-my": "rnats -st SQL, MariaDB",
}


def rate(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v/1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v/1e3:.1f} k/s"
    return f"{v:.0f}/s"


def mib(kb):
    return f"{kb/1024:.0f} MiB" if kb else "–"


def sel(impl, sid):
    return [r for r in runs if r["impl"] == impl and r["id"] == sid]


def failed(r):
    b = r["bench"]
    return r["rc"] != 0 or not b or b.get("aborted") or b.get("errors", 0) > 0 or b.get("gaps", 0) > 0


def med(rs, key):
    vals = [key(r) for r in rs if not failed(r) and key(r) is not None]
    return statistics.median(vals) if vals else None


def peak(rs):
    return max((r["rss_kb"] for r in rs), default=0)


def problems(rs):
    bad = [r for r in rs if failed(r)]
    if not bad:
        return ""
    why = sorted({(r["bench"] or {}).get("aborted") or f"rc={r['rc']}" for r in bad})
    return f" ({len(bad)}/{len(rs)} runs failed: {'; '.join(str(w) for w in why)[:100]})"


def ratio(a, b):
    return f"{a/b:.2f}" if a and b else "–"


out = []
p = out.append
date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
p(f"Command: `{cmd}`  ")
p(f"Date: {date}  ")
p(f"Machine: {nproc} CPUs, {cpu}; load average before/after: {load_before} / {load_after}  ")
p(f"Reference: {ref_version}  ")
p(f"Rounds: {rounds} per scenario and server (fresh server and store directory each), servers alternating; wall time {elapsed}s")
p("")

rps = lambda r: r["bench"].get("msgs_per_sec")

NAMES.update({
    "rnats-enc": "rnats encrypted (AES-256-GCM)",
    "rnats-r3": "rnats 3-node RAFT cluster",
    "js-r3": "JetStream R3 (3 nodes)",
})

# --cluster and --encryption: two servers per scenario, compared side by side.
if any(i.endswith(("-r3", "-enc")) for _, _, impls in order for i in impls.split()):
    p("| scenario | A | A median | B | B median | ratio A/B | A peak RSS | B peak RSS | A CPU s | B CPU s |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for sid, label, impls in order:
        ia, ib = impls.split()[:2]
        a, b = sel(ia, sid), sel(ib, sid)
        ma, mb = med(a, rps), med(b, rps)
        ca = med(a, lambda r: r.get("cpu_s"))
        cb = med(b, lambda r: r.get("cpu_s"))
        p(f"| {label} (msgs/s) | {NAMES.get(ia, ia)} | {rate(ma)}{problems(a)} | {NAMES.get(ib, ib)} | {rate(mb)}{problems(b)} | {ratio(ma, mb)} | {mib(peak(a))} | {mib(peak(b))} | {ca} | {cb} |")
    p("")
    p("Per run (msgs/s): " + "; ".join(
        f"{sid} {imp}: " + ", ".join(rate(rps(r)) for r in sel(imp, sid))
        for sid, _, impls in order for imp in impls.split()))
    print("\n".join(out))
    sys.exit(0)

main = [(sid, label, impls.split()) for sid, label, impls in order if not sid.endswith("-eq")]
eq = [(sid, label, impls.split()) for sid, label, impls in order if sid.endswith("-eq")]

p("**As shipped** (rnats-streaming-server `-st FILE`, file_sync=true by default, vs `nats-server -js`, default sync_interval):")
p("")
p("| scenario | rnats median | JetStream median | ratio rnats/JS | rnats peak RSS | JS peak RSS |")
p("|---|---|---|---|---|---|")
summary = {}
for sid, label, impls in main:
    a, b = sel("rnats", sid), sel("js", sid)
    ma, mb = med(a, rps), med(b, rps)
    summary[(sid, "js")] = (ma, mb, peak(a), peak(b))
    p(f"| {label} (msgs/s) | {rate(ma)}{problems(a)} | {rate(mb)}{problems(b)} | {ratio(ma, mb)} | {mib(peak(a))} | {mib(peak(b))} |")
    if "js-ack" in impls:
        c = sel("js-ack", sid)
        mc = med(c, rps)
        summary[(sid, "js-ack")] = (ma, mc, peak(a), peak(c))
        p(f"| {label}, JetStream consumer acking every message (msgs/s) | {rate(ma)} | {rate(mc)}{problems(c)} | {ratio(ma, mc)} | {mib(peak(a))} | {mib(peak(c))} |")
p("")

lat = lambda q: (lambda r: (r["bench"].get("latency_us") or {}).get(q))
p("Publish ack latency (µs, median over runs of each run's percentile):")
p("")
p("| scenario | rnats p50 | JS p50 | rnats p99 | JS p99 |")
p("|---|---|---|---|---|")
for sid, label, impls in main:
    if sid.startswith("replay"):
        continue
    a, b = sel("rnats", sid), sel("js", sid)
    f = lambda v: f"{v:.0f}" if v is not None else "–"
    p(f"| {label} | {f(med(a, lat('p50')))} | {f(med(b, lat('p50')))} | {f(med(a, lat('p99')))} | {f(med(b, lat('p99')))} |")
p("")

reps = [(sid, label) for sid, label, _ in main if sid.startswith("replay")]
if reps:
    p("Replay set-up (store filled with window 1024, server stopped with SIGTERM and restarted on the same directory):")
    p("")
    p("| scenario | rnats restart to ready | JS restart to ready | rnats store on disk | JS store on disk |")
    p("|---|---|---|---|---|")
    for sid, label in reps:
        a, b = sel("rnats", sid), sel("js", sid)
        ready = lambda rs: med(rs, lambda r: r.get("ready_ms"))
        disk = lambda rs: med(rs, lambda r: r.get("disk_kb"))
        fr = lambda v: f"{v:.0f} ms" if v is not None else "–"
        fd = lambda v: f"{v/1024:.0f} MiB" if v else "–"
        p(f"| {label} | {fr(ready(a))} | {fr(ready(b))} | {fd(disk(a))} | {fd(disk(b))} |")
    p("")

if eq:
    p("**Same durability promise**: the fsync'ing settings face each other, and so do the kernel-only ones:")
    p("")
    p("| scenario | rnats (fsync per batch) | JetStream sync_interval: always | ratio | rnats --file_sync false | JetStream (default) | ratio |")
    p("|---|---|---|---|---|---|---|")
    for sid, label, impls in eq:
        base = sid[:-3]
        a = med(sel("rnats", base), rps)
        b = med(sel("js-sync", sid), rps)
        c = med(sel("rnats-nosync", sid), rps)
        d = med(sel("js", base), rps)
        p(f"| {label} (msgs/s) | {rate(a)} | {rate(b)}{problems(sel('js-sync', sid))} | {ratio(a, b)} | {rate(c)}{problems(sel('rnats-nosync', sid))} | {rate(d)} | {ratio(c, d)} |")
    p("")
    p("(rnats fsync and JetStream default columns are the runs of the table above.)")
    p("")

sql_impls = [i for i in ("rnats-sql-pg", "rnats-sql-my") if any(r["impl"] == i for r in runs)]
if sql_impls:
    p("**SQL store** (rnats-streaming-server `-st SQL`; the database fsyncs every commit, as the FILE store fsyncs every batch; RSS is the streaming server's, not the database's):")
    p("")
    head = "| scenario | rnats FILE |" + "".join(f" {NAMES[i]} | ratio SQL/FILE | RSS |" for i in sql_impls)
    p(head)
    p("|---|---|" + "---|---|---|" * len(sql_impls))
    for sid, label, impls in order:
        if not any(i in impls.split() for i in sql_impls):
            continue
        a = med(sel("rnats", sid), rps)
        row = f"| {label} (msgs/s) | {rate(a)} |"
        for i in sql_impls:
            rs = sel(i, sid)
            m = med(rs, rps)
            row += f" {rate(m)}{problems(rs)} | {ratio(m, a)} | {mib(peak(rs))} |"
        p(row)
    reps_sql = [(sid, label) for sid, label, impls in order if sid.startswith("replay") and any(i in impls.split() for i in sql_impls)]
    if reps_sql:
        p("")
        p("| replay set-up | rnats FILE restart to ready |" + "".join(f" {NAMES[i]} restart to ready |" for i in sql_impls))
        p("|---|---|" + "---|" * len(sql_impls))
        for sid, label in reps_sql:
            ready = lambda rs: med(rs, lambda r: r.get("ready_ms"))
            fr = lambda v: f"{v:.0f} ms" if v is not None else "–"
            p(f"| {label} | {fr(ready(sel('rnats', sid)))} |" + "".join(f" {fr(ready(sel(i, sid)))} |" for i in sql_impls))
    p("")
    p("Goal of issue 16 (windowed publish ≥ 0.3 × the FILE store):")
    p("")
    p("| store | 16 B | 1 KiB | met |")
    p("|---|---|---|---|")
    for i in sql_impls:
        vals = []
        for sid in ("win16", "win1k"):
            a, b = med(sel(i, sid), rps), med(sel("rnats", sid), rps)
            vals.append(a / b if a and b else None)
        shown = " | ".join(f"{v:.2f}" if v is not None else "–" for v in vals)
        ok = all(v is not None and v >= 0.3 for v in vals)
        p(f"| {NAMES[i]} | {shown} | {'yes' if ok else 'no'} |")
    p("")

p("Targets of issue 9:")
p("")
p("| target | measured | met |")
p("|---|---|---|")


def tgt(name, keys, want, lower=False):
    vals = []
    for k in keys:
        s = summary.get(k)
        if not s or not s[0] or not s[1]:
            vals.append(None)
            continue
        vals.append(s[0] / s[1])
    shown = ", ".join(f"{v:.2f}" if v is not None else "–" for v in vals)
    ok = all(v is not None and (v <= want if lower else v >= want) for v in vals)
    p(f"| {name} | {shown} | {'yes' if ok else 'no'} |")


tgt("windowed publish ≥ 1.5 × JetStream (16 B, 1 KiB)", [("win16", "js"), ("win1k", "js")], 1.5)
tgt("replay ≥ 2 × JetStream (16 B, 1 KiB; ack-none consumer)", [("replay16", "js"), ("replay1k", "js")], 2.0)
tgt("replay ≥ 2 × JetStream acking consumer (16 B, 1 KiB)", [("replay16", "js-ack"), ("replay1k", "js-ack")], 2.0)
rss = []
for sid, _, _ in main:
    s = summary.get((sid, "js"))
    if s and s[2] and s[3]:
        rss.append(s[2] / s[3])
p(f"| peak RSS < JetStream (every scenario; rnats/JS) | {', '.join(f'{v:.2f}' for v in rss)} | {'yes' if rss and all(v < 1 for v in rss) else 'no'} |")
p("")
print("\n".join(out))
