# Container images for scripts/e2e.sh (sourced), built without a registry
# and cached by content under $E2E_CACHE/images as docker-archive tarballs:
#   pause   a tiny static program (C, musl-gcc -static)
#   base    stand-in for gcr.io/distroless/static:nonroot (passwd/group
#           with nonroot 65532, /tmp, CA certificates; no shell)
#   pinproxy  the Dockerfile's runtime stage, built by `buildah bud` with
#           DISTROLESS_IMAGE=the base above and the `build` stage replaced
#           by a build context holding the static binary built here
#   init    transparent mode's init image: the same binary + Debian's
#           iptables (nft and legacy) with the libraries they load
#   app     busybox (static) + curl + python3, with their libraries
# shellcheck shell=bash

E2E_TAG="${E2E_TAG:-0.1.0}"   # the chart's appVersion: its default image tag
REGISTRY=e2e.invalid          # never resolved: images are imported, pull policy IfNotPresent
PAUSE_IMAGE="$REGISTRY/pause:1"
APP_IMAGE="$REGISTRY/app:1"

_buildah() { buildah --root "$E2E_CACHE/buildah/root" --runroot "$E2E_CACHE/buildah/run" --storage-driver vfs "$@"; }

# _copy_with_libs ROOTFS FILE...: FILE and every shared library it loads
# (ldd), at the same paths.
_copy_with_libs() {
  local root="$1"; shift
  local f lib
  for f in "$@"; do
    _cp_parents "$root" -P "$f"
    [ -L "$f" ] && _cp_parents "$root" -P "$(readlink -f "$f")"
    for lib in $(ldd "$f" 2>/dev/null | awk '/=>/ {print $3} /^\t\// {print $1}'); do
      [ -e "$root$lib" ] || _cp_parents "$root" -L "$lib"
    done
  done
}

# _cp_parents ROOT CP-OPTION PATH...: copies absolute PATHs under ROOT at
# the same paths (from /: coreutils' --parents misbehaves with some
# working directories).
_cp_parents() {
  local root="$1" opt="$2"; shift 2
  local p; for p in "$@"; do (cd / && cp "$opt" -r --preserve=mode,timestamps --parents "${p#/}" "$root"); done
}

# _archive NAME REF KEY: prints the cached tarball path (empty if absent).
_archive_path() { echo "$E2E_CACHE/images/$1-$2.tar"; }

