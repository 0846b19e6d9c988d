#!/usr/bin/env python3
"""Checks that a built node image has the drivers each supported platform
needs: in /usr for the running node, and in the initrd for whatever the
initrd must reach (the disk that holds /usr). Exits 1 naming what is
missing, so image/artefacts.sh fails the build instead of shipping an
image that cannot find its disk on some cloud.

    python3 image/check-drivers.py [MKOSI_OUT]        (default build/mkosi)

A driver built into the kernel (modules.builtin) counts as present.
"""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("size_report", os.path.join(HERE, "size-report.py"))
size_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(size_report)

# Per platform: (where, drivers). "initrd" drivers are needed before the
# switch to the real root: the disk holding /usr and the root partition.
PLATFORMS = {
    "QEMU/KVM, OpenStack": {
        "initrd": ["virtio_blk", "virtio_scsi", "virtio_pci", "dm_verity", "erofs", "ext4"],
        "usr": ["virtio_net", "virtio_rng", "qemu_fw_cfg"],
    },
    "AWS (Nitro and Xen)": {
        "initrd": ["nvme", "xen_blkfront"],
        "usr": ["ena", "xen_netfront"],
    },
    "GCE": {
        "initrd": ["virtio_scsi", "nvme"],
        "usr": ["gve", "virtio_net"],
    },
    "Azure": {
        "initrd": ["hv_storvsc", "hv_vmbus"],
        "usr": ["hv_netvsc", "mlx5_core"],
    },
    "bare metal": {
        "initrd": ["ahci", "nvme", "sd_mod"],
        "usr": ["e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "mlx5_core", "bnxt_en"],
    },
    "Kubernetes networking (every node)": {
        "initrd": [],
        "usr": ["overlay", "br_netfilter", "veth", "vxlan", "nf_conntrack", "ip_vs", "wireguard"],
    },
}


def module_name(path):
    """`kernel/drivers/block/xen-blkfront.ko.xz` -> `xen_blkfront`."""
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def usr_modules(usr_partition):
    """(loadable, built-in) module names of the image's kernel."""
    with tempfile.TemporaryDirectory(prefix="muster-drivers-") as tmp:
        size_report.unpack_usr(usr_partition, tmp)
        loadable, builtin = set(), set()
        for kver in os.listdir(os.path.join(tmp, "lib/modules")):
            base = os.path.join(tmp, "lib/modules", kver)
            for d, _, names in os.walk(base):
                loadable.update(module_name(n) for n in names if re.search(r"\.ko(\.\w+)?$", n))
            path = os.path.join(base, "modules.builtin")
            if os.path.isfile(path):
                with open(path) as f:
                    builtin.update(module_name(line.strip()) for line in f if line.strip())
    return loadable, builtin


def initrd_modules(initrd):
    with open(initrd, "rb") as f:
        members = size_report.cpio_members(f.read())
    return {module_name(n) for n, _ in members if "/modules/" in n and re.search(r"\.ko(\.\w+)?$", n)}


def missing(platforms, usr_loadable, builtin, initrd):
    """(platform, where, driver) for every driver the image lacks. Pure."""
    gaps = []
    for platform, needs in platforms.items():
        for driver in needs["usr"] + needs["initrd"]:
            if driver not in usr_loadable and driver not in builtin:
                gaps.append((platform, "/usr", driver))
        for driver in needs["initrd"]:
            if driver not in initrd and driver not in builtin:
                gaps.append((platform, "initrd", driver))
    return gaps


def main():
    mkosi_out = sys.argv[1] if len(sys.argv) > 1 else "build/mkosi"
    parts = size_report.mkosi_parts(mkosi_out)
    usr = parts.get(size_report.USR_PARTITION)
    initrd_path = parts.get("initrd")
    if not usr or not initrd_path:
        sys.exit(f"check-drivers: no /usr partition or initrd in {mkosi_out}")
    try:
        loadable, builtin = usr_modules(usr)
        initrd = initrd_modules(initrd_path)
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"check-drivers: cannot read the image in {mkosi_out}: {e}")
    gaps = missing(PLATFORMS, loadable, builtin, initrd)
    for platform, needs in PLATFORMS.items():
        print(f"check-drivers: {platform}: initrd {' '.join(needs['initrd']) or '-'}; "
              f"/usr {' '.join(needs['usr'])}")
    if gaps:
        for platform, where, driver in gaps:
            print(f"check-drivers: MISSING {driver} in {where} (needed on {platform})",
                  file=sys.stderr)
        sys.exit(1)
    print(f"check-drivers: every platform's drivers are there ({len(loadable)} modules in /usr, "
          f"{len(initrd)} in the initrd, {len(builtin)} built in)")


if __name__ == "__main__":
    main()
