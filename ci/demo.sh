#!/usr/bin/env bash
# The README's main-job command: a local QEMU cluster that assembles itself.
#
# Installs what it needs, builds the agent and the node image, then
# `muster lab up` boots three VMs of the image on a private bridge (in a
# network namespace) with a fake cloud on the host side (AWS IMDSv2 + the
# Auto Scaling group API). The VMs form etcd and the API VIP on their own;
# the lab only watches. Then it shows a failover: the VIP holder is powered
# off and the VIP answers from another VM.
#
# The lab is removed at the end (also on failure). KEEP=1 leaves it running
# to explore: `target/debug/muster lab status`, `... lab kill node-2`,
# `... lab add`, `... lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/install-deps.sh
cargo build --locked -p muster-agent --bin muster
bash image/build.sh

muster=$PWD/target/debug/muster
name=${LAB_NAME:-demo}
if [ "${KEEP:-0}" != 1 ]; then
    trap '"$muster" lab --name "$name" down >/dev/null 2>&1 || true' EXIT
fi
"$muster" lab --name "$name" down >/dev/null 2>&1 || true

echo "== muster lab up: 3 VMs, nobody told who goes first"
"$muster" lab --name "$name" up --nodes 3 --image build/image/muster.qcow2

echo "== muster lab status"
"$muster" lab --name "$name" status

ns=muster-lab-$name
vip_instance() {
    nsenter --net="/run/netns/$ns" -- python3 -c '
import json, sys, urllib.request
try:
    print(json.load(urllib.request.urlopen("http://" + sys.argv[1] + ":9743/status", timeout=1))["instance_id"])
except Exception:
    pass' "$1"
}
vip=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("10.77.%d.100" % s["subnet"])' \
    "${MUSTER_LAB_ROOT:-/var/lib/muster-lab}/$name/lab.json")
holder=$(vip_instance "$vip")
node=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(next("node-%d" % n["index"] for n in s["nodes"] if n["instance_id"] == sys.argv[2]))' \
    "${MUSTER_LAB_ROOT:-/var/lib/muster-lab}/$name/lab.json" "$holder")
echo "== the VIP $vip answers from $holder ($node); powering $node off hard"
start=$(date +%s.%N)
"$muster" lab --name "$name" kill "$node"
for _ in $(seq 1 600); do
    now=$(vip_instance "$vip")
    if [ -n "$now" ] && [ "$now" != "$holder" ]; then
        awk -v s="$start" -v e="$(date +%s.%N)" -v n="$now" 'BEGIN { printf "== the VIP answers from %s after %.1f s\n", n, e - s }'
        break
    fi
    sleep 0.1
done
"$muster" lab --name "$name" status
if [ "${KEEP:-0}" = 1 ]; then
    echo "== lab $name left running: $muster lab --name $name status | kill NODE | add | down"
fi
