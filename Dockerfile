# Tern: a native, clustered MQTT broker.
#
#   docker build -t tern .
#   docker run -p 1883:1883 -p 8888:8888 tern
#
# Configuration comes from TERN_SECTION__KEY environment variables and/or
# a TOML file passed with --config (see `tern --print-default-config`).

# --- skeleton: only the Cargo manifests, with every .rs file a stub ---------
# Copying the whole context and stripping it keeps this stage right however
# the workspace grows; its output only changes when a manifest, the lock
# file or the set of .rs files changes, so the dependency layer below is
# reused across source edits (no BuildKit cache mounts needed).
FROM rust:1.95-slim-bookworm AS skeleton
WORKDIR /src
COPY . .
RUN find . -type f ! -name Cargo.toml ! -name Cargo.lock ! -name '*.rs' -delete \
 && find . -name '*.rs' | while read -r f; do echo 'fn main() {}' >"$f"; done \
 && find . -type d -empty -delete

# --- build --------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies first: fetched from crates.io and compiled against the stubs.
COPY --from=skeleton /src/ ./
RUN cargo build --release --locked --bin tern
# Then the real sources. COPY keeps the context's mtimes, which can be older
# than the stubs', so touch them for cargo to see the change.
COPY . .
RUN find . -name '*.rs' -not -path './target/*' -exec touch {} + \
 && cargo build --release --locked --bin tern \
 && install -D -m 0755 target/release/tern /out/tern \
 && install -d -m 0750 /out/data \
 && /out/tern --version

# --- runtime ------------------------------------------------------------------
# glibc + libgcc_s, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tern /usr/local/bin/tern
# The data directory, owned by the runtime user: durable by default
# (sessions, queues and retained messages survive a restart). A volume, so
# that `docker run -v tern-data:/var/lib/tern` keeps it across containers;
# `-e TERN_STORAGE__DIR=` (empty) keeps everything in memory instead.
COPY --from=build --chown=10000:10000 /out/data /var/lib/tern
VOLUME ["/var/lib/tern"]
# Listeners on every interface (the embedded defaults, spelled out so
# `docker inspect` shows them). Authentication, TLS and clustering are left
# to the deployment (the Helm chart sets them).
ENV TERN_LISTENERS__TCP__BIND=0.0.0.0:1883 \
    TERN_LISTENERS__TLS__BIND=0.0.0.0:8883 \
    TERN_ADMIN__BIND=0.0.0.0:8888 \
    TERN_STORAGE__DIR=/var/lib/tern \
    TERN_AUTH__ALLOW_ANONYMOUS=false \
    RUST_LOG=info
# 1883 MQTT, 8883 MQTT over TLS, 8888 admin HTTP (health, readiness,
# metrics, API), 44053 cluster mesh.
EXPOSE 1883 8883 8888 44053
USER 10000:10000
WORKDIR /var/lib/tern
ENTRYPOINT ["/usr/local/bin/tern"]
