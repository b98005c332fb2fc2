# Sourced by the scripts that build a Go tool once (cosign, Kubernetes, etcd,
# Prometheus): points Go's module and build caches at a scratch directory
# that is deleted when the build ends, so a fresh machine keeps the built
# binary (a few hundred MB) and not the 1-4 GB of caches behind it; CI
# machines have little disk. PINPROXY_KEEP_GO_CACHES=1 keeps Go's usual
# caches instead (faster when you rebuild at other versions).
# Usage: go_scratch DIR   (DIR is removed on exit)
go_scratch() {
  if [ "${PINPROXY_KEEP_GO_CACHES:-0}" = 1 ]; then return 0; fi
  _go_scratch_dir="$1"
  mkdir -p "$_go_scratch_dir"
  export GOMODCACHE="$_go_scratch_dir/mod" GOCACHE="$_go_scratch_dir/build"
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
  trap 'rm -rf "$_go_scratch_dir"' EXIT
}
