#!/usr/bin/env bash
# Persistence side by side: rnats-streaming-server's file store vs the reference nats-server's
# JetStream file store, driven by rnats-stream-bench, and a markdown report (command, date,
# machine, medians, ratios, peak RSS, targets of issue 9).
#
#   bench/persist.sh                 # 3 rounds, every scenario, both durability settings
#   bench/persist.sh --rounds 5
#   bench/persist.sh --defaults-only # only the servers as shipped (no fsync variants)
#   bench/persist.sh --quick         # smoke run: tiny counts, 1 round
#   bench/persist.sh --only replay16,replay1k   # only these scenario ids (see SCENARIOS)
#   bench/persist.sh --out FILE      # also write the report to FILE
#   bench/persist.sh --cluster       # 3-node clusters: rnats RAFT vs JetStream R3 (see below)
#   bench/persist.sh --cluster --client-on-follower   # rnats' clients on a follower's node
#   bench/persist.sh --encryption    # rnats plain vs encrypted at rest (AES-256-GCM)
#   bench/persist.sh --no-sql        # without the SQL store rows
#   bench/persist.sh --only win16,win1k,replay16,replay1k --sql-only   # only the SQL comparison
#
# Servers (each run: a fresh process on a fresh store directory):
#   rnats         rnats-streaming-server -cid test-cluster -st FILE --dir D -a 127.0.0.1 -p -1
#                 (file_sync=true, the default: PubAcks only after fdatasync of the batch)
#   js            nats-server -js -sd D -a 127.0.0.1 -p -1
#                 (default sync_interval 2 min: PubAcks after the write to the kernel)
#   rnats-nosync  rnats-streaming-server ... --file_sync=false   (kernel only, as js)
#   js-sync       nats-server -c js.conf with jetstream { sync_interval: always }  (fsync, as rnats)
#   js-ack        js, replay with an explicitly acking consumer (every message acked, as a
#                 streaming subscriber must)
#   rnats-enc     rnats with --encrypt (key from NATS_STREAMING_ENCRYPTION_KEY; AES-256-GCM)
#   rnats-r3      (--cluster) three rnats-streaming-server --clustered nodes, each embedding a
#                 NATS server, the three routed together; RAFT log not fsynced (cluster_sync
#                 off, the reference's default): a PubAck means a quorum has the message
#   js-r3         (--cluster) three nats-server -js routed as cluster "jsc", stream with 3
#                 replicas (sync_interval default: no fsync before the ack)
#                 The clients connect to node 1; peak RSS is the sum of the three processes.
#                 A fresh rnats cluster elects node 1 (the first peer by name bootstraps
#                 first), so its clients sit on the leader's node; the tool moves
#                 JetStream's stream leader to node 1 too (--js-leader n0: a stepdown with
#                 that server preferred). --client-on-follower puts both leaders away from
#                 the clients' node: rnats' clients connect to a follower's node, and
#                 JetStream's stream leader goes to node 2 (every client message then
#                 crosses a route on both).
#   rnats-sql-pg  rnats-streaming-server -st SQL --sql_driver postgres --sql_source S ...
#   rnats-sql-my  rnats-streaming-server -st SQL --sql_driver mysql --sql_source S ...
#                 (windowed publish and replay only.) The script starts one PostgreSQL and one
#                 MariaDB server itself (`rnats-stream-bench db --durable`: the system's
#                 packages, a temp directory, a free loopback port, commits fsync'ed as the
#                 FILE store's batches are), a fresh database with --sql_create_schema per run.
#                 Peak RSS and CPU are the streaming server's only, not the database's.
#                 RNATS_SQL_ARGS adds flags to both (e.g. "--sql_bulk_insert_limit 256").
# Scenarios: acked publish, synchronous (window 1) and windowed (256 outstanding), 16 B and
# 1 KiB, each for a fixed time; replay of a whole channel/stream (16 B and 1 KiB): fill it
# (unmeasured, window 1024), stop the server (SIGTERM), start it again on the same directory
# (time to ready is recorded), then read everything from the first sequence.
# Implementations alternate within each round. Peak RSS = VmHWM of the measured server process
# read from /proc just before it is stopped. After every stop the script runs `sync`, so no
# run pays for the writeback of data an earlier one left dirty. Raw results: $BENCH_WORK (default a temp dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS=3
QUICK=0
DEFAULTS_ONLY=0
SQL=1
SQL_ONLY=0
OUT=""
ONLY=""
CLUSTER=0
CLIENT_ON_FOLLOWER=0
ENCRYPTION=0
ARGS_ORIG="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    --quick) QUICK=1 ;;
    --defaults-only) DEFAULTS_ONLY=1 ;;
    --no-sql) SQL=0 ;;
    --sql-only) SQL_ONLY=1 ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#*=}" ;;
    --cluster) CLUSTER=1 ;;
    --client-on-follower) CLIENT_ON_FOLLOWER=1 ;;
    --encryption) ENCRYPTION=1 ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    *) echo "persist.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
