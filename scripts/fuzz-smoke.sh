#!/usr/bin/env bash
# CI smoke run of the fuzz targets: builds them (stable toolchain, no sanitizer) and runs each
# over its checked-in corpus, fuzz/corpus/<target>/, every input once. Any crash, panic,
# allocation above the targets' cap or input over 10 s fails the run; nothing in the
# repository is modified (the corpus is replayed from a temporary copy).
#
#   scripts/fuzz-smoke.sh              corpus replay only
#   FUZZ_SECONDS=5 scripts/fuzz-smoke.sh   plus 5 s of fuzzing per target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). See docs/FUZZING.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
SECONDS_EACH="${FUZZ_SECONDS:-0}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

start=$(date +%s)
echo "== cargo fuzz build (sanitizer none)"
cargo fuzz build --sanitizer none

status=0
for t in $(cargo fuzz list); do
  if [ ! -d "fuzz/corpus/$t" ]; then
    echo "== $t: no corpus in fuzz/corpus/$t" >&2
    status=1
    continue
  fi
  cp -r "fuzz/corpus/$t" "$TMP/$t"
  if [ "$SECONDS_EACH" -gt 0 ]; then
    runs=(-max_total_time="$SECONDS_EACH")
  else
    runs=(-runs=0)
  fi
  n=$(find "$TMP/$t" -type f | wc -l)
  echo "== $t ($n inputs)"
  if ! cargo fuzz run --sanitizer none "$t" "$TMP/$t" -- "${runs[@]}" \
      -timeout=10 -rss_limit_mb=2048 -max_len=200000 \
      -artifact_prefix="$TMP/crash-$t-" >"$TMP/$t.log" 2>&1; then
    echo "== $t FAILED; last lines of its log:" >&2
    tail -n 40 "$TMP/$t.log" >&2
    for a in "$TMP"/crash-"$t"-*; do
      [ -e "$a" ] && echo "   crashing input (base64): $(base64 -w0 "$a")" >&2
    done
    status=1
  fi
done
echo "== fuzz smoke done in $(( $(date +%s) - start )) s (status $status)"
exit $status
