#!/usr/bin/env bash
# Builds the Muster node image with mkosi and then every artefact from it.
#
#   bash image/build.sh [--profile debug] [--kubernetes DIR|URLS.txt] [--test-images] [--out DIR]
#
# --test-images adds a busybox image for test workloads to the container
# images every node ships (the sandbox image is always there).
#
# Output (default build/image/): see image/README.md. Needs root (mkosi runs
# package installs in its sandbox) and the build tools from
# image/install-build-deps.sh, which this script runs first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

out=$repo/build/image
profile=
kubernetes=
test_images=
while [ $# -gt 0 ]; do
    case $1 in
        --test-images) test_images=--test-images; shift ;;
        --out) out=$2; shift 2 ;;
        --profile) profile=$2; shift 2 ;;
        --kubernetes) kubernetes=$2; shift 2 ;;
        *) echo "image/build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

bash "$here/install-build-deps.sh"
# shellcheck source=image/tools.env
. "$here/tools.env"

started=$(date +%s)
staging=$repo/build/staging
rm -rf "$staging"
mkdir -p "$staging/usr/bin" "$staging/usr/lib/muster" "$out"

echo "== agent (cargo build --release, without the host-only lab feature)"
# Reproducible /usr: the binary must not carry where this checkout or the
# cargo home happen to be (build scripts' OUT_DIR paths end up in panic
# locations), so both are mapped to fixed names.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$repo=/muster --remap-path-prefix=$cargo_home=/cargo"
(cd "$repo" && cargo build --release --locked -p muster-agent --bin muster --no-default-features)
install -m 0755 "$repo/target/release/muster" "$staging/usr/bin/muster"

echo "== kubernetes binaries"
bash "$here/kubernetes.sh" "$kubernetes" "$staging"

# Reproducible: every timestamp in the image is the commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1700000000)}

echo "== container images the node ships (imported into containerd at boot)"
bash "$here/images/build.sh" "$staging/usr/lib/muster/images" $test_images
version=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)

# Up to date: the same inputs (what goes into /usr, the mkosi and image
# recipes, the version stamp and profile) built the artefacts in $out
# already. The build is reproducible, so rebuilding would give the same
# bytes; skip it.
inputs=$( {
    (cd "$staging" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    (cd "$repo" && find mkosi image -type f -print0 | sort -z | xargs -0 sha256sum)
    echo "version=$version profile=$profile date=$SOURCE_DATE_EPOCH"
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/.inputs-sha256" 2>/dev/null)" = "$inputs" ] && [ -f "$out/muster.qcow2" ] \
    && (cd "$out" && sha256sum --check --quiet SHA256SUMS); then
    echo "image/build.sh: $out is up to date ($version); nothing to build"
    exit 0
fi
rm -f "$out/.inputs-sha256"

echo "== mkosi (Debian 13, verity /usr)"
mkosi_out=$repo/build/mkosi
rm -rf "$mkosi_out"
mkdir -p "$mkosi_out" "$repo/build/mkosi-cache"
args=(-C "$repo/mkosi" --tools-tree="$MUSTER_TOOLS_TREE"
    --output-directory="$mkosi_out" --cache-directory="$repo/build/mkosi-cache"
    --extra-tree="$staging:/" --image-version="$version")
[ -n "$profile" ] && args+=(--profile="$profile")
mkosi "${args[@]}" --force build

echo "== artefacts"
bash "$here/artefacts.sh" "$mkosi_out" "$out"
echo "$inputs" >"$out/.inputs-sha256"
echo "image/build.sh: done in $(( $(date +%s) - started )) s; artefacts in $out"
