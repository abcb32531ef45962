#!/usr/bin/env bash
# Soak of rnats-server (issue #18), in three phases, each on a fresh server:
#
#  1. mixed load for --duration seconds (pub/sub fan-out, a queue group, request/reply,
#     short-lived clients connecting and dropping, a slow consumer every 15 s that never
#     reads) with the server's RSS and open fds sampled from /proc; after the warm-up the
#     growth must stay within the tolerance, the healthy clients must lose nothing, and once
#     every client has left the server must hold no connection and no subscription
#     (rnats-bench soak);
#  2. a million subscriptions from one connection against max_subs = 100,000: exactly that
#     many accepted, the rest refused, all gone once the connection closes;
#  3. the same million without a limit: what they cost the server, and that it gives them back.
#
#   bench/soak-core.sh                        # 10 minutes of load, release build
#   bench/soak-core.sh --duration 3600        # an hour
#   bench/soak-core.sh --duration 90 --debug  # a short check on the debug build
#   bench/soak-core.sh --server-bin PATH      # another server binary (e.g. nats-server)
#   bench/soak-core.sh -- --rate 5000         # anything after -- goes to rnats-bench soak
#                                             # (rates, tolerance: rnats-bench soak --help)
#
# The server runs with max_closed_clients 100 (see soak.conf below), max_pending 8 MiB and
# write_deadline 5 s, so that a slow consumer is
# cut off within seconds. Exit status: 0 when every phase passed, 2 when one failed, 1 on a
# setup error. Logs and reports stay in $SOAK_WORK (default: a temp dir, printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION=600
PROFILE=release
SERVER_BIN=""
FLOOD_SUBS=1000000
FLOOD_LIMIT=100000
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    --debug) PROFILE=debug ;;
    --server-bin) SERVER_BIN="$2"; shift ;;
    --flood-subs) FLOOD_SUBS="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "soak-core.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done

log() { echo "soak-core.sh: $*" >&2; }

log "building rnats-server and rnats-bench ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p rnats-server -p rnats-bench >&2
else
  cargo build -q -p rnats-server -p rnats-bench >&2
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER_BIN="${SERVER_BIN:-$TARGET_DIR/$PROFILE/rnats-server}"
BENCH="$TARGET_DIR/$PROFILE/rnats-bench"

WORK="${SOAK_WORK:-$(mktemp -d /tmp/rnats-soak-core.XXXXXX)}"
mkdir -p "$WORK"
log "work directory: $WORK"

SRV_PID=""
cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then kill -9 "$SRV_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# start_server NAME CONF: starts the server with config CONF; sets SRV_PID, SRV_ADDR, MON_ADDR.
start_server() {
  local name="$1" conf="$2" logf="$WORK/$1.server.log"
  "$SERVER_BIN" -c "$conf" -a 127.0.0.1 -p -1 -m -1 >"$logf" 2>&1 &
  SRV_PID=$!
  SRV_ADDR="" MON_ADDR=""
  for _ in $(seq 1 300); do
    SRV_ADDR="$(grep -o 'Listening for client connections on [0-9.]*:[0-9]*' "$logf" | head -1 | awk '{print $NF}')" || true
    MON_ADDR="$(grep -o 'Starting http monitor on [0-9.]*:[0-9]*' "$logf" | head -1 | awk '{print $NF}')" || true
    [ -n "$SRV_ADDR" ] && [ -n "$MON_ADDR" ] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "$name: the server did not start; log:"; cat "$logf" >&2
  exit 1
}

stop_server() {
  kill "$SRV_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

FAILED=0
# phase NAME CMD...: runs a phase, its report into $WORK/NAME.report; exit 1 (setup) aborts.
phase() {
  local name="$1" rc=0; shift
  "$@" >"$WORK/$name.report" 2>"$WORK/$name.progress" || rc=$?
  cat "$WORK/$name.report"
  if [ "$rc" = 1 ]; then log "$name: setup error:"; tail -5 "$WORK/$name.progress" >&2; exit 1; fi
  if [ "$rc" != 0 ]; then FAILED=1; fi
}

# max_closed_clients 100: the closed-connections ring (/connz?state=closed, 10,000 entries by
# default, each with the connection's details, as the reference keeps them) fills for the
# first ~10,000 short-lived clients, several MiB that would read as growth in a leak check.
cat >"$WORK/soak.conf" <<EOF
max_pending: 8MB
write_deadline: "5s"
max_closed_clients: 100
EOF
cat >"$WORK/limited.conf" <<EOF
max_subscriptions: $FLOOD_LIMIT
EOF
: >"$WORK/unlimited.conf"

echo "# bench/soak-core.sh --duration $DURATION ($PROFILE, $(basename "$SERVER_BIN")), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"

log "phase 1: ${DURATION}s of mixed load"
start_server soak "$WORK/soak.conf"
phase soak "$BENCH" soak --server "$SRV_ADDR" --pid "$SRV_PID" --monitor "$MON_ADDR" \
  --duration "$DURATION" "${EXTRA[@]}"
stop_server

log "phase 2: $FLOOD_SUBS subscriptions against max_subscriptions $FLOOD_LIMIT"
start_server limited "$WORK/limited.conf"
phase flood-limited "$BENCH" subs-flood --server "$SRV_ADDR" --pid "$SRV_PID" --monitor "$MON_ADDR" \
  --subs "$FLOOD_SUBS" --expect "$FLOOD_LIMIT"
stop_server

log "phase 3: $FLOOD_SUBS subscriptions, no limit"
start_server unlimited "$WORK/unlimited.conf"
phase flood-unlimited "$BENCH" subs-flood --server "$SRV_ADDR" --pid "$SRV_PID" --monitor "$MON_ADDR" \
  --subs "$FLOOD_SUBS" --expect "$FLOOD_SUBS"
stop_server

if [ "$FAILED" = 0 ]; then
  log "all phases passed (reports in $WORK)"
else
  log "FAILED (reports in $WORK)"
  exit 2
fi
