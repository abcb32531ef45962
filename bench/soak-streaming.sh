#!/usr/bin/env bash
# Soak of rnats-streaming-server (issue #18): a FILE store under steady load for a set time
# (publishers with acks, a durable subscription per channel that acks everything, short-lived
# clients with fresh IDs that close or just drop their connection), the server restarted
# every 30 s (SIGTERM and SIGKILL in turn), its RSS and open fds sampled from /proc
# (rnats-stream-bench soak). It fails when an acknowledged message never reached the
# durable, when memory or descriptors grow after the warm-up beyond the tolerance, when a
# short-lived client fails, or when clients are left on the server at the end.
#
#   bench/soak-streaming.sh                        # 10 minutes, release build
#   bench/soak-streaming.sh --duration 3600        # an hour
#   bench/soak-streaming.sh --duration 120 --debug # a short check on the debug build
#   bench/soak-streaming.sh -- --restart-every 0   # anything after -- goes to
#                                                  # rnats-stream-bench soak (--help)
#
# The server runs with -hbi 2s -hbt 1s -hbf 3 (dropped clients are removed within ~10 s)
# and -mm 100000 (the store stops growing). Exit status: 0 PASS, 2 FAIL, 1 setup error.
# The work directory (store, server logs, report) is $SOAK_WORK, default a temp dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION=600
PROFILE=release
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    --debug) PROFILE=debug ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "soak-streaming.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done

log() { echo "soak-streaming.sh: $*" >&2; }

log "building rnats-streaming-server and rnats-stream-bench ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p rnats-streaming-server -p rnats-stream-bench >&2
else
  cargo build -q -p rnats-streaming-server -p rnats-stream-bench >&2
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET_DIR/$PROFILE/rnats-stream-bench"

WORK="${SOAK_WORK:-$(mktemp -d /tmp/rnats-soak-streaming.XXXXXX)}"
mkdir -p "$WORK"
log "work directory: $WORK"

echo "# bench/soak-streaming.sh --duration $DURATION ($PROFILE), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"
rc=0
"$BENCH" soak --server-bin "$TARGET_DIR/$PROFILE/rnats-streaming-server" --dir "$WORK/run" \
  --duration "$DURATION" "${EXTRA[@]}" >"$WORK/soak.report" 2>"$WORK/soak.progress" || rc=$?
cat "$WORK/soak.report"
case "$rc" in
  0) rm -rf "$WORK/run/store"; log "passed (report and server logs in $WORK)" ;;
  2) log "FAILED (report, logs and store in $WORK)"; exit 2 ;;
  *) log "setup error:"; tail -5 "$WORK/soak.progress" >&2; exit 1 ;;
esac
