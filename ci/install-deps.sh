#!/usr/bin/env bash
# Installs what the build and the tests need, on a fresh Debian machine (run
# as root). Idempotent: re-running installs nothing new.
#
#   bash ci/install-deps.sh          everything: build, image, lab and every test tier
#   bash ci/install-deps.sh --demo   only what `ci/demo.sh` needs: build, image, lab
set -euo pipefail

mode=all
case ${1:-} in
    --demo) mode=demo ;;
    "") ;;
    *) echo "ci/install-deps.sh: unknown argument $1 (use --demo or nothing)" >&2; exit 2 ;;
esac

# Test tools land here (not on the system PATH) so they never shadow the host's.
TOOLS=${MUSTER_TOOLS:-/opt/muster-test}

need_apt=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }
# Only for the test tiers, not for the demo.
want_for_tests() { [ "$mode" = demo ] || want "$1"; }

want build-essential          # C toolchain for -sys crates
want pkg-config
want protobuf-compiler        # etcd-client's build (protoc) ...
want libprotobuf-dev          # ... and its well-known .proto files
want iproute2                 # muster lab and tier 1: network namespaces, veth, bridges
want ovmf                     # muster lab: UEFI firmware for the disk image
want ipxe-qemu                # muster lab: the NICs' option ROMs (and iPXE network boot)
want dnsmasq-base             # muster lab: DHCP on the lab bridge (no service)
want fdisk                    # image artefacts and tier 2: sfdisk
want cpio                     # image artefacts: the PXE root image
want_for_tests python3-venv   # tier 1: moto (AWS API emulator) in a venv
want_for_tests bird2          # tier 1: the real BGP router for apiEndpoint.mode bgp
want_for_tests packer         # `packer validate` of image/packer (Debian's 1.6.6)

# QEMU 10 from bookworm-backports: bookworm's own qemu-system 7.2 conflicts
# with the backports qemu-utils these machines already have
# (docs/machines.md).
bpo=/etc/apt/sources.list.d/muster-bookworm-backports.sources
if [ ! -e "$bpo" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$bpo"
fi
need_bpo=()
dpkg -s qemu-system-x86 >/dev/null 2>&1 || need_bpo+=(qemu-system-x86 qemu-utils)

if [ "${#need_apt[@]}" -gt 0 ] || [ "${#need_bpo[@]}" -gt 0 ]; then
    echo "ci/install-deps: apt-get install ${need_apt[*]} ${need_bpo[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Install daemons (bird) without starting them: the tests run their own,
    # inside network namespaces.
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    [ "${#need_apt[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    [ "${#need_bpo[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_bpo[@]}"
    [ "$had_policy" = 1 ] || rm -f "$policy"
fi

# The image build's tools (a trixie tools tree and mkosi).
bash "$(dirname "$0")/../image/install-build-deps.sh"

if ! command -v cargo >/dev/null 2>&1; then
    echo "ci/install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi

if [ "$mode" = demo ]; then
    exit 0
fi

# Everything below is for the test tiers only.
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# etcd: the version the image ships (Debian 13 trixie, 3.5.x). Bookworm only
# has 3.4, so fetch trixie's .deb with a private apt state (the host's sources
# stay untouched) and unpack it; it runs fine on bookworm.
if [ ! -x "$TOOLS/etcd/usr/bin/etcd" ]; then
    echo "ci/install-deps: etcd-server from Debian 13 into $TOOLS/etcd"
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$TOOLS/etcd"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$apt_dir/sources.list"
    apt_opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download etcd-server etcd-client 2>/dev/null)
    for deb in "$apt_dir"/etcd-*.deb; do dpkg -x "$deb" "$TOOLS/etcd"; done
    rm -rf "$apt_dir"
fi
# (sed, not head: head closing the pipe early fails the script under pipefail)
"$TOOLS/etcd/usr/bin/etcd" --version | sed -n 1p

# moto: the AWS API emulator, in its own venv.
if [ ! -x "$TOOLS/moto/bin/moto_server" ]; then
    echo "ci/install-deps: moto[server] into $TOOLS/moto"
    python3 -m venv "$TOOLS/moto"
    "$TOOLS/moto/bin/pip" install -q 'moto[server]>=5,<6'
fi

# A minimal Debian root with systemd, booted by systemd-nspawn for the
# systemd supervisor's D-Bus tests.
bash "$(dirname "$0")/systemd-root.sh"
