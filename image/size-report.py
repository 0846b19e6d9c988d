#!/usr/bin/env python3
"""The node image's size budget, as Markdown tables (docs/benchmarks.md).

    python3 image/size-report.py [ARTEFACTS [MKOSI_OUT]]   (default build/image build/mkosi)

Reads what `bash image/build.sh` left behind: the artefacts users download,
mkosi's split outputs (UKI, kernel, initrd, the /usr partition) and its JSON
manifest (packages). The /usr erofs is unpacked with the image tools tree's
fsck.erofs and the initrd's cpio archives are read here, so the report names
the largest files and directories in each. Sizes are bytes as stored: the
artefacts and partitions compressed, files inside them uncompressed.
Standard library only: CI and a fresh checkout run it without installs.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

MB = 1000 * 1000
TOOLS = os.environ.get("MUSTER_TOOLS_TREE", "/opt/muster-build/tools")


def mb(n):
    return f"{n / MB:.1f}"


def allocated(path):
    return os.stat(path).st_blocks * 512


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def one(pattern):
    found = sorted(glob.glob(pattern))
    return found[0] if found else None


# The key of the /usr partition in mkosi_parts(); check-drivers.py reads it too.
USR_PARTITION = "/usr partition (erofs)"


def mkosi_parts(mkosi_out):
    """mkosi's split outputs: name -> path (missing ones left out)."""
    raw = [p for p in glob.glob(f"{mkosi_out}/*.raw")
           if not p.endswith(".esp.raw") and ".usr-" not in os.path.basename(p)]
    if not raw:
        return {}
    base = sorted(raw)[0][: -len(".raw")]
    parts = {
        "UKI (kernel + initrd + command line)": one(f"{base}.efi"),
        "kernel": one(f"{base}.vmlinuz"),
        "initrd": one(f"{base}.initrd"),
        USR_PARTITION: one(f"{base}.usr-*[0-9].raw"),
        "/usr verity hash partition": one(f"{base}.usr-*-verity.raw"),
        "ESP partition": one(f"{base}.esp.raw"),
    }
    parts["manifest"] = one(f"{base}.manifest")
    return {k: v for k, v in parts.items() if v}


def artefact_rows(out):
    rows = []
    for name in ["muster.qcow2", "muster.raw", "muster.gce.tar.gz"]:
        p = os.path.join(out, name)
        if os.path.isfile(p):
            rows.append((name, mb(os.path.getsize(p)), mb(allocated(p))))
    pxe = [p for p in sorted(glob.glob(os.path.join(out, "pxe", "*"))) if os.path.isfile(p)]
    for p in pxe:
        rows.append((f"pxe/{os.path.basename(p)}", mb(os.path.getsize(p)), mb(allocated(p))))
    if pxe:
        total = sum(os.path.getsize(p) for p in pxe)
        rows.append(("PXE set (all of pxe/)", mb(total), mb(sum(allocated(p) for p in pxe))))
    return rows


def installed_sizes(lists):
    """(package, version) -> installed bytes, from apt's Packages indexes
    (mkosi's manifest names packages and versions but not sizes)."""
    sizes = {}
    for path in lists:
        with open(path, errors="replace") as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(
                    line.split(": ", 1) for line in stanza.splitlines() if ": " in line
                    and not line.startswith(" ")
                )
                if "Package" in fields and "Installed-Size" in fields:
                    key = (fields["Package"], fields.get("Version", ""))
                    sizes[key] = int(fields["Installed-Size"]) * 1024
    return sizes


def packages(manifest, lists):
    """(name, installed bytes or None) from mkosi's JSON manifest, largest first."""
    with open(manifest) as f:
        pkgs = json.load(f).get("packages", [])
    sizes = installed_sizes(lists)
    sized = [(p["name"], sizes.get((p["name"], p.get("version", "")))) for p in pkgs]
    return sorted(sized, key=lambda p: -(p[1] or 0))


def erofs_tool(name, *args):
    """A command line for one of the tools tree's erofs-utils, run with the
    tree's own loader and libraries (the host may be an older Debian)."""
    loader = os.path.join(TOOLS, "usr/lib64/ld-linux-x86-64.so.2")
    libs = os.path.join(TOOLS, "usr/lib/x86_64-linux-gnu")
    cmd = [os.path.join(TOOLS, "usr/bin", name), *args]
    if os.path.exists(loader):
        cmd = [loader, "--library-path", libs] + cmd
    return cmd


def unpack_usr(partition, into):
    """Unpacks an erofs image with the tools tree's fsck.erofs."""
    subprocess.run(erofs_tool("fsck.erofs", f"--extract={into}", "--no-preserve", partition),
                   check=True, stdout=subprocess.DEVNULL)