_commit_rootfs() {   # ROOTFS REF OUT [buildah config args...]
  local rootfs="$1" ref="$2" out="$3"; shift 3
  local c; c="$(_buildah from scratch)"
  _buildah copy "$c" "$rootfs" / >/dev/null
  [ $# -gt 0 ] && _buildah config "$@" "$c"
  _buildah commit -q "$c" "$ref" >/dev/null
  _buildah rm "$c" >/dev/null
  _buildah push -q "$ref" "docker-archive:$out.tmp:$ref" >/dev/null
  mv "$out.tmp" "$out"
}

build_pause() {
  local src key out work
  src='#include <signal.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
int main(void) { signal(SIGINT, quit); signal(SIGTERM, quit); for (;;) pause(); }'
  key="$(printf '%s' "$src" | sha256sum | cut -c1-12)"
  out="$(_archive_path pause "$key")"; PAUSE_TAR="$out"
  [ -f "$out" ] && return 0
  log "image pause: musl-gcc -static"
  work="$(mktemp -d)"
  printf '%s\n' "$src" >"$work/pause.c"
  mkdir -p "$work/rootfs"
  musl-gcc -static -Os -o "$work/rootfs/pause" "$work/pause.c"
  _commit_rootfs "$work/rootfs" "$PAUSE_IMAGE" "$out" --entrypoint '["/pause"]' --user 65535:65535
  rm -rf "$work"
}

build_base() {
  local key out work
  key="$(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -c1-12)"
  out="$(_archive_path base "$key")"
  BASE_REF="localhost/pinproxy-e2e-base:$key"
  _buildah inspect "$BASE_REF" >/dev/null 2>&1 && return 0
  log "image base (distroless/static stand-in)"
  work="$(mktemp -d)"
  mkdir -p "$work/rootfs/etc/ssl/certs" "$work/rootfs/tmp" "$work/rootfs/home/nonroot"
  chmod 1777 "$work/rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$work/rootfs/etc/group"
  chown 65532:65532 "$work/rootfs/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"
  _commit_rootfs "$work/rootfs" "$BASE_REF" "$out" --user 65532:65532
  rm -rf "$work"
}

# build_pinproxy BINARY: the Dockerfile's runtime stage, as written.
build_pinproxy() {
  local bin="$1" key out ctx
  key="$( (sha256sum "$bin"; sha256sum "$ROOT/Dockerfile"; echo "$BASE_REF") | sha256sum | cut -c1-12)"
  out="$(_archive_path pinproxy "$key")"; PINPROXY_TAR="$out"
  PINPROXY_IMAGE="$REGISTRY/pinproxy:$E2E_TAG"
  [ -f "$out" ] && return 0
  log "image pinproxy: buildah bud (Dockerfile runtime stage, --build-context build=<static binary>)"
  ctx="$(mktemp -d)"
  # The `build` stage's output, where the runtime stage copies it from
  # (COPY --from=build /out/pinproxy): a build context named like the
  # stage replaces it, so the rust image is never pulled. The main context is
  # empty: the runtime stage copies nothing else.
  mkdir -p "$ctx/build/out" "$ctx/main"
  install -m 0755 "$bin" "$ctx/build/out/pinproxy"
  _buildah bud -q --layers=false --build-context "build=$ctx/build" \
    --build-arg "DISTROLESS_IMAGE=$BASE_REF" --pull-never \
    -f "$ROOT/Dockerfile" -t "$PINPROXY_IMAGE" "$ctx/main" >/dev/null
  _buildah push -q "$PINPROXY_IMAGE" "docker-archive:$out.tmp:$PINPROXY_IMAGE" >/dev/null
  mv "$out.tmp" "$out"
  rm -rf "$ctx"
}

# build_init BINARY: the init image's contents (Dockerfile `init` target:
# pinproxy + iptables, USER 0, ENTRYPOINT pinproxy, CMD redirect ...) from
# Debian's iptables; the Dockerfile's stage itself needs Alpine's apk.
build_init() {
  local bin="$1" key out work r f
  key="$( (sha256sum "$bin"; dpkg-query -W iptables) | sha256sum | cut -c1-12)"
  out="$(_archive_path init "$key")"; INIT_TAR="$out"
  INIT_IMAGE="$REGISTRY/pinproxy-init:$E2E_TAG"
  [ -f "$out" ] && return 0
  log "image pinproxy-init: pinproxy + Debian iptables"
  work="$(mktemp -d)"; r="$work/rootfs"
  mkdir -p "$r/usr/local/bin" "$r/run" "$r/tmp" "$r/etc"
  install -m 0755 "$bin" "$r/usr/local/bin/pinproxy"
  _copy_with_libs "$r" /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi
  for f in /usr/lib/x86_64-linux-gnu/xtables/*.so; do _copy_with_libs "$r" "$f"; done
  for f in iptables ip6tables; do
    for s in -nft-save -nft-restore -legacy-save -legacy-restore -nft -legacy; do
      ln -sf "$( [[ $s == -nft* ]] && echo xtables-nft-multi || echo xtables-legacy-multi)" "$r/usr/sbin/$f$s"
    done
    # The plain names: the nf_tables backend, as on Alpine and Debian.
    ln -sf xtables-nft-multi "$r/usr/sbin/$f"
    ln -sf xtables-nft-multi "$r/usr/sbin/$f-save"
    ln -sf xtables-nft-multi "$r/usr/sbin/$f-restore"
  done
  cp /etc/protocols "$r/etc/" 2>/dev/null || true
  _commit_rootfs "$r" "$INIT_IMAGE" "$out" --user 0:0 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --entrypoint '["pinproxy"]' --cmd 'redirect --proxy-uid 1337 --port 15001'
  rm -rf "$work"
}

build_app() {
  local key out work r f
  key="$( (dpkg-query -W curl busybox-static python3.11-minimal libpython3.11-stdlib) | sha256sum | cut -c1-12)"
  out="$(_archive_path app "$key")"; APP_TAR="$out"
  [ -f "$out" ] && return 0
  log "image app: busybox + curl + python3"
  work="$(mktemp -d)"; r="$work/rootfs"
  mkdir -p "$r/bin" "$r/tmp" "$r/etc"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for f in $(/bin/busybox --list); do [ -e "$r/bin/$f" ] || ln -s busybox "$r/bin/$f"; done
  _copy_with_libs "$r" /usr/bin/curl /usr/bin/python3.11
  ln -sf python3.11 "$r/usr/bin/python3"
  _cp_parents "$r" -P /usr/lib/python3.11
  rm -rf "$r/usr/lib/python3.11/test" "$r/usr/lib/python3.11/dist-packages" "$r/usr/lib/python3.11/config-"*
  for f in /usr/lib/python3.11/lib-dynload/*.so; do _copy_with_libs "$r" "$f"; done
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/" 2>/dev/null || true
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$r/etc/group"
  _commit_rootfs "$r" "$APP_IMAGE" "$out" --user 1000:1000 \
    --env PATH=/usr/local/bin:/usr/bin:/bin --entrypoint '[]' --cmd 'sleep 3600'
  rm -rf "$work"
}

# build_images BINARY: all images (cached); import_images: into containerd.
build_images() {
  mkdir -p "$E2E_CACHE/images"
  build_pause; build_base; build_pinproxy "$1"; build_init "$1"; build_app
  # Keep only the tarballs this run uses, and no dangling buildah layers.
  local t keep=" $PAUSE_TAR $PINPROXY_TAR $INIT_TAR $APP_TAR "
  for t in "$E2E_CACHE"/images/*.tar; do
    case "$t" in */base-*) continue ;; esac
    case "$keep" in *" $t "*) ;; *) rm -f "$t" ;; esac
  done
  _buildah rmi --prune >/dev/null 2>&1 || true
}

import_images() {
  local t
  for t in "$PAUSE_TAR" "$PINPROXY_TAR" "$INIT_TAR" "$APP_TAR"; do
    "${CTR[@]}" images import --no-unpack=false "$t" >/dev/null || die "ctr import $t"
  done
  "${CTR[@]}" images ls -q | grep "^$REGISTRY/" | sed 's/^/  image: /'
}
