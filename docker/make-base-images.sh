#!/usr/bin/env bash
# Build, on a machine that cannot pull images, local stand-ins with exactly
# the names the Dockerfile's FROM lines use:
#
#   rust:1.95-slim-bookworm                 Debian bookworm (debootstrap minbase)
#                                           + gcc, libc6-dev, pkg-config,
#                                           ca-certificates + this host's Rust
#                                           toolchain under /usr/local/{rustup,cargo}
#   gcr.io/distroless/cc-debian12:nonroot   glibc, libgcc_s, libstdc++, CA
#                                           certificates, passwd/group with
#                                           nonroot (65532), nothing else
#
# Idempotent: an image that already exists is left alone (FORCE=1 rebuilds).
# Needs root, docker, and Debian's mirror (for debootstrap). See docker/README.md.
set -euo pipefail

RUST_IMAGE=${RUST_IMAGE:-rust:1.95-slim-bookworm}
DISTROLESS_IMAGE=${DISTROLESS_IMAGE:-gcr.io/distroless/cc-debian12:nonroot}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUST_VERSION=${RUST_VERSION:-1.95.0}
WORK=${BASE_IMAGES_WORKDIR:-/var/tmp/tern-base-images}
FORCE=${FORCE:-0}

log() { echo "make-base-images: $*" >&2; }

have_image() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

if have_image "$RUST_IMAGE" && have_image "$DISTROLESS_IMAGE"; then
    log "$RUST_IMAGE and $DISTROLESS_IMAGE already exist"
    exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, chroot)"; exit 1; }

apt_quiet() {
    DEBIAN_FRONTEND=noninteractive apt-get "$@" -qq -o=Dpkg::Use-Pty=0 >/dev/null
}

