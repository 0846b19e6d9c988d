#!/usr/bin/env bash
# Installs what the image build needs, idempotently, without touching the
# host's own tools: a Debian 13 (trixie) tools tree made with debootstrap
# (systemd-repart, ukify, systemd-boot, mkfs.erofs, mtools, apt …: mkosi runs
# every build program from it) and mkosi 25 itself, unpacked from trixie's
# package and run with the host's python3. The bookworm host's own systemd
# (252) is too old for repart's verity and erofs support.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image/tools.env
. "$here/tools.env"

need_apt=()
# fdisk (sfdisk), cpio, binutils (objcopy), qemu-utils: the artefact step.
for p in debootstrap python3 git fdisk cpio binutils qemu-utils zstd; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "image/install-build-deps: apt-get install ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# What the tools tree holds. Virtual packages are spelled out
# (python3-cffi-backend, dbus): debootstrap does not resolve them.
tools_packages=systemd,systemd-repart,systemd-ukify,systemd-boot-efi,systemd-boot-tools,erofs-utils,squashfs-tools,mtools,dosfstools,cryptsetup-bin,e2fsprogs,fdisk,apt,zstd,xz-utils,cpio,kmod,python3,python3-pefile,python3-cryptography,python3-cffi-backend,dbus,openssl,jq,util-linux,debian-archive-keyring,gnupg,ca-certificates,diffutils,mkosi
stamp=$MUSTER_TOOLS_TREE/.muster-packages
if [ "$(cat "$stamp" 2>/dev/null)" != "$tools_packages" ]; then
    echo "image/install-build-deps: debootstrap trixie tools tree into $MUSTER_TOOLS_TREE (about 2 min)"
    rm -rf "$MUSTER_TOOLS_TREE"
    mkdir -p "$MUSTER_BUILD_DIR"
    debootstrap --variant=minbase --include="$tools_packages" trixie "$MUSTER_TOOLS_TREE" \
        http://deb.debian.org/debian >"$MUSTER_BUILD_DIR/debootstrap.log" 2>&1 || {
        tail -30 "$MUSTER_BUILD_DIR/debootstrap.log" >&2
        exit 1
    }
    echo "$tools_packages" >"$stamp"
    rm -rf "$MUSTER_BUILD_DIR/mkosi"
fi

if [ ! -d "$MUSTER_MKOSI/mkosi" ]; then
    deb=$(ls "$MUSTER_TOOLS_TREE"/var/cache/apt/archives/mkosi_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || { echo "image/install-build-deps: no mkosi .deb in the tools tree" >&2; exit 1; }
    dpkg -x "$deb" "$MUSTER_BUILD_DIR/mkosi"
fi
mkosi --version