[ "$QUICK" = 1 ] && ROUNDS=1

log() { echo "persist.sh: $*" >&2; }

log "building rnats-streaming-server and rnats-stream-bench (release)"
cargo build --release -q -p rnats-streaming-server -p rnats-stream-bench >&2
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STAN_BIN="$TARGET_DIR/release/rnats-streaming-server"
BENCH="$TARGET_DIR/release/rnats-stream-bench"
REF="$(bash scripts/setup-reference.sh)"

WORK="${BENCH_WORK:-$(mktemp -d /tmp/rnats-persist.XXXXXX)}"
mkdir -p "$WORK"
RAW="$WORK/results.jsonl"
: >"$RAW"

if [ "$QUICK" = 1 ]; then
  PUB_SECS=0.5; SYNC_SECS=0.5; FILL16=20000; FILL1K=5000
else
  PUB_SECS=3; SYNC_SECS=3; FILL16=300000; FILL1K=100000
fi

# The cluster and encryption comparisons run on their own, without the SQL rows.
if [ "$CLUSTER" = 1 ] || [ "$ENCRYPTION" = 1 ]; then SQL=0; fi
# The SQL store's servers join the windowed publish and replay scenarios.
SQLI=""
[ "$SQL" = 1 ] && SQLI=" rnats-sql-pg rnats-sql-my"
# id | label | implementations | bench arguments (replay: N messages, filled first)
SCENARIOS=(
  "sync16|sync publish 16 B|rnats js|pub --window 1 --size 16 --duration $SYNC_SECS"
  "sync1k|sync publish 1 KiB|rnats js|pub --window 1 --size 1024 --duration $SYNC_SECS"
  "win16|windowed (256) publish 16 B|rnats js$SQLI|pub --window 256 --size 16 --duration $PUB_SECS"
  "win1k|windowed (256) publish 1 KiB|rnats js$SQLI|pub --window 256 --size 1024 --duration $PUB_SECS"
  "replay16|replay of $FILL16 × 16 B|rnats js js-ack$SQLI|replay --size 16 --msgs $FILL16"
  "replay1k|replay of $FILL1K × 1 KiB|rnats js js-ack$SQLI|replay --size 1024 --msgs $FILL1K"
)
if [ "$CLUSTER" = 1 ]; then
  SCENARIOS=(
    "win16-r3|windowed (256) publish 16 B, 3 nodes|rnats-r3 js-r3|pub --window 256 --size 16 --duration $PUB_SECS"
    "win1k-r3|windowed (256) publish 1 KiB, 3 nodes|rnats-r3 js-r3|pub --window 256 --size 1024 --duration $PUB_SECS"
    "replay16-r3|replay of $FILL16 × 16 B, 3 nodes|rnats-r3 js-r3|replay --size 16 --msgs $FILL16"
    "replay1k-r3|replay of $FILL1K × 1 KiB, 3 nodes|rnats-r3 js-r3|replay --size 1024 --msgs $FILL1K"
  )
