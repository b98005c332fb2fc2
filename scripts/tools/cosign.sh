#!/usr/bin/env bash
# Prints the path of a cosign binary at a pinned release, building it once
# from its Go module (github.com/sigstore/cosign/v2/cmd/cosign) with the
# ordinary `go install` when it is not cached yet.
#
# crates/sign's tests sign and verify with the real cosign: it is the proof
# that our `.sig` files and keys are the ones `cosign sign-blob --key` and
# `cosign verify-blob --key` read and write. scripts/test.sh runs this and
# exports PINPROXY_COSIGN; the tests run it themselves when that is unset.
#
# Cache: ${PINPROXY_TOOLS_CACHE:-~/.cache/pinproxy-tools}/cosign-<version>/.
# First build: about 6.5 minutes on 2 cores with empty Go caches (modules
# ~1.8 GB, build cache ~1.2 GB, in a scratch directory removed afterwards:
# scripts/tools/go-scratch.sh); later runs: instant.
# Needs Go >= 1.25 (cosign v2.6's go.mod) and the Go module proxy.
# Progress goes to stderr; stdout is the path alone.
set -euo pipefail

VERSION="${COSIGN_VERSION:-v2.6.5}"
MODULE="github.com/sigstore/cosign/v2/cmd/cosign"
CACHE="${PINPROXY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pinproxy-tools}"
DIR="$CACHE/cosign-$VERSION"
BIN="$DIR/cosign"

say() { printf 'cosign.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "Go is not installed; cosign $VERSION is built from its Go module and needs Go >= 1.25"

mkdir -p "$DIR"
# scripts/test.sh and a test binary may both get here: one builds, the
# other waits for it.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
  if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
  fi
fi

work="$(mktemp -d "$DIR/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
. "$(cd "$(dirname "$0")" && pwd)/go-scratch.sh"
go_scratch "$work/go"
trap 'rm -rf "$work"' EXIT  # go_scratch's directory is inside
say "building cosign $VERSION from $MODULE with $(go version | cut -d' ' -f3) (first time only; ~6.5 min on 2 cores)"
start=$(date +%s)
# CGO off: a static binary that does not depend on the machine's libc.
GOBIN="$work" CGO_ENABLED=0 go install -trimpath "$MODULE@$VERSION" >&2 ||
  die "go install $MODULE@$VERSION failed (see above)"
"$work/cosign" version >/dev/null 2>&1 || die "the cosign just built does not run"
mv "$work/cosign" "$BIN"
say "built $BIN in $(($(date +%s) - start))s"
echo "$BIN"
