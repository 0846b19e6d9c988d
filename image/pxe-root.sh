#!/usr/bin/env bash
# Builds the PXE root image: a cpio, loaded by iPXE as a second initrd, that
# holds /muster/usr.img (a small GPT disk with just the usr and usr-verity
# partitions, with the same partition UUIDs as the disk image, so the
# initrd's veritysetup finds them from usrhash= alone) and a unit that
# loop-attaches it in the initrd. Usage: pxe-root.sh DISK.raw USR.raw VERITY.raw OUT.cpio
set -euo pipefail
disk=$1 usr=$2 verity=$3 out=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Partition types and UUIDs as in the disk image.
dump=$(sfdisk -d "$disk")
field() { echo "$dump" | grep "name=\"$1\"" | sed -n "s/.*$2=\([^,]*\).*/\1/p" | tr -d ' "'; }
usr_name=$(echo "$dump" | grep -o 'name="usr-[a-z0-9-]*"' | grep -v verity | head -1 | cut -d'"' -f2)
ver_name="$usr_name-verity"

sector=512
usr_sectors=$(( ($(stat -c %s "$usr") + sector - 1) / sector ))
ver_sectors=$(( ($(stat -c %s "$verity") + sector - 1) / sector ))
first=2048
img=$work/root/muster/usr.img
mkdir -p "$work/root/muster"
truncate -s $(( (first + usr_sectors + ver_sectors + 2048) * sector )) "$img"
# The disk's own GPT GUID, so that two builds give the same bytes.
label_id=$(echo "$dump" | sed -n 's/^label-id: *//p')
sfdisk --quiet "$img" <<SFDISK
label: gpt
label-id: $label_id
start=$first, size=$usr_sectors, type=$(field "$usr_name" type), uuid=$(field "$usr_name" uuid), name="$usr_name"
start=$((first + usr_sectors)), size=$ver_sectors, type=$(field "$ver_name" type), uuid=$(field "$ver_name" uuid), name="$ver_name"
SFDISK
dd if="$usr" of="$img" bs=$sector seek=$first conv=notrunc,sparse status=none
dd if="$verity" of="$img" bs=$sector seek=$((first + usr_sectors)) conv=notrunc,sparse status=none

units=$work/root/usr/lib/systemd/system
mkdir -p "$units/initrd-root-device.target.wants"
cat >"$units/muster-pxe-usr.service" <<'UNIT'
[Unit]
Description=Attach the network-booted /usr image
DefaultDependencies=no
ConditionPathExists=/etc/initrd-release
ConditionPathExists=/muster/usr.img
Before=initrd-root-device.target veritysetup-pre.target
Wants=modprobe@loop.service
After=modprobe@loop.service systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
# --partscan: udev then publishes the partitions by PARTUUID, which is where
# systemd-veritysetup looks for the usrhash= image.
ExecStart=losetup --read-only --partscan --find /muster/usr.img
UNIT
ln -s ../muster-pxe-usr.service "$units/initrd-root-device.target.wants/muster-pxe-usr.service"

# Reproducible archive: fixed order, inode numbers and times.
find "$work/root" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
(cd "$work/root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible) >"$out"
