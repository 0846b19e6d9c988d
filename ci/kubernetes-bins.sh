#!/usr/bin/env bash
# Kubernetes v1.28.7 server binaries for the tests and the lab image, in
# $MUSTER_TOOLS/kubernetes/bin (the tests' default MUSTER_KUBERNETES_BIN),
# with a SHA256SUMS file for `image/build.sh --kubernetes DIR`.
#
# - Where the project's shared folder sits beside the checkout
#   (../shared/kubernetes/build.sh), the binaries are built from its source
#   (about 7 minutes on 2 cores; cached).
# - Elsewhere the official release's server tarball is downloaded and
#   checked against the SHA-512 the Kubernetes CHANGELOG-1.28.md publishes.
# - If neither works, it stops and says why.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TOOLS=${MUSTER_TOOLS:-/opt/muster-test}
out=$TOOLS/kubernetes/bin
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy)
version=v1.28.7
# CHANGELOG/CHANGELOG-1.28.md, "Server Binaries", kubernetes-server-linux-amd64.tar.gz.
tarball_sha512=ea566c66916cb6b892dec2151850bae766a5593e3a4c1cc39b1ff945fffd843611ea980a01cc9dea4bd69bc1a1fefc6e31284937e8d88c19f7d8e183917bdf8f

complete() {
    for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
    [ -f "$out/SHA256SUMS" ]
}

shared=$here/../../shared/kubernetes/build.sh
if [ -f "$shared" ]; then
    bash "$shared" "$out"
elif ! complete; then
    url=https://dl.k8s.io/$version/kubernetes-server-linux-amd64.tar.gz
    echo "ci/kubernetes-bins: downloading $url"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if ! curl -fsSL --retry 3 -o "$tmp/server.tar.gz" "$url"; then
        echo "ci/kubernetes-bins: cannot download $url, and there is no ../shared/kubernetes/build.sh to build $version from source." >&2
        echo "ci/kubernetes-bins: put the six server binaries (${bins[*]}) into $out, or set MUSTER_KUBERNETES_BIN to a directory holding them." >&2
        exit 1
    fi
    echo "$tarball_sha512  $tmp/server.tar.gz" | sha512sum --check --strict
    mkdir -p "$out"
    tar -xzf "$tmp/server.tar.gz" -C "$tmp"
    for b in "${bins[@]}"; do install -m 0755 "$tmp/kubernetes/server/bin/$b" "$out/$b"; done
fi
# The checksums image/kubernetes.sh checks the binaries against.
(cd "$out" && sha256sum "${bins[@]}" >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
"$out/kube-apiserver" --version
