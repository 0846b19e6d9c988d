#!/usr/bin/env bash
# The README's main-job command, for now: three real `muster agent`s on three
# "machines" (network namespaces on a private bridge, addresses of the local
# lab config configs/examples/qemu-local.yaml) assemble one etcd cluster with
# mutual TLS, with no further command. Prints each node's status, then
# removes every namespace, process and file it made (also on failure).
#
# The real local QEMU cluster (`muster lab up`, booting the node image) is
# not built yet; this is the honest stand-in until it is.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/install-deps.sh
cargo build --locked -p muster-agent

bin=$PWD/target/debug/muster
etcd=${MUSTER_ETCD_BIN:-/opt/muster-test/etcd/usr/bin/etcd}
config=configs/examples/qemu-local.yaml
work=$(mktemp -d /tmp/muster-demo.XXXXXX)
ns=mdemo
nodes=(1 2 3)

cleanup() {
    for n in "${nodes[@]}" br; do
        if [ -e "/run/netns/$ns-$n" ]; then
            for pid in $(ip netns pids "$ns-$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$ns-$n" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
cleanup_first() { cleanup; mkdir -p "$work"; }
cleanup_first

echo "== muster config validate configs/examples/*.yaml"
"$bin" config validate configs/examples/*.yaml

echo "== three machines on a private bridge (network namespaces $ns-1..3)"
ip netns add "$ns-br"
ip -n "$ns-br" link add br0 type bridge
ip -n "$ns-br" link set br0 up
for n in "${nodes[@]}"; do
    ip netns add "$ns-$n"
    ip link add "$ns-v$n" type veth peer name eth0 netns "$ns-$n"
    ip link set "$ns-v$n" netns "$ns-br"
    ip -n "$ns-br" link set "$ns-v$n" master br0 up
    ip -n "$ns-$n" addr add "10.77.0.1$n/24" dev eth0
    ip -n "$ns-$n" link set eth0 up
    ip -n "$ns-$n" link set lo up
    mkdir -p "$work/n$n"
    printf 'instance_id: lab-node-%s\nhostname: lab-node-%s\nprivate_ipv4: 10.77.0.1%s\nregion: local\nzone: local-a\ngroup: lab\n' \
        "$n" "$n" "$n" >"$work/n$n/facts.yaml"
done

echo "== starting the three agents at once; nobody is told who goes first"
start=$(date +%s.%N)
for n in "${nodes[@]}"; do
    nsenter --net="/run/netns/$ns-$n" -- "$bin" agent --provider file \
        --metadata-file "$work/n$n/facts.yaml" --config "$config" --state-dir "$work/n$n/state" \
        --defaults /nonexistent --cmdline-file /dev/null --supervisor child --etcd-bin "$etcd" \
        >"$work/n$n/agent.log" 2>&1 &
    disown  # cleanup kills them; no job-control noise
done

ready() {
    for n in "${nodes[@]}"; do
        "$bin" status --state-dir "$work/n$n/state" --output json 2>/dev/null | grep -q '"phase": "steady-state"' || return 1
    done
}
for _ in $(seq 1 240); do
    ready && break
    sleep 0.25
done
if ! ready; then
    echo "the cluster did not assemble within 60 s; agent logs:" >&2
    tail -n 20 "$work"/n*/agent.log >&2
    exit 1
fi
awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "== assembled in %.1f s\n", e - s }'
for n in "${nodes[@]}"; do
    echo "-- muster status (lab-node-$n)"
    "$bin" status --state-dir "$work/n$n/state"
done
echo "== API VIP 10.77.0.100 (mode arp): who holds it"
for _ in $(seq 1 40); do
    holder=$(for n in "${nodes[@]}"; do ip -n "$ns-$n" -4 addr show dev eth0 | grep -q 'inet 10.77.0.100/32' && echo "lab-node-$n"; done)
    [ -n "$holder" ] && break
    sleep 0.25
done
echo "held by: ${holder:-nobody yet}"
