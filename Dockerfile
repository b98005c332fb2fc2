# syntax=docker/dockerfile:1
#
# pinproxy image: a static (musl) binary on distroless/static, non-root.
#
#   docker build -t pinproxy:dev .
#
# Transparent mode's init image (`pinproxy redirect` and the iptables it runs):
#
#   docker build --target init -t pinproxy-init:dev .
#
# Base images are pinned by version. To pin by digest as well, resolve them
# where a registry is reachable and append @sha256:… to the FROM lines
# (e.g. `docker buildx imagetools inspect rust:1.95.0-bookworm`); the
# build args below keep the versions in one place.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_VERSION=bookworm
ARG ALPINE_VERSION=3.22
ARG DISTROLESS_IMAGE=gcr.io/distroless/static-debian12:nonroot

# --- build --------------------------------------------------------------------
# The static musl binary for this platform (x86_64 for amd64, aarch64 for
# arm64), built the way scripts/e2e.sh builds the one CI runs in its cluster:
# rustup's toolchain with the musl target added, `--target <arch>-unknown-
# linux-musl`. On x86_64, the same rustc (RUST_VERSION, the one that wrote
# link/symbol-order-musl.txt) and the same command give the same symbol
# names, so that file lays the binary's code out (build.rs; docs/
# benchmarks.md, "Code layout"): a native build on rust:alpine names every
# function differently and is not laid out.
FROM rust:${RUST_VERSION}-${DEBIAN_VERSION} AS build
# musl-tools: musl-gcc, for ring's C and assembly; the Rust side of the musl
# target is self-contained (its libc and start-up code ship with the target,
# rust-lld with the toolchain).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    T="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$T" --bin pinproxy \
 && install -D -m 0755 "target/$T/release/pinproxy" /out/pinproxy
# Fails the build if the binary is not self-contained (no loader on distroless/static).
RUN /out/pinproxy --help >/dev/null \
 && if readelf -lW /out/pinproxy | grep -q INTERP; then echo "pinproxy is dynamically linked" >&2; exit 1; fi

# --- init: transparent mode's rule installer ---------------------------------
# A separate image, as linkerd2-proxy-init is (Istio instead puts iptables in
# its proxy image): it carries the iptables userland and runs once per pod,
# as root with NET_ADMIN (NET_RAW too for --iptables-mode legacy), before the
# app starts. The long-running proxy image below keeps nothing but the static
# binary. Both copy the binary of the one build stage, so they can't drift.
FROM alpine:${ALPINE_VERSION} AS init
# iptables: the nft backend (what `iptables-restore` names on Alpine) and its
# save; ip6tables: the IPv6 ones; iptables-legacy: --iptables-mode legacy,
# which also needs a writable /run for its lock file (mount an emptyDir there
# under readOnlyRootFilesystem; the nft backend takes no lock file).
RUN apk add --no-cache iptables ip6tables iptables-legacy
COPY --from=build /out/pinproxy /usr/local/bin/pinproxy
# Fails the build if a program `pinproxy redirect` runs is missing (every
# --iptables-mode), or if the plain names are not the nf_tables backend.
RUN for p in iptables-save iptables-restore ip6tables-save ip6tables-restore \
             iptables-nft-save iptables-nft-restore ip6tables-nft-save ip6tables-nft-restore \
             iptables-legacy-save iptables-legacy-restore ip6tables-legacy-save ip6tables-legacy-restore; do \
      "$p" --version >/dev/null || { echo "missing or broken: $p" >&2; exit 1; }; \
    done \
 && iptables-restore --version | grep -q nf_tables \
 && ip6tables-restore --version | grep -q nf_tables \
 && pinproxy redirect --dry-run --proxy-uid 1337 --port 15001 >/dev/null
LABEL org.opencontainers.image.title="pinproxy-init" \
      org.opencontainers.image.description="Installs pinproxy's transparent-mode nat rules in a pod's network namespace" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root: iptables needs it (with NET_ADMIN) in the pod's network namespace.
USER 0:0
ENTRYPOINT ["pinproxy"]
# --proxy-uid and --port are what `pinproxy inject` gives the sidecar in
# transparent mode (`--transparent-uid`, `--transparent-port`). Not the proxy
# image's USER below: 65532 is distroless' "nonroot", the USER of many app
# images too, and every process of that UID would be let through unpinned.
CMD ["redirect", "--proxy-uid", "1337", "--port", "15001"]

# --- runtime ------------------------------------------------------------------
# The last stage: what a plain `docker build .` produces.
FROM ${DISTROLESS_IMAGE}
LABEL org.opencontainers.image.title="pinproxy" \
      org.opencontainers.image.description="Sidecar egress proxy that enforces TLS SPKI pins" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pinproxy /usr/local/bin/pinproxy
# distroless "nonroot" is 65532:65532. Numeric, so runAsNonRoot can verify it.
USER 65532:65532
# Nothing is written to the root filesystem: the pod CA goes to --ca-out,
# which Kubernetes mounts as an emptyDir (readOnlyRootFilesystem: true).
VOLUME ["/var/run/pinproxy"]
# 3128: proxy (bound to 127.0.0.1 by default), 9901: admin (/metrics, /healthz, /readyz, /pins).
EXPOSE 3128 9901
ENTRYPOINT ["pinproxy"]
# The admin port listens on all interfaces so kubelet probes and Prometheus
# reach it; the proxy port stays on loopback (an open proxy is a hole).
CMD ["run", "--pins", "/etc/pinproxy/pins.yaml", "--admin", "0.0.0.0:9901", "--ca-out", "/var/run/pinproxy"]