elif [ "$ENCRYPTION" = 1 ]; then
  SCENARIOS=(
    "win16-enc|windowed (256) publish 16 B|rnats rnats-enc|pub --window 256 --size 16 --duration $PUB_SECS"
    "win1k-enc|windowed (256) publish 1 KiB|rnats rnats-enc|pub --window 256 --size 1024 --duration $PUB_SECS"
    "replay16-enc|replay of $FILL16 × 16 B|rnats rnats-enc|replay --size 16 --msgs $FILL16"
    "replay1k-enc|replay of $FILL1K × 1 KiB|rnats rnats-enc|replay --size 1024 --msgs $FILL1K"
  )
elif [ "$DEFAULTS_ONLY" = 0 ]; then
  SCENARIOS+=(
    "sync16-eq|sync publish 16 B|rnats-nosync js-sync|pub --window 1 --size 16 --duration $SYNC_SECS"
    "win16-eq|windowed (256) publish 16 B|rnats-nosync js-sync|pub --window 256 --size 16 --duration $PUB_SECS"
    "win1k-eq|windowed (256) publish 1 KiB|rnats-nosync js-sync|pub --window 256 --size 1024 --duration $PUB_SECS"
  )
fi

if [ -n "$ONLY" ]; then
  KEPT=()
  for entry in "${SCENARIOS[@]}"; do
    case ",$ONLY," in *",${entry%%|*},"*) KEPT+=("$entry") ;; esac
  done
  [ "${#KEPT[@]}" -gt 0 ] || { echo "persist.sh: --only $ONLY matches no scenario" >&2; exit 1; }
  SCENARIOS=("${KEPT[@]}")
fi

if [ "$SQL_ONLY" = 1 ]; then
  [ "$SQL" = 1 ] || { echo "persist.sh: --sql-only and --no-sql exclude each other" >&2; exit 1; }
  KEPT=()
  for entry in "${SCENARIOS[@]}"; do
    IFS='|' read -r id label impls args <<<"$entry"
    case "$impls" in
      *rnats-sql*) KEPT+=("$id|$label|rnats rnats-sql-pg rnats-sql-my|$args") ;;
    esac
  done
  SCENARIOS=("${KEPT[@]}")
fi

SRV_PID=""
SRV_PIDS=()
CLK_TCK="$(getconf CLK_TCK)"
PG_PID=""
MY_PID=""
cleanup() {
  for p in "${SRV_PIDS[@]}" $SRV_PID; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
  # The database servers stop when their command's stdin closes (or it dies).
  for p in "$PG_PID" "$MY_PID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT

# The database servers of the SQL rows: `rnats-stream-bench db` reads commands on its stdin
# (a FIFO held open here) and answers on its stdout (a file).
if [ "$SQL" = 1 ]; then
  for k in pg my; do
    kind=postgres; [ "$k" = my ] && kind=mariadb
    mkfifo "$WORK/db.$k.in"
    "$BENCH" db --kind "$kind" --durable <"$WORK/db.$k.in" >"$WORK/db.$k.out" 2>"$WORK/db.$k.log" &
    if [ "$k" = pg ]; then PG_PID=$!; else MY_PID=$!; fi
    exec {fd}>"$WORK/db.$k.in"
    eval "DB_FD_$k=$fd"
  done
  for k in pg my; do
    for _ in $(seq 1 1200); do
      grep -q '^READY' "$WORK/db.$k.out" 2>/dev/null && break
      sleep 0.05
    done
    grep -q '^READY' "$WORK/db.$k.out" || { log "database $k did not start:"; cat "$WORK/db.$k.log" >&2; exit 1; }
    log "database $k: $(head -1 "$WORK/db.$k.out")"
  done
fi

# sql_new pg|my: a fresh database with the schema; sets SQL_DRIVER and SQL_SRC
sql_new() {
  local k="$1" fd n
  eval "fd=\$DB_FD_$k"
  n="$(grep -c '^SOURCE' "$WORK/db.$k.out" || true)"
  echo new >&"$fd"
  for _ in $(seq 1 600); do
    [ "$(grep -c '^SOURCE' "$WORK/db.$k.out" || true)" -gt "$n" ] && break
    sleep 0.05
  done
  read -r _ SQL_DRIVER SQL_SRC < <(grep '^SOURCE' "$WORK/db.$k.out" | tail -1)
  "$STAN_BIN" --sql_create_schema --sql_driver "$SQL_DRIVER" --sql_source "$SQL_SRC" >/dev/null
}

proto_of() { case "$1" in rnats*) echo stan ;; *) echo js ;; esac; }

