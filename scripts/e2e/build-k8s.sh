#!/usr/bin/env bash
# Builds the Kubernetes server components and etcd for scripts/e2e.sh from the
# Go module proxy, cached by version:
#   $E2E_CACHE/k8s-$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,
#                                    kube-scheduler,kubelet,etcd}
#
# k8s.io/kubernetes is not meant to be a dependency: its go.mod replaces every
# staging module (k8s.io/api, k8s.io/client-go, ...) with a directory of its
# own repository. The known recipe is a module that requires
# k8s.io/kubernetes@vX.Y.Z and replaces each of those staging modules with its
# published v0.Y.Z. The list is read from kubernetes' own go.mod, so it
# follows the pinned release. etcd is go.etcd.io/etcd/server/v3's main
# package, at the version kubernetes itself requires.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
E2E_CACHE="${E2E_CACHE:-$HOME/.cache/pinproxy-e2e}"
OUT="$E2E_CACHE/k8s-$K8S_VERSION"
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet etcd)

have_all() { local b; for b in "${BINS[@]}"; do [ -x "$OUT/bin/$b" ] || return 1; done; }
if have_all; then echo "build-k8s: cached in $OUT/bin"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: go not found" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$OUT/src" "$OUT/bin"
cd "$OUT/src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
. "$HERE/../tools/go-scratch.sh"
go_scratch "$OUT/.go"

modjson="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
gomod="$(printf '%s\n' "$modjson" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$gomod" ] || { echo "build-k8s: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
minor="${K8S_VERSION#v1.}"; staging="v0.${minor}"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$gomod")"

{
  echo "module pinproxy.e2e/k8s"
  echo
  echo "go 1.24.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod" | sort -u |
    while read -r m; do echo "	$m => $m $staging"; done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
echo "build-k8s: resolving modules (k8s.io/kubernetes@$K8S_VERSION, staging $staging, etcd $etcd_version)"
go mod tidy

pkgver="k8s.io/component-base/version"
commit="$(printf '%s\n' "$modjson" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' | head -c 12)"
ldflags="-s -w -X $pkgver.gitVersion=$K8S_VERSION -X $pkgver.gitMajor=1 -X $pkgver.gitMinor=${minor%%.*}"
ldflags="$ldflags -X $pkgver.gitTreeState=clean -X $pkgver.buildDate=1970-01-01T00:00:00Z"
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  echo "build-k8s: go build $c"
  go build -trimpath -ldflags "$ldflags" -o "$OUT/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$OUT/bin/$c.tmp" "$OUT/bin/$c"
done
echo "build-k8s: go build etcd $etcd_version"
go build -trimpath -ldflags "-s -w" -o "$OUT/bin/etcd.tmp" go.etcd.io/etcd/server/v3
mv "$OUT/bin/etcd.tmp" "$OUT/bin/etcd"
echo "build-k8s: built in $(( $(date +%s) - start ))s: $(cd "$OUT/bin" && echo *)"
: "${commit:=}"
