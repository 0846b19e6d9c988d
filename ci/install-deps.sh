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
want_for_tests bind9          # tier 1: the real DNS server for dns.provider rfc2136 (named)
want_for_tests bind9-dnsutils # tier 1: dig and nsupdate, to check and seed its zone
want_for_tests bird2          # tier 1: the real BGP router for apiEndpoint.mode bgp
want_for_tests packer         # `packer validate` of image/packer (Debian's 1.6.6)
want_for_tests runc           # tier 1: containerd runs the shipped sandbox image

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

# Debian 13 (trixie) packages unpacked into $TOOLS/DIR, with a private apt
# state (the host's sources stay untouched): they run fine on bookworm.
trixie_debs() {
    local dest=$1
    shift
    echo "ci/install-deps: $* from Debian 13 into $dest"
    local apt_dir
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$apt_dir/sources.list"
    local apt_opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache")
    apt-get "${apt_opts[@]}" update -qq
    # pkg/trixie: the host may have a newer one of the same name installed
    # (a cloud SDK's kubectl), which would otherwise be the candidate.
    local pkgs=()
    for p in "$@"; do pkgs+=("$p/trixie"); done
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download "${pkgs[@]}")
    for deb in "$apt_dir"/*.deb; do dpkg -x "$deb" "$dest"; done
    rm -rf "$apt_dir"
}

# kubectl for the Kubernetes tests and `muster lab kubectl` (Debian 13's,
# 1.32: it speaks to the 1.28 test binaries for everything used here).
[ -x "$TOOLS/kubectl/usr/bin/kubectl" ] || trixie_debs "$TOOLS/kubectl" kubectl
"$TOOLS/kubectl/usr/bin/kubectl" version --client 2>/dev/null | sed -n 1p

# Kubernetes v1.28.7 server binaries, baked into the lab's image (and run
# by the tier-1 tests): built from source where the project's shared
# folder is (no release binaries can be downloaded on the build machines).
bash "$(dirname "$0")/kubernetes-bins.sh"

if [ "$mode" = demo ]; then
    exit 0
fi

# Everything below is for the test tiers only.
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# etcd: the version the image ships (Debian 13, 3.5.x); bookworm only has 3.4.
[ -x "$TOOLS/etcd/usr/bin/etcd" ] || trixie_debs "$TOOLS/etcd" etcd-server etcd-client
# (sed, not head: head closing the pipe early fails the script under pipefail)
"$TOOLS/etcd/usr/bin/etcd" --version | sed -n 1p

# containerd as the image ships it (Debian 13's 1.7, whose content and
# images APIs the agent uses), for the tier-1 tests. Its runc comes from
# the host (want_for_tests runc above): Debian 13's needs glibc 2.38.
[ -x "$TOOLS/containerd/usr/bin/containerd" ] || trixie_debs "$TOOLS/containerd" containerd
"$TOOLS/containerd/usr/bin/containerd" --version

# moto: the AWS API emulator, in its own venv.
if [ ! -x "$TOOLS/moto/bin/moto_server" ]; then
    echo "ci/install-deps: moto[server] into $TOOLS/moto"
    python3 -m venv "$TOOLS/moto"
    "$TOOLS/moto/bin/pip" install -q 'moto[server]>=5,<6'
fi

# A minimal Debian root with systemd, booted by systemd-nspawn for the
# systemd supervisor's D-Bus tests.
bash "$(dirname "$0")/systemd-root.sh"