free_ports() { # N: N free loopback ports
  python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# start_cluster IMPL DIR LOG: three nodes routed together; sets SRV_PIDS, SRV_PID (node 1),
# SRV_PORT (node 1's client port), SRV_READY_MS (spawn to a leader / all ready)
start_cluster() {
  local impl="$1" dir="$2" logf="$3" t0 ports i j routes
  t0=$(date +%s%N)
  read -r -a ports <<<"$(free_ports 6)"
  SRV_PIDS=()
  mkdir -p "$dir"
  for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do [ "$j" != "$i" ] && routes+="${routes:+,}nats://127.0.0.1:${ports[$((3 + j))]}"; done
    case "$impl" in
      rnats-r3)
        "$STAN_BIN" -cid test-cluster -st FILE --dir "$dir/n$i" -a 127.0.0.1 -p "${ports[$i]}" \
          --cluster "nats://127.0.0.1:${ports[$((3 + i))]}" --routes "$routes" \
          --clustered --cluster_node_id "n$i" --cluster_peers n0,n1,n2 --cluster_log_path "$dir/raft-n$i" \
          >"$logf.n$i" 2>&1 & ;;
      js-r3)
        "$REF" -js -sd "$dir/n$i" -a 127.0.0.1 -p "${ports[$i]}" --server_name "n$i" --cluster_name jsc \
          --cluster "nats://127.0.0.1:${ports[$((3 + i))]}" --routes "$routes" >"$logf.n$i" 2>&1 & ;;
    esac
    SRV_PIDS+=("$!")
  done
  SRV_PID="${SRV_PIDS[0]}"
  SRV_PORT="${ports[0]}"
  local ready
  for _ in $(seq 1 3000); do
    case "$impl" in
      rnats-r3) ready=0; grep -q "This node is the leader" "$logf".n* 2>/dev/null && ready=1 ;;
      js-r3) ready=1; for i in 0 1 2; do grep -q "Server is ready" "$logf.n$i" 2>/dev/null || ready=0; done ;;
    esac
    if [ "$ready" = 1 ]; then
      SRV_READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
      if [ "$impl" = rnats-r3 ] && [ "$CLIENT_ON_FOLLOWER" = 1 ]; then
        local lead
        lead="$(grep -l "This node is the leader" "$logf".n* | head -1)"
        lead="${lead##*.n}"
        SRV_PORT="${ports[$(( (lead + 1) % 3 ))]}"
      fi
      return 0
    fi
    sleep 0.01
  done
  log "cluster $impl did not become ready; logs $logf.n*"
  # Stop the nodes now: left running they would hold ports and CPU for the rounds after.
  kill -9 "${SRV_PIDS[@]}" 2>/dev/null
  wait "${SRV_PIDS[@]}" 2>/dev/null
  return 1
}

