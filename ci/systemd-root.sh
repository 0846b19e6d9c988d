#!/usr/bin/env bash
# Builds the root file system that the systemd D-Bus tests boot with
# systemd-nspawn (agent/tests/support/nspawn.rs): a minimal Debian with
# systemd as init and a D-Bus system bus. Cached: once built, re-running does
# nothing. Run as root; ci/install-deps.sh calls it.
#
#   MUSTER_TOOLS         where test tools live      (default /opt/muster-test)
#   MUSTER_SYSTEMD_ROOT  the root to build          (default $MUSTER_TOOLS/systemd-root)
#   MUSTER_DEBIAN_MIRROR the mirror for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail

TOOLS=${MUSTER_TOOLS:-/opt/muster-test}
ROOT=${MUSTER_SYSTEMD_ROOT:-$TOOLS/systemd-root}
MIRROR=${MUSTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The tests look for this file: a root without it is incomplete (an
# interrupted build) and is rebuilt. Bump the number when the recipe changes.
STAMP="$ROOT/.muster-systemd-root-v1"

need_apt=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_apt+=("$1"); }
want debootstrap
want systemd-container # systemd-nspawn
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "ci/systemd-root: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ -e "$STAMP" ]; then
    echo "ci/systemd-root: $ROOT is ready"
    exit 0
fi

# An unfinished root is rebuilt; anything else at that path is not ours to delete.
if [ -e "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ] && [ ! -e "$ROOT/etc/debian_version" ]; then
    echo "ci/systemd-root: $ROOT exists and is not a Debian root; refusing to replace it" >&2
    exit 1
fi
# Build next to the final place and rename at the end, so a half-built root
# is never mistaken for a finished one.
tmp="$ROOT.building.$$"
trap 'rm -rf "$tmp" "$tmp.log"' EXIT
rm -rf "$ROOT" "$ROOT".building.*
mkdir -p "$(dirname "$ROOT")"
echo "ci/systemd-root: debootstrap $SUITE into $ROOT (about 90 s)"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 \
    "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || {
    tail -n 30 "$tmp.log" >&2
    exit 1
}
rm -f "$tmp.log"

# /etc/hostname would override nspawn's --hostname.
rm -f "$tmp/etc/hostname"
# Nothing to log in to: no getty on the (read-only) console, which also keeps
# boot quick. The tests only need systemd and the system bus.
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$tmp/etc/systemd/system/getty@.service"
# Empty machine-id: systemd makes a fresh one per boot (the root is shared by
# every test container through --volatile=overlay).
: >"$tmp/etc/machine-id"
# Drop the package caches; they are not needed to boot.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*

touch "$tmp/$(basename "$STAMP")"
mv "$tmp" "$ROOT"
trap - EXIT
echo "ci/systemd-root: $ROOT is ready"
