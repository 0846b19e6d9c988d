#!/usr/bin/env bash
# Turns mkosi's output into what users boot. Usage: artefacts.sh MKOSI_OUT OUT
#
#   muster.qcow2            QEMU (UEFI: OVMF + systemd-boot + UKI), compressed
#   muster.raw              raw GPT disk for `aws ec2 import-snapshot` (UEFI boot mode)
#   muster.gce.tar.gz       GCE image: disk.raw (size a multiple of 1 GiB) in a tar.gz
#   pxe/                    vmlinuz, initrd, muster-usr.cpio (the root image), muster.ipxe
#   SHA256SUMS, image.json  checksums; version, usrhash, Kubernetes version, sizes
#
# Each artefact boots the same verity-protected /usr: the usrhash= in the UKI
# (disks) or on the iPXE kernel line (PXE) pins it.
set -euo pipefail
src=${1:?mkosi output directory}
out=${2:?artefact directory}
here=$(cd "$(dirname "$0")" && pwd)

raw=$(ls "$src"/*.raw | grep -Ev '\.(esp|usr-[a-z0-9-]+)\.raw$' | head -1)
base=${raw%.raw}
usr=$(ls "$base".usr-*[0-9].raw | head -1)
verity=$(ls "$base".usr-*-verity.raw | head -1)
[ -f "$raw" ] && [ -f "$usr" ] && [ -f "$verity" ] || { echo "artefacts: mkosi output incomplete in $src" >&2; exit 1; }

usrhash=$(objcopy -O binary --only-section=.cmdline "$base.efi" /dev/stdout | tr ' \0' '\n\n' | sed -n 's/^usrhash=//p')
[ -n "$usrhash" ] || { echo "artefacts: no usrhash= in the UKI's command line" >&2; exit 1; }
cmdline=$(objcopy -O binary --only-section=.cmdline "$base.efi" /dev/stdout | tr -d '\0')

# Every supported platform's disk and network drivers are in the image
# (and the disk ones in the initrd), or no artefact is made.
python3 "$here/check-drivers.py" "$src"

rm -rf "$out"
mkdir -p "$out/pxe"

echo "artefacts: qcow2"
qemu-img convert -c -O qcow2 "$raw" "$out/muster.qcow2"

echo "artefacts: raw (AWS)"
cp --sparse=always "$raw" "$out/muster.raw"

echo "artefacts: GCE tar.gz"
gce=$(mktemp -d)
cp --sparse=always "$raw" "$gce/disk.raw"
gib=$((1024 * 1024 * 1024))
size=$(stat -c %s "$gce/disk.raw")
truncate -s $(( (size + gib - 1) / gib * gib )) "$gce/disk.raw"
# Growing the file leaves the backup GPT header mid-disk; put it at the end.
sfdisk --relocate gpt-bak-std "$gce/disk.raw" >/dev/null 2>&1
# Fixed owner, mode and time, and gzip without a name or timestamp, so two
# builds of one commit give the same tarball.
tar --format=oldgnu -S -C "$gce" --owner=0 --group=0 --numeric-owner --mode=0644 \
    --mtime="@${SOURCE_DATE_EPOCH:-0}" -cf - disk.raw | gzip -n >"$out/muster.gce.tar.gz"
rm -rf "$gce"

echo "artefacts: PXE set"
cp "$base.vmlinuz" "$out/pxe/vmlinuz"
cp "$base.initrd" "$out/pxe/initrd"
bash "$here/pxe-root.sh" "$raw" "$usr" "$verity" "$out/pxe/muster-usr.cpio"
# The disk's command line minus what only a disk boot needs, plus a
# volatile root (a PXE node has no disk of its own to keep state on).
pxe_cmdline="$cmdline root=tmpfs muster.platform=metal muster.config=\${muster-config}"
cat >"$out/pxe/muster.ipxe" <<IPXE
#!ipxe
# Muster node, network boot. Chain it from a site script that says where
# these files are served (base, ending in /) and, optionally, where the
# cluster config is (muster-config; default: config.yaml beside the files):
#   set base http://boot.example/muster/
#   chain \${base}muster.ipxe
# Serve the config over https where the network is not trusted: it holds
# the cluster secret.
isset \${base} || goto no_base
isset \${muster-config} || set muster-config \${base}config.yaml
kernel \${base}vmlinuz $pxe_cmdline
initrd \${base}initrd
initrd \${base}muster-usr.cpio
boot
:no_base
echo muster.ipxe: set base to the URL of the directory holding vmlinuz, initrd and muster-usr.cpio, then chain this script
exit 1
IPXE

kubernetes=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get("version"); print(v or "")' \
    "$here/../build/staging/usr/lib/muster/kubernetes.json" 2>/dev/null || true)
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
python3 - "$out" "$usrhash" "$kubernetes" "$raw" <<'PY'
import json, os, sys
out, usrhash, kube, raw = sys.argv[1:5]
files = {}
for root, _, names in os.walk(out):
    for n in names:
        p = os.path.join(root, n)
        files[os.path.relpath(p, out)] = {"bytes": os.path.getsize(p), "allocated_bytes": os.stat(p).st_blocks * 512}
json.dump({"image": os.path.basename(raw)[:-4], "usrhash": usrhash,
           "kubernetes": kube or None, "files": files}, open(os.path.join(out, "image.json"), "w"), indent=2)
PY
echo "artefacts: usrhash=$usrhash"
