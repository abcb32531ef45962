#!/usr/bin/env bash
# Builds the reference nats-streaming-server v0.25.6 (Go) from local git mirrors,
# so developers can run side-by-side checks of rnats against the real server.
#
#   REF_STAN=$(scripts/build-reference-streaming.sh [OUT_DIR])
#
# OUT_DIR defaults to target/reference/nats-streaming-server (under /target, which git ignores).
# The binary path is the only thing printed on stdout; progress goes to stderr.
# Idempotent: the GOPATH tree is rebuilt from scratch on every run; the Go build
# cache makes reruns fast.
#
# What it needs:
#   - Debian's golang-go (Go 1.19 is enough) and Debian Go library packages; they are
#     installed with apt-get when missing (needs root, or sudo, and an apt mirror).
#   - Bare git mirrors (no work tree) brought onto the machine by the project's `fetch`
#     tool, by default under /work/.mirror/<owner>+<name>/repo; each can be overridden:
#       STAN_SERVER_SRC_REPO  nats-io/nats-streaming-server  (tag $STAN_SERVER_TAG, v0.25.6)
#       STAN_SRC_REPO         nats-io/stan.go                (tag $STAN_TAG, v0.10.4)
#       RAFT_SRC_REPO         hashicorp/raft                 (tag $RAFT_TAG, v1.6.0)
#       MSGPACK_SRC_REPO      hashicorp/go-msgpack           (tag $MSGPACK_TAG, v2.1.1)
#   Nothing fetched and nothing built is committed: sources are extracted with
#   `git archive` into a scratch GOPATH under OUT_DIR's parent, and the binary stays in OUT_DIR.
#
# How: no Go module downloads are possible here, so the build runs in GOPATH mode
# (GO111MODULE=off) with GOPATH = <scratch gopath>:/usr/share/gocode; the mirrors provide
# the server, stan.go, raft and go-msgpack/v2, Debian provides every other library.
# nats-server/v2 comes from Debian (2.9.10, while v0.25.6 pins 2.9.24); Debian installs it
# without the /v2 path element, so it is copied into the scratch GOPATH under .../v2.
# The binary therefore reports "version 0.25.6, nats-server: v2.9.10": the streaming layer
# is exactly v0.25.6, the embedded NATS server is Debian's 2.9.10.
#
# Checked on Debian (Go 1.19.8, 2026-12-06): builds with no source patch; the binary runs with the
# memory store, with `-st FILE --dir D --ft_group G`, and as a 3-node `--clustered` FILE-store
# cluster on loopback (routes between the embedded NATS servers; one node logs
# "server became leader").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-$ROOT/target/reference/nats-streaming-server}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
MIRRORS="${MIRRORS:-/work/.mirror}"

STAN_SERVER_SRC_REPO="${STAN_SERVER_SRC_REPO:-$MIRRORS/nats-io+nats-streaming-server/repo}"
STAN_SERVER_TAG="${STAN_SERVER_TAG:-v0.25.6}"
STAN_SRC_REPO="${STAN_SRC_REPO:-$MIRRORS/nats-io+stan.go/repo}"
STAN_TAG="${STAN_TAG:-v0.10.4}"
RAFT_SRC_REPO="${RAFT_SRC_REPO:-$MIRRORS/hashicorp+raft/repo}"
RAFT_TAG="${RAFT_TAG:-v1.6.0}"
MSGPACK_SRC_REPO="${MSGPACK_SRC_REPO:-$MIRRORS/hashicorp+go-msgpack/repo}"
MSGPACK_TAG="${MSGPACK_TAG:-v2.1.1}"
DEBIAN_GOCODE=/usr/share/gocode

log() { echo "build-reference-streaming: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Debian packages providing the libraries v0.25.6's go.mod lists (direct and indirect).
APT_PKGS=(
  golang-go
  golang-github-go-sql-driver-mysql-dev
  golang-github-gogo-protobuf-dev
  golang-github-hashicorp-go-hclog-dev
  golang-github-lib-pq-dev
  golang-github-nats-io-go-nats-dev
  golang-github-nats-io-nats-server-dev
  golang-github-nats-io-nuid-dev
  golang-github-nats-io-jwt-dev
  golang-github-nats-io-nkeys-dev
  golang-github-prometheus-procfs-dev
  golang-github-coreos-bbolt-dev
  golang-golang-x-crypto-dev
  golang-golang-x-sys-dev
  golang-golang-x-time-dev
  golang-github-armon-go-metrics-dev
  golang-github-fatih-color-dev
  golang-github-hashicorp-go-immutable-radix-dev
  golang-github-hashicorp-golang-lru-dev
  golang-github-klauspost-compress-dev
  golang-github-mattn-go-colorable-dev
  golang-github-mattn-go-isatty-dev
  golang-github-minio-highwayhash-dev
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
command -v go >/dev/null || die "go not found after installing golang-go"

for r in "$STAN_SERVER_SRC_REPO" "$STAN_SRC_REPO" "$RAFT_SRC_REPO" "$MSGPACK_SRC_REPO"; do
  git -C "$r" rev-parse --git-dir >/dev/null 2>&1 ||
    die "no git mirror at $r (bring it with the project's fetch tool, or set the *_SRC_REPO variable)"
done

# Scratch GOPATH next to OUT_DIR, recreated every run so edits never accumulate.
WORK="$(dirname "$OUT_DIR")/.build-nats-streaming-server"
rm -rf "$WORK"
GP="$WORK/gopath"
mkdir -p "$GP/src"

extract() { # repo tag import-path
  local dir="$GP/src/$3"
  mkdir -p "$dir"
  git -C "$1" archive "$2" | tar -x -C "$dir"
  log "extracted $(basename "$(dirname "$1")")@$2 -> src/$3"
}
extract "$STAN_SERVER_SRC_REPO" "$STAN_SERVER_TAG" github.com/nats-io/nats-streaming-server
extract "$STAN_SRC_REPO" "$STAN_TAG" github.com/nats-io/stan.go
extract "$RAFT_SRC_REPO" "$RAFT_TAG" github.com/hashicorp/raft
# go-msgpack's module path carries /v2; GOPATH mode maps import paths to directories literally.
extract "$MSGPACK_SRC_REPO" "$MSGPACK_TAG" github.com/hashicorp/go-msgpack/v2

# Debian ships nats-server at github.com/nats-io/nats-server (no /v2); the imports say /v2.
mkdir -p "$GP/src/github.com/nats-io/nats-server"
cp -r "$DEBIAN_GOCODE/src/github.com/nats-io/nats-server" "$GP/src/github.com/nats-io/nats-server/v2"

# ---- Build-time patches for Debian library versions (applied to the scratch tree only) ----
# None needed with the Debian versions above (Debian 12: hclog 0.11, nats.go 1.22.1,
# nats-server 2.9.10, jwt 2.3.0, nkeys 0.3.0). If a future package update breaks the build,
# add a documented `sed -i` here on "$GP/src/..." files; never edit or commit the mirrors.

export GO111MODULE=off GOPATH="$GP:$DEBIAN_GOCODE" GOFLAGS="" GOPROXY=off CGO_ENABLED=0
log "building ($(go version)) with GOPATH=$GOPATH"
cd "$GP/src/github.com/nats-io/nats-streaming-server"
# -p 1 and nice: the machine is shared with benchmarks and other builders.
nice -n 10 go build -p "${GO_BUILD_JOBS:-1}" -o "$OUT_DIR/nats-streaming-server" . >&2
BIN="$OUT_DIR/nats-streaming-server"
"$BIN" --version >&2
echo "$BIN"