# start_server IMPL DIR LOG: sets SRV_PID, SRV_PORT, SRV_READY_MS (spawn to ready)
start_server() {
  local impl="$1" dir="$2" logf="$3" ready t0
  case "$impl" in *-r3) start_cluster "$@"; return ;; esac
  SRV_PIDS=()
  t0=$(date +%s%N)
  case "$impl" in
    rnats) "$STAN_BIN" -cid test-cluster -st FILE --dir "$dir" -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Streaming Server is ready" ;;
    rnats-nosync) "$STAN_BIN" -cid test-cluster -st FILE --dir "$dir" --file_sync=false -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Streaming Server is ready" ;;
    rnats-enc) NATS_STREAMING_ENCRYPTION_KEY=persist-bench-key "$STAN_BIN" -cid test-cluster -st FILE --dir "$dir" --encrypt -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Streaming Server is ready" ;;
    # shellcheck disable=SC2086 # RNATS_SQL_ARGS is a list of flags
    rnats-sql-*) "$STAN_BIN" -cid test-cluster -st SQL --sql_driver "$SQL_DRIVER" --sql_source "$SQL_SRC" ${RNATS_SQL_ARGS:-} -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Streaming Server is ready" ;;
    js|js-ack) "$REF" -js -sd "$dir" -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Server is ready" ;;
    js-sync)
      printf 'jetstream { store_dir: "%s", sync_interval: always }\n' "$dir" >"$dir.conf"
      "$REF" -c "$dir.conf" -a 127.0.0.1 -p -1 >"$logf" 2>&1 &
      ready="Server is ready" ;;
  esac
  SRV_PID=$!
  SRV_PORT=""
  for _ in $(seq 1 1200); do
    if grep -q "$ready" "$logf" 2>/dev/null; then
      SRV_PORT="$(grep -o 'Listening for client connections on 127.0.0.1:[0-9]*' "$logf" | head -1 | sed 's/.*://')"
      SRV_READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
      return 0
    fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.01
  done
  log "server $impl did not become ready; log:"; cat "$logf" >&2
  return 1
}

# stop_server: sets SRV_RSS (VmHWM kB, summed over a cluster's nodes) and SRV_CPU (s), stops
# the server(s) with SIGTERM
stop_server() {
  local pids=("${SRV_PIDS[@]}") p rss cpu
  [ "${#pids[@]}" -gt 0 ] || pids=("$SRV_PID")
  SRV_RSS=0; SRV_CPU=0
  for p in "${pids[@]}"; do
    rss="$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null || true)"
    cpu="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk -v hz="$CLK_TCK" '{printf "%.3f", ($12 + $13) / hz}' || true)"
    SRV_RSS=$((SRV_RSS + ${rss:-0}))
    SRV_CPU="$(awk -v a="$SRV_CPU" -v b="${cpu:-0}" 'BEGIN{printf "%.3f", a + b}')"
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  SRV_PID=""
  SRV_PIDS=()
  # Write back what the server left dirty in the page cache (JetStream's default does not
  # fsync) now, so that the kernel's writeback does not run during the next measurement
  # (the next server's, or this store's replay after the restart).
  sync
}

record() { # impl round id rc ready_ms json
  printf '{"impl":"%s","round":%s,"id":"%s","rss_kb":%s,"cpu_s":%s,"rc":%s,"ready_ms":%s,"disk_kb":%s,"bench":%s}\n' \
    "$1" "$2" "$3" "$SRV_RSS" "$SRV_CPU" "$4" "$5" "${DISK_KB:-0}" "$6" >>"$RAW"
}

