#!/usr/bin/env bash
# The README's main-job command, for now: builds `muster`, runs the agent on
# the embedded default (a node of the local QEMU lab config, with its facts
# from a file instead of a VM) and shows the plan it would follow and its
# status. The real local QEMU cluster (`muster lab up`) is not built yet.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/install-deps.sh
cargo build --release --locked -p muster-agent

bin=target/release/muster
state=$(mktemp -d /tmp/muster-demo.XXXXXX)
trap 'rm -rf "$state"' EXIT

echo "== muster config validate configs/examples/*.yaml"
"$bin" config validate configs/examples/*.yaml

echo "== muster agent (node 1 of the local lab, facts from a file)"
"$bin" agent --provider file --metadata-file configs/lab/node-1.facts.yaml \
    --config configs/examples/qemu-local.yaml --defaults /nonexistent \
    --cmdline-file /dev/null --state-dir "$state"

echo "== muster status"
"$bin" status --state-dir "$state"
