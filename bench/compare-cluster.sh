#!/usr/bin/env bash
# Cross-server scenarios side by side: a 2-server cluster of rnats-server against a 2-server
# cluster of the reference nats-server, publishers on server A, subscribers on server B (the
# messages cross the route). Alternates rnats and the reference for N rounds (fresh clusters
# each time) and prints medians, ratios and each cluster's peak RSS (sum of both VmHWM).
#
#   bench/compare-cluster.sh [--rounds N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release -q -p rnats-server -p rnats-bench >&2
REF="$(bash scripts/setup-reference.sh)"
RNATS="$ROOT/target/release/rnats-server"
BENCH="$ROOT/target/release/rnats-bench"
WORK="$(mktemp -d)"
trap 'pkill -P $$ >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start BIN NAME ROUTE_PORT [SEED_ROUTE_PORT] -> prints "pid client_port"
start() {
  local bin=$1 name=$2 rport=$3 seed=${4:-} log="$WORK/$2.log" args
  args=(-a 127.0.0.1 -p -1 -n "$name" --cluster "nats://127.0.0.1:$rport" --cluster_name bench)
  [ -n "$seed" ] && args+=(--routes "nats://127.0.0.1:$seed")
  "$bin" "${args[@]}" 2>"$log" &
  local pid=$! port=""
  for _ in $(seq 1 200); do
    port=$(grep -oE 'Listening for client connections on [0-9.]+:[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "server $name did not start" >&2; exit 1; }
  echo "$pid $port"
}

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

SCENARIOS=(
  "pub A → sub B 16 B|--scenario pubsub --msgs 2000000 --size 16"
  "pub A → sub B 1 KiB|--scenario pubsub --msgs 500000 --size 1024"
  "pub A → queue of 4 on B 16 B|--scenario queue --subs 4 --msgs 2000000 --size 16"
  "request on A, reply on B|--scenario reqrep --msgs 10000"
)
RAW="$WORK/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  for sc in "${SCENARIOS[@]}"; do
    label="${sc%%|*}"; args="${sc#*|}"
    for kind in rnats reference; do
      bin=$RNATS; [ "$kind" = reference ] && bin=$REF
      pa=$(free_port); pb=$(free_port)
      read -r pid_a port_a < <(start "$bin" A "$pa")
      read -r pid_b port_b < <(start "$bin" B "$pb" "$pa")
      # shellcheck disable=SC2086
      out=$("$BENCH" --server "127.0.0.1:$port_a" --sub-server "127.0.0.1:$port_b" $args --json 2>/dev/null || true)
      rss=$(( $(hwm "$pid_a") + $(hwm "$pid_b") ))
      kill "$pid_a" "$pid_b" 2>/dev/null || true
      wait "$pid_a" "$pid_b" 2>/dev/null || true
      printf '%s\t%s\t%s\t%s\n' "$label" "$kind" "$rss" "$out" >>"$RAW"
    done
  done
done

python3 - "$RAW" "$ROUNDS" <<'PY'
import json, statistics, sys, time
rows = {}
for line in open(sys.argv[1]):
    label, kind, rss, out = line.rstrip("\n").split("\t", 3)
    r = rows.setdefault(label, {"rnats": [], "reference": [], "rss": {"rnats": 0, "reference": 0}, "lost": {"rnats": 0, "reference": 0}})
    r["rss"][kind] = max(r["rss"][kind], int(rss))
    try:
        j = json.loads(out)
    except Exception:
        r["lost"][kind] += 1
        continue
    if j.get("lost", 0) or j.get("errors"):
        r["lost"][kind] += 1
        continue
    if j["scenario"] == "reqrep":
        r[kind].append(j["latency_us"]["p50"])
        r.setdefault(kind + "_p99", []).append(j["latency_us"]["p99"])
    else:
        r[kind].append(j["msgs_per_sec"])
print(f"Command: bench/compare-cluster.sh --rounds {sys.argv[2]}  ")
print(f"Date: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}  ")
print("Setup: two servers per cluster on 127.0.0.1, publishers on A, subscribers on B (one route hop)\n")
print("| scenario | rnats median | reference median | ratio rnats/ref | failed runs rnats/ref | peak RSS both servers rnats / ref |")
print("|---|---|---|---|---|---|")
def fmt(v, lat):
    return f"{v:.1f} µs" if lat else (f"{v/1e6:.2f} M/s" if v >= 1e6 else f"{v/1e3:.1f} k/s")
for label, r in rows.items():
    lat = label.startswith("request")
    if not r["rnats"] or not r["reference"]:
        print(f"| {label} | – | – | – | {r['lost']['rnats']}/{r['lost']['reference']} | |")
        continue
    a, b = statistics.median(r["rnats"]), statistics.median(r["reference"])
    name = label + (" p50 latency (lower is better)" if lat else "")
    print(f"| {name} | {fmt(a, lat)} | {fmt(b, lat)} | {a/b:.2f} | {r['lost']['rnats']}/{r['lost']['reference']} | {r['rss']['rnats']//1024} / {r['rss']['reference']//1024} MiB |")
    if lat:
        a99, b99 = statistics.median(r["rnats_p99"]), statistics.median(r["reference_p99"])
        print(f"| {label} p99 latency (lower is better) | {a99:.1f} µs | {b99:.1f} µs | {a99/b99:.2f} | | |")
PY