run_one() { # impl round id scenario-args...
  local impl="$1" round="$2" id="$3"; shift 3
  local kind="$1"; shift
  local proto; proto="$(proto_of "$impl")"
  local dir="$WORK/store.$id.$impl.$round" logf="$WORK/$id.$impl.$round.log" blog="$WORK/$id.$impl.$round.bench.log"
  rm -rf "$dir" "$dir.conf"
  local json rc=0 extra=()
  [ "$impl" = js-ack ] && extra=(--js-ack explicit)
  # JetStream's stream leader goes where the streaming cluster's leader is: on node 1, the
  # clients' node (or, with --client-on-follower, on node 2).
  if [ "$impl" = js-r3 ]; then
    extra=(--js-replicas 3 --js-leader n0)
    [ "$CLIENT_ON_FOLLOWER" = 1 ] && extra=(--js-replicas 3 --js-leader n1)
  fi
  SRV_RSS=0; SRV_CPU=0; DISK_KB=0
  case "$impl" in rnats-sql-*) sql_new "${impl#rnats-sql-}" ;; esac
  if ! start_server "$impl" "$dir" "$logf"; then
    record "$impl" "$round" "$id" 99 0 '{}'
    log "$impl round $round $id: server did not start (log $logf)"
    return 0
  fi
  if [ "$kind" = pub ]; then
    json="$(timeout 120 "$BENCH" bench --server "127.0.0.1:$SRV_PORT" --proto "$proto" --scenario pub --json --label "$impl" "${extra[@]}" "$@" 2>"$blog")" || rc=$?
    DISK_KB="$( (du -sk "$dir" 2>/dev/null || echo 0) | cut -f1)"
    stop_server
    [ -n "$json" ] || json='{}'
    record "$impl" "$round" "$id" "$rc" 0 "$json"
  else
    # fill (unmeasured), restart on the same directory, replay
    local n size
    n="$(echo "$@" | sed 's/.*--msgs \([0-9]*\).*/\1/')"
    size="$(echo "$@" | sed 's/.*--size \([0-9]*\).*/\1/')"
    timeout 300 "$BENCH" bench --server "127.0.0.1:$SRV_PORT" --proto "$proto" --scenario pub --window 1024 \
      --size "$size" --msgs "$n" --label "$impl-fill" "${extra[@]}" 2>"$blog.fill" >/dev/null || rc=$?
    stop_server
    DISK_KB="$( (du -sk "$dir" 2>/dev/null || echo 0) | cut -f1)"
    if ! start_server "$impl" "$dir" "$logf.2"; then
      record "$impl" "$round" "$id" 98 0 '{}'
      log "$impl round $round $id: server did not restart on its store (log $logf.2)"
      return 0
    fi
    local ready="$SRV_READY_MS"
    if [ "$rc" = 0 ]; then
      json="$(timeout 300 "$BENCH" bench --server "127.0.0.1:$SRV_PORT" --proto "$proto" --scenario replay --json --label "$impl" "${extra[@]}" "$@" 2>"$blog")" || rc=$?
    else
      json='{}'; log "fill failed: $(tail -1 "$blog.fill")"
    fi
    stop_server
    [ -n "$json" ] || json='{}'
    record "$impl" "$round" "$id" "$rc" "$ready" "$json"
  fi
  rm -rf "$dir" "$dir.conf"
  if [ "$rc" != 0 ]; then
    # The servers' and the tool's logs of a failed run outlive the work directory.
    local keep
    keep="$(mktemp -d "${TMPDIR:-/tmp}/persist-failed.$id.$impl.$round.XXXX")"
    cp "$logf"* "$blog"* "$keep"/ 2>/dev/null || true
    log "logs of the failed run: $keep"
  fi
  log "$(printf '%-13s round %s %-9s rc=%s rss=%sMB %s' "$impl" "$round" "$id" "$rc" "$((SRV_RSS / 1024))" \
    "$(tail -1 "$blog" | cut -c1-170)")"
}

START_TS=$(date +%s)
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for entry in "${SCENARIOS[@]}"; do
  IFS='|' read -r id label impls args <<<"$entry"
  for round in $(seq 1 "$ROUNDS"); do
    # alternate which implementation goes first
    read -r -a order <<<"$impls"
    if [ $((round % 2)) = 0 ]; then
      rev=(); for ((i=${#order[@]}-1; i>=0; i--)); do rev+=("${order[$i]}"); done; order=("${rev[@]}")
    fi
    for impl in "${order[@]}"; do
      # shellcheck disable=SC2086
      run_one "$impl" "$round" "$id" $args
    done
  done
done
ELAPSED=$(( $(date +%s) - START_TS ))
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

LABELS=""
for entry in "${SCENARIOS[@]}"; do IFS='|' read -r id label impls _ <<<"$entry"; LABELS+="$id|$label|$impls"$'\n'; done
REPORT="$WORK/report.md"
python3 "$ROOT/bench/persist_summary.py" "$RAW" "$ROUNDS" "bench/persist.sh${ARGS_ORIG:+ $ARGS_ORIG}" \
  "$ELAPSED" "$LABELS" "$LOAD_BEFORE" "$LOAD_AFTER" "$("$REF" --version 2>&1 | head -1)" >"$REPORT"
cat "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT"
log "raw results: $RAW"
