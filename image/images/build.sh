#!/usr/bin/env bash
# Builds the container images a node ships (nothing is pulled on a node):
# OCI image layouts (oci-layout, index.json, blobs/sha256/...) the agent
# imports into containerd at boot. Reproducible: fixed times, owners and
# order, uncompressed layers.
#
#   build.sh OUT_DIR [--test-images]
#
#   pause    registry.k8s.io/pause:3.9   the sandbox of every pod (pause.c, static)
#   busybox  muster.local/busybox:1      test workloads only (--test-images):
#                                        Debian 13's busybox-static
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR [--test-images]}
test_images=0
[ "${2:-}" = --test-images ] && test_images=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
epoch=${SOURCE_DATE_EPOCH:-1700000000}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# layout NAME REF ROOTFS_DIR ENTRYPOINT_JSON USER
layout() {
    local name=$1 ref=$2 rootfs=$3 entrypoint=$4 user=$5
    local dir=$out/$name
    rm -rf "$dir"
    mkdir -p "$dir/blobs/sha256"
    local layer=$work/$name.layer.tar
    tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
        --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$rootfs" -cf "$layer" .
    local layer_sha layer_size
    layer_sha=$(sha "$layer"); layer_size=$(stat -c %s "$layer")
    cp "$layer" "$dir/blobs/sha256/$layer_sha"
    local config=$work/$name.config.json
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"User":"%s","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$entrypoint" "$user" "$layer_sha" >"$config"
    local config_sha config_size
    config_sha=$(sha "$config"); config_size=$(stat -c %s "$config")
    cp "$config" "$dir/blobs/sha256/$config_sha"
    local manifest=$work/$name.manifest.json
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$config_sha" "$config_size" "$layer_sha" "$layer_size" >"$manifest"
    local manifest_sha manifest_size
    manifest_sha=$(sha "$manifest"); manifest_size=$(stat -c %s "$manifest")
    cp "$manifest" "$dir/blobs/sha256/$manifest_sha"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"},"platform":{"architecture":"amd64","os":"linux"}}]}' \
        "$manifest_sha" "$manifest_size" "$ref" >"$dir/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
    find "$dir" -exec touch -h -d "@$epoch" {} +
    echo "images: $ref -> $dir (layer $layer_size bytes)"
}

# pause: one static binary, run as nobody.
mkdir -p "$work/pause-root"
gcc -static -O2 -s -o "$work/pause-root/pause" "$here/pause.c"
layout pause registry.k8s.io/pause:3.9 "$work/pause-root" '["/pause"]' 65535:65535

if [ "$test_images" = 1 ]; then
    # busybox for test workloads: Debian 13's static busybox and its applet links.
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/bb-root/bin"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$work/apt/sources.list"
    apt_opts=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$work/apt" && apt-get "${apt_opts[@]}" download busybox-static/trixie)
    dpkg -x "$work"/apt/busybox-static_*.deb "$work/bb-deb"
    # /bin/busybox before usrmerge, /usr/bin/busybox in Debian 13.
    bb=$(find "$work/bb-deb" -path '*bin/busybox' -type f -print -quit)
    install -m 0755 "$bb" "$work/bb-root/bin/busybox"
    for applet in $("$work/bb-root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$work/bb-root/bin/$applet"
    done
    mkdir -p "$work/bb-root/tmp" "$work/bb-root/etc"
    echo "root:x:0:0:root:/root:/bin/sh" >"$work/bb-root/etc/passwd"
    layout busybox muster.local/busybox:1 "$work/bb-root" '["/bin/sh"]' 0:0
fi
