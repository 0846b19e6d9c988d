#!/usr/bin/env bash
# The README's main job: a local QEMU cluster that assembles itself.
#
# Installs what it needs (`ci/install-deps.sh --demo`), builds the agent and
# the node image (skipped when the image is up to date), then `muster lab
# up` boots three VMs of the image on a private bridge (in a network
# namespace) with a fake cloud on the host side (AWS IMDSv2 + the Auto
# Scaling group API). The VMs form etcd, the API VIP, the Kubernetes
# control plane and three Ready nodes (kubelet, kube-proxy, bridge pod
# network) on their own; the lab only watches, and calls the cluster
# assembled once the Kubernetes API answers through the VIP, every node is
# Ready and the VIP has answered from the same VM several times in a row.
# Then `muster lab failover` powers the VIP holder off and measures until
# the VIP, and the API behind it, answer from another VM.
#
# The lab is removed at the end. When something fails, the consoles of
# every VM are copied to build/demo-logs/ first (the script says where).
# KEEP=1 leaves the lab running to explore.
#
#   LAB_NAME   lab name (default demo)
#   KEEP=1     leave the lab running
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { echo "== [$(date -u +%T)] $*"; }

phase "install what the demo needs"
bash ci/install-deps.sh --demo
phase "build muster"
cargo build --locked -p muster-agent --bin muster
phase "node image with Kubernetes (skipped when up to date)"
bash image/build.sh --kubernetes "${MUSTER_TOOLS:-/opt/muster-test}/kubernetes/bin" --test-images

muster=$PWD/target/debug/muster
name=${LAB_NAME:-demo}
lab=("$muster" lab --name "$name")
root=${MUSTER_LAB_ROOT:-/var/lib/muster-lab}

# On the way out: keep the consoles of a failed run, then remove the lab.
finish() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -d "$root/$name" ]; then
        logs=$PWD/build/demo-logs/$name-$(date -u +%Y%m%dT%H%M%SZ)
        mkdir -p "$logs"
        # The consoles first: they are the evidence, and status may hang.
        for dir in "$root/$name"/node-*; do
            if [ -f "$dir/serial.log" ]; then
                cp "$dir/serial.log" "$logs/$(basename "$dir").serial.log" || true
            fi
        done
        cp "$root/$name"/cloud.log "$root/$name"/dnsmasq.log "$logs/" 2>/dev/null || true
        timeout 60 "${lab[@]}" status >"$logs/status.txt" 2>&1 || true
        echo "demo: FAILED (exit $rc); the VMs' consoles and the lab's status are in $logs" >&2
    fi
    if [ "${KEEP:-0}" != 1 ]; then
        "${lab[@]}" down >/dev/null 2>&1 || true
    elif [ "$rc" = 0 ]; then
        echo "== lab $name left running: ${lab[*]} status | failover | kill NODE | add | down"
    fi
    exit "$rc"
}
trap finish EXIT

# kubectl through the VIP; a loaded TCG host can miss one request, so it
# is asked up to three times before the demo fails.
kubectl_retry() {
    local try
    for try in 1 2 3; do
        "${lab[@]}" kubectl -- --request-timeout=60s "$@" && return 0
        echo "demo: kubectl $* failed (try $try of 3)" >&2
        sleep 5
    done
    return 1
}
"${lab[@]}" down >/dev/null 2>&1 || true

phase "muster lab up: 3 VMs, nobody told who goes first"
"${lab[@]}" up --nodes 3 --image build/image/muster.qcow2

phase "muster lab status"
"${lab[@]}" status

phase "the Kubernetes API through the VIP (muster lab kubectl)"
kubectl_retry get --raw /readyz; echo
kubectl_retry get nodes -o wide

phase "muster lab failover: power the VIP holder off hard"
"${lab[@]}" failover

phase "muster lab status"
"${lab[@]}" status
kubectl_retry -n kube-system get leases
kubectl_retry get nodes
phase "demo: done"
