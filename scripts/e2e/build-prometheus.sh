#!/usr/bin/env bash
# Builds Prometheus for scripts/e2e.sh from the Go module proxy, cached by
# version: $E2E_CACHE/prometheus-$PROM_VERSION/bin/prometheus.
#
# Why not Debian's package: Debian builds Prometheus without the Kubernetes
# service discovery (its client-go is not packaged), so its prometheus
# refuses `kubernetes_sd_configs` ("field kubernetes_sd_configs not found in
# type config.ScrapeConfig"), and so does its promtool. promtool is built
# beside it. The module version v0.305.1 is Prometheus 3.5.1 (LTS); no
# web UI assets are embedded (the HTTP API is what the test uses).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PROM_VERSION="${PROM_VERSION:-v0.305.1}"
E2E_CACHE="${E2E_CACHE:-$HOME/.cache/pinproxy-e2e}"
OUT="$E2E_CACHE/prometheus-$PROM_VERSION"
if [ -x "$OUT/bin/prometheus" ] && [ -x "$OUT/bin/promtool" ]; then echo "build-prometheus: cached in $OUT/bin"; exit 0; fi
start=$(date +%s)
mkdir -p "$OUT/src" "$OUT/bin"
cd "$OUT/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
. "$HERE/../tools/go-scratch.sh"
go_scratch "$OUT/.go"
cat > go.mod <<MOD
module pinproxy.e2e/prometheus

go 1.24.0

require github.com/prometheus/prometheus $PROM_VERSION
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
GO
echo "build-prometheus: resolving github.com/prometheus/prometheus@$PROM_VERSION"
go mod tidy
echo "build-prometheus: go build cmd/prometheus"
go build -trimpath -tags netgo -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROM_VERSION" -o "$OUT/bin/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus
mv "$OUT/bin/prometheus.tmp" "$OUT/bin/prometheus"
echo "build-prometheus: go build cmd/promtool"
go build -trimpath -tags netgo -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROM_VERSION" -o "$OUT/bin/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool
mv "$OUT/bin/promtool.tmp" "$OUT/bin/promtool"
echo "build-prometheus: built in $(( $(date +%s) - start ))s"
