#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test tier that exists.
# This is the README's test command; .ci/run calls it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's start time, so a slow CI run shows where the time went.
phase() { echo "== [$(date -u +%T)] $*"; }

phase "install dependencies"
bash ci/install-deps.sh

# CI builds once from scratch: incremental caches only cost disk there.
export CARGO_INCREMENTAL=0
# A failed test's output then ends with its panic message (what failed and
# why), not with a backtrace: CI keeps only the head and tail of a long log.
export RUST_BACKTRACE=0

phase "rustfmt"
cargo fmt --all --check

phase "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The node image builds the agent without the host-only `lab` feature.
cargo clippy -p muster-agent --bins --lib --no-default-features --locked -- -D warnings

phase "packer validate (the publishing template)"
packer validate image/packer

phase "node image with the Kubernetes test binaries and the busybox test image (tier 2 boots it)"
bash image/build.sh --kubernetes "${MUSTER_TOOLS:-/opt/muster-test}/kubernetes/bin" --test-images

phase "node image size budget (issue 17; docs/benchmarks.md, \"Image size\")"
python3 image/size-report.py build/image build/mkosi

phase "tests (tier 0 unit + tier 1 host + tier 2 QEMU)"
if cargo nextest --version >/dev/null 2>&1; then
    # Two cores: keep test parallelism at the core count.
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2
else
    # Without nextest's groups, run one test at a time (tiers 1 and 2 must not overlap).
    cargo test --workspace --locked --no-fail-fast -- --test-threads 1
fi
phase "done"
