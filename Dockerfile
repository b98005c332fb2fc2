# syntax=docker/dockerfile:1
#
# pinproxy image: a static (musl) binary on distroless/static, non-root.
#
#   docker build -t pinproxy:dev .
#
# Base images are pinned by version. To pin by digest as well, resolve them
# where a registry is reachable and append @sha256:… to the FROM lines
# (e.g. `docker buildx imagetools inspect rust:1.95.0-alpine3.22`); the
# build args below keep the versions in one place.
ARG RUST_VERSION=1.95.0
ARG ALPINE_VERSION=3.22
ARG DISTROLESS_IMAGE=gcr.io/distroless/static-debian12:nonroot

# --- build --------------------------------------------------------------------
FROM rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS build
# musl-dev: libc headers and crt objects for ring's C/asm code. On Alpine the
# native target is *-linux-musl and links statically by default.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pinproxy \
 && install -D -m 0755 target/release/pinproxy /out/pinproxy
# Fails the build if the binary is not self-contained (no loader on distroless/static).
RUN /out/pinproxy --help >/dev/null \
 && if grep -q 'ld-musl' /out/pinproxy; then echo "pinproxy is dynamically linked" >&2; exit 1; fi

# --- runtime ------------------------------------------------------------------
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
