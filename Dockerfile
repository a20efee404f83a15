# tmpvault: one static binary in an otherwise empty image.
#
# Two ways to get the binary, one final layout:
#
#   docker build -t tmpvault .
#       Default: compiles in rust:1.95 and copies the static binary into
#       scratch. Needs a registry; works with BuildKit and with the classic
#       builder (DOCKER_BUILDKIT=0, the default before Docker 23), which
#       also runs the offline stage below on the way (see there).
#
#   scripts/static-build && docker build --target offline -t tmpvault .
#       Offline and air-gapped: copies a static binary built on the host
#       into scratch (--build-arg BINARY=path for another one inside the
#       build context; .dockerignore lets only the default path through).
#       Needs no registry and works with the classic builder. CI uses this
#       path.
#
# Why scratch and not distroless/static: tmpvault reads no /etc/passwd (the
# user is numeric), no CA store (it trusts only the CA files it is given),
# no time zone data (it speaks UTC); the distroless base would add those
# files and a second image to pull, and the offline path could not use it.
# With scratch both paths end in the same layout: /tmpvault and nothing else.
#
# Why there is no /scratch directory in the image: when the mount point
# exists in the image, runc sets the tmpfs mounted there to the image
# directory's mode, overriding mode=1770. Docker and Kubernetes create the
# mount point themselves.

ARG RUST_VERSION=1.95.0

# The runtime layout, shared by both paths: user, environment, ports,
# health check and entry point. Files come in the stages below.
FROM scratch AS runtime
# 65532 is distroless's "nonroot"; numeric, as scratch has no /etc/passwd
# and tmpvault looks up no user name.
USER 65532:65532
# The scratch dir must be a tmpfs mounted here (docker run --tmpfs
# /scratch:size=16m,mode=1770,uid=65532,gid=65532; Kubernetes emptyDir
# medium: Memory); serve refuses to start otherwise.
ENV TMPVAULT_SCRATCH_DIR=/scratch
# The ops listener (/healthz, /readyz, /metrics) is on loopback: the
# HEALTHCHECK below and Kubernetes exec probes run inside the container and
# reach it there, and nothing outside needs it. For httpGet probes or a
# Prometheus scrape, set TMPVAULT_OPS_LISTEN=0.0.0.0:9090; it serves no key
# name or value either way.
ENV TMPVAULT_OPS_LISTEN=127.0.0.1:9090
# 8443: the mTLS API. 9090: the ops listener, when moved off loopback.
EXPOSE 8443 9090
# healthcheck GETs /readyz on TMPVAULT_OPS_LISTEN and exits 0 on 200; the
# image has no shell and needs none for this.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/tmpvault", "healthcheck"]
ENTRYPOINT ["/tmpvault"]
CMD ["serve"]

# ---------------------------------------------------------------------------
# Offline path. It comes before the Rust stage so that the classic builder,
# which builds every stage up to --target, never needs a registry.
#
# The classic builder also builds this stage for a plain `docker build .`,
# where no host binary need exist; a plain COPY of a missing file would
# stop that build here ("COPY failed: ... file does not exist"). So the
# binary is copied by a wildcard, which may match nothing, beside docs/,
# which always exists and which .dockerignore sends empty: without
# scripts/static-build this stage holds no /tmpvault, the default build goes
# on, and the README pairs the offline target with scripts/static-build
# (`scripts/static-build && docker build --target offline`).
# scripts/container-test checks that the offline image holds /tmpvault and
# nothing else, and that a classic default build gets past this stage.
FROM runtime AS offline
ARG BINARY=target/x86_64-unknown-linux-gnu/release/tmpvault
COPY docs ${BINARY}* /

# ---------------------------------------------------------------------------
# Default path: build the static binary (as scripts/static-build does).
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# hyper and h2 with tmpvault's changes ([patch.crates-io] in Cargo.toml).
COPY vendor ./vendor
# The workspace's other member (the benchmark): cargo reads its manifest;
# only `tmpvault` is built.
COPY bench ./bench
RUN RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=symbols \
      cargo build --locked --release --target x86_64-unknown-linux-gnu --bin tmpvault \
 && cp target/x86_64-unknown-linux-gnu/release/tmpvault /tmpvault

FROM runtime AS default
COPY --from=build /tmpvault /tmpvault
