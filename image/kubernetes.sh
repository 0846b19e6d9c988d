#!/usr/bin/env bash
# Stages the Kubernetes binaries into the image tree, or records that the
# image carries none. Usage: kubernetes.sh SOURCE STAGING
#
# SOURCE is empty (no Kubernetes), a directory holding the binaries and a
# SHA256SUMS file, or a text file of "URL SHA256" lines. Every binary is
# checked against its pinned SHA-256; a mismatch stops the build.
set -euo pipefail
source=${1:-}
staging=${2:?staging directory}
# No kubeadm: the agent renders what kubeadm would, and runs the components itself.
bins=(kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
manifest=$staging/usr/lib/muster/kubernetes.json

if [ -z "$source" ]; then
    echo '{"version": null, "binaries": []}' >"$manifest"
    echo "kubernetes: none (the image reports \"version\": null)"
    exit 0
fi

fetched=$(mktemp -d)
trap 'rm -rf "$fetched"' EXIT
if [ -d "$source" ]; then
    [ -f "$source/SHA256SUMS" ] || { echo "kubernetes: $source/SHA256SUMS missing" >&2; exit 1; }
    for b in "${bins[@]}"; do
        [ -f "$source/$b" ] && cp "$source/$b" "$fetched/$b"
    done
    (cd "$fetched" && grep -E " \*?($(IFS='|'; echo "${bins[*]}"))$" "$source/SHA256SUMS" | sha256sum --check --strict)
else
    while read -r url sum; do
        case $url in ''|'#'*) continue ;; esac
        name=$(basename "$url")
        curl -fsSL --retry 3 -o "$fetched/$name" "$url"
        echo "$sum  $fetched/$name" | sha256sum --check --strict
    done <"$source"
fi

for b in "${bins[@]}"; do
    [ -f "$fetched/$b" ] && install -m 0755 "$fetched/$b" "$staging/usr/bin/$b"
done
[ -x "$staging/usr/bin/kubelet" ] || { echo "kubernetes: no kubelet in $source" >&2; exit 1; }
version=$("$staging/usr/bin/kubelet" --version | awk '{print $2}')
printf '{"version": "%s", "binaries": [%s]}\n' "$version" \
    "$(cd "$staging/usr/bin" && ls "${bins[@]}" 2>/dev/null | sed 's/.*/"&"/' | paste -sd, -)" >"$manifest"
echo "kubernetes: $version"