# A bookworm rootfs with the build stage's packages; the distroless rootfs
# takes its libraries from the same tree, so both stages share one glibc.
debian_rootfs() {
    local root="$WORK/bookworm"
    if [ -f "$root/.tern-complete" ]; then
        echo "$root"; return
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt_quiet update && apt_quiet install -y --no-install-recommends debootstrap
    fi
    rm -rf "$root"; mkdir -p "$root"
    log "debootstrap --variant=minbase $SUITE (a few minutes)"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    cat >"$root/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SRC
    log "installing gcc libc6-dev pkg-config ca-certificates in the rootfs"
    mount -t proc proc "$root/proc"
    trap 'umount "$root/proc" 2>/dev/null || true' RETURN
    chroot "$root" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive &&
        apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config ca-certificates libstdc++6 >/dev/null &&
        apt-get clean && rm -rf /var/lib/apt/lists/*' >&2
    umount "$root/proc"; trap - RETURN
    touch "$root/.tern-complete"
    echo "$root"
}

host_toolchain() {
    local dir
    for dir in "$HOME/.rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu" \
               "$HOME/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"; do
        if [ -x "$dir/bin/rustc" ] && "$dir/bin/rustc" --version | grep -q "^rustc $RUST_VERSION "; then
            readlink -f "$dir"; return
        fi
    done
    if command -v rustup >/dev/null; then
        dir=$(dirname "$(dirname "$(rustup which rustc)")")
        if "$dir/bin/rustc" --version | grep -q "^rustc $RUST_VERSION "; then
            readlink -f "$dir"; return
        fi
    fi
    log "no Rust $RUST_VERSION toolchain found on this host"; exit 1
}

make_rust_image() {
    local base toolchain stage tc
    base=$(debian_rootfs)
    toolchain=$(host_toolchain)
    stage="$WORK/rust-rootfs"
    log "assembling $RUST_IMAGE from $base and $toolchain"
    rm -rf "$stage"; mkdir -p "$stage"
    cp -a "$base/." "$stage/"
    rm -f "$stage/.tern-complete"
    # Trust what this host trusts: a machine behind a TLS-inspecting proxy
    # has its CA in /usr/local/share/ca-certificates, and the build stage
    # must reach crates.io through the same proxy.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        log "adding the host's local CA certificates"
        mkdir -p "$stage/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$stage/usr/local/share/ca-certificates/"
        chroot "$stage" update-ca-certificates >/dev/null 2>&1
    fi
    tc="$stage/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu"
    mkdir -p "$tc" "$stage/usr/local/cargo/bin"
    # Everything but the documentation (rust-docs is ~800 MB of HTML).
    tar -C "$toolchain" --exclude=./share/doc --exclude=./share/man -c . | tar -C "$tc" -x
    # No rustup inside: cargo/rustc/... in CARGO_HOME/bin point straight
    # into the toolchain, which is all a build needs.
    local b
    for b in "$tc"/bin/*; do
        ln -s "/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu/bin/$(basename "$b")" \
              "$stage/usr/local/cargo/bin/$(basename "$b")"
    done
    printf 'toolchain = "%s-x86_64-unknown-linux-gnu"\n' "$RUST_VERSION" >"$stage/usr/local/rustup/settings.toml"
    chmod -R a+rwX "$stage/usr/local/cargo" "$stage/usr/local/rustup"
    tar -C "$stage" -c . | docker import \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "ENV RUST_VERSION=$RUST_VERSION" \
        --change 'CMD ["bash"]' \
        - "$RUST_IMAGE" >/dev/null
    rm -rf "$stage"
    log "made $RUST_IMAGE"
}

make_distroless_image() {
    local base stage lib f
    base=$(debian_rootfs)
    stage="$WORK/distroless-rootfs"
    log "assembling $DISTROLESS_IMAGE from $base"
    rm -rf "$stage"; mkdir -p "$stage"
    # Merged /usr, as in Debian 12 and distroless.
    mkdir -p "$stage/usr/lib/x86_64-linux-gnu" "$stage/usr/lib64" "$stage/etc/ssl/certs" \
             "$stage/tmp" "$stage/home/nonroot" "$stage/root" "$stage/var/lib"
    ln -s usr/lib "$stage/lib"; ln -s usr/lib64 "$stage/lib64"
    ln -s usr/bin "$stage/bin"; ln -s usr/sbin "$stage/sbin"
    mkdir -p "$stage/usr/bin" "$stage/usr/sbin"
    lib="$base/usr/lib/x86_64-linux-gnu"
    # glibc (libc6) runtime libraries, libgcc_s (libgcc-s1), libstdc++ (libstdc++6).
    for f in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 \
             libresolv.so.2 libnss_dns.so.2 libnss_files.so.2 libutil.so.1 libanl.so.1 \
             libgcc_s.so.1; do
        cp -L "$lib/$f" "$stage/usr/lib/x86_64-linux-gnu/$f"
    done
    cp -L "$lib"/libstdc++.so.6 "$stage/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/usr/lib64/ld-linux-x86-64.so.2"
    cp -L "$base/etc/ssl/certs/ca-certificates.crt" "$stage/etc/ssl/certs/ca-certificates.crt"
    [ -d "$base/usr/share/zoneinfo" ] && mkdir -p "$stage/usr/share" && cp -a "$base/usr/share/zoneinfo" "$stage/usr/share/" 2>/dev/null || true
    cat >"$stage/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
    cat >"$stage/etc/group" <<'G'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
G
    printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n' >"$stage/etc/nsswitch.conf"
    echo "$SUITE" >"$stage/etc/debian_version"
    printf 'PRETTY_NAME="Distroless (local stand-in)"\nID=debian\nVERSION_ID="12"\n' >"$stage/etc/os-release"
    chmod 1777 "$stage/tmp"
    chown 65532:65532 "$stage/home/nonroot"
    chmod 700 "$stage/root"
    tar -C "$stage" --numeric-owner -c . | docker import \
        --change 'USER 65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$DISTROLESS_IMAGE" >/dev/null
    rm -rf "$stage"
    log "made $DISTROLESS_IMAGE"
}

mkdir -p "$WORK"
have_image "$RUST_IMAGE" || make_rust_image
have_image "$DISTROLESS_IMAGE" || make_distroless_image
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^(${RUST_IMAGE%%:*}|${DISTROLESS_IMAGE%%:*}):" >&2 || true