def erofs_settings(partition):
    """'lzma; features: … big_pcluster fragments …' from the superblock."""
    try:
        out = subprocess.run(erofs_tool("dump.erofs", "-s", partition), check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return f"settings unknown: dump.erofs failed ({e})"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    algorithms = fields.get("Filesystem compr_algs", "").strip()
    features = fields.get("Filesystem features", "").strip()
    return f"{algorithms or 'uncompressed'}; features: {features}"


def walk_sizes(root):
    """(path relative to root, bytes) of every regular file."""
    files = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append((os.path.relpath(p, root), os.path.getsize(p)))
    return files


def cpio_members(data):
    """(name, bytes) of every file in an initrd: newc cpio archives, raw or
    zstd-compressed, one after another (mkosi's initrd, then its kernel
    modules; padding between them). A later archive's file of the same name
    replaces an earlier one, as the kernel unpacks them."""
    members = {}
    for name, size in raw_cpio_members(data):
        members[name] = size
    # Each zstd frame start, decompressed to wherever its stream ends. A
    # frame that ran straight into the next gives both; the names dedupe.
    start = data.find(ZSTD_MAGIC)
    while start != -1:
        for name, size in raw_cpio_members(decompress(["zstd", "-dcq"], data[start:])):
            members[name] = size
        start = data.find(ZSTD_MAGIC, start + 1)
    return list(members.items())


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def raw_cpio_members(data):
    """Files of the uncompressed newc cpio archives at the start of `data`
    (stops at the first byte that is neither an archive nor padding)."""
    members, pos = [], 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] not in (b"070701", b"070702"):
            if data[pos] == 0:
                pos += 1
                continue
            break
        head = data[pos:pos + 110]
        namesize = int(head[94:102], 16)
        filesize = int(head[54:62], 16)
        mode = int(head[14:22], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode(errors="replace")
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            continue
        if mode & 0o170000 == 0o100000:
            members.append((name, filesize))
        pos = (pos + filesize + 3) & ~3
    return members


def decompress(cmd, data):
    # What comes after the compressed stream is not an error here: the
    # output up to there is what counts.
    return subprocess.run(cmd, input=data, capture_output=True).stdout


def by_directory(files, depth):
    """Bytes per directory, cut at `depth` levels, largest first."""
    sizes = Counter()
    for path, size in files:
        parents = path.strip("/").split("/")[:-1]
        sizes["/".join(parents[:depth]) or "."] += size
    return sizes.most_common()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "build/image"
    mkosi_out = sys.argv[2] if len(sys.argv) > 2 else "build/mkosi"
    if not os.path.isdir(out):
        sys.exit(f"size-report: no artefacts in {out}: run `bash image/build.sh` first")
    image = {}
    if os.path.isfile(os.path.join(out, "image.json")):
        with open(os.path.join(out, "image.json")) as f:
            image = json.load(f)
    print(f"### Node image {image.get('image', '?')} "
          f"(Kubernetes binaries: {image.get('kubernetes', 'none')})\n")
    print("Artefacts (what a machine downloads), MB = 10^6 bytes:\n")
    print(table(["artefact", "MB", "MB allocated"], artefact_rows(out)))

    parts = mkosi_parts(mkosi_out)
    if not parts:
        print(f"\n(no mkosi outputs in {mkosi_out}: parts, packages and files left out)")
        return
    print("\nParts:\n")
    print(table(["part", "MB"], [(k, mb(os.path.getsize(v)))
                                 for k, v in parts.items() if k != "manifest"]))

    if "manifest" in parts:
        lists = glob.glob(os.environ.get(
            "MUSTER_APT_LISTS", "/var/cache/mkosi/*/lib/apt/lists/*_Packages"))
        pkgs = packages(parts["manifest"], lists)
        known = [(n, s) for n, s in pkgs if s is not None]
        print(f"\nPackages: {len(pkgs)}, {mb(sum(s for _, s in known))} MB installed "
              f"({len(known)} with a size in apt's indexes; before the image drops "
              "docs and unneeded files). The 20 largest:\n")
        print(table(["package", "MB installed"], [(n, mb(s)) for n, s in known[:20]]))

    usr = parts.get(USR_PARTITION)
    if usr:
        tmp = tempfile.mkdtemp(prefix="muster-size-")
        try:
            unpack_usr(usr, tmp)
            files = walk_sizes(tmp)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"\n/usr: could not unpack {usr} ({e}); its files are left out")
            files = []
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if usr and files:
        total = sum(s for _, s in files)
        print(f"\n/usr: {len(files)} files, {mb(total)} MB uncompressed, "
              f"{mb(os.path.getsize(usr))} MB as erofs "
              f"({os.path.getsize(usr) / max(total, 1):.0%}; {erofs_settings(usr)}). "
              "By directory:\n")
        print(table(["directory", "MB"], [(f"/usr/{d}", mb(s))
                                           for d, s in by_directory(files, 2)[:20]]))
        print("\nLargest files in /usr:\n")
        top = sorted(files, key=lambda f: -f[1])[:20]
        print(table(["file", "MB"], [(f"/usr/{p}", mb(s)) for p, s in top]))

    initrd = parts.get("initrd")
    if initrd:
        try:
            with open(initrd, "rb") as f:
                members = cpio_members(f.read())
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            print(f"\ninitrd: could not read {initrd} ({e})")
            return
        total = sum(s for _, s in members)
        print(f"\ninitrd: {len(members)} files, {mb(total)} MB uncompressed, "
              f"{mb(os.path.getsize(initrd))} MB compressed. By directory:\n")
        print(table(["directory", "MB"], [(d, mb(s)) for d, s in by_directory(members, 3)[:15]]))


if __name__ == "__main__":
    main()
