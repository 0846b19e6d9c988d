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

# The image build (mostly single-threaded mkosi and compression) runs in
# the background from here, beside the lints and tiers 0 and 1 (mostly
# waiting on timers in namespaces): 16.5 minutes beside tier 0+1 on a
# loaded day against 10 + 12 one after the other. Tier 2 boots the image,
# so it waits for the build.
phase "node image with the Kubernetes test binaries and the busybox test image, in the background (log: build/image-build.log)"
mkdir -p build
bash image/build.sh --kubernetes "${MUSTER_TOOLS:-/opt/muster-test}/kubernetes/bin" --test-images \
    > build/image-build.log 2>&1 &
image_build=$!
trap 'kill "$image_build" 2>/dev/null || true' EXIT

phase "rustfmt"
cargo fmt --all --check

phase "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The node image builds the agent without the host-only `lab` feature.
cargo clippy -p muster-agent --bins --lib --no-default-features --locked -- -D warnings

phase "packer validate (the publishing template)"
packer validate image/packer

failed=0
have_nextest() { cargo nextest --version >/dev/null 2>&1; }
phase "tests: tier 0 (unit) + tier 1 (host), beside the image build"
if have_nextest; then
    # Two cores: keep test parallelism at the core count.
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2 \
        -E 'not binary(=tier2)' || failed=1
else
    # Without nextest's groups, run one test at a time (tiers 1 and 2 must not overlap).
    cargo test --workspace --exclude muster-qemu-tests --locked --no-fail-fast -- --test-threads 1 || failed=1
fi

phase "waiting for the node image build"
if ! wait "$image_build"; then
    # Its progress lines are redrawn with carriage returns: the step
    # headers and the last lines say where it stopped.
    grep -a "^== " build/image-build.log || true
    tail -c 4000 build/image-build.log | tr '\r' '\n' | tail -n 40
    echo "ci/test.sh: the node image build failed (build/image-build.log)" >&2
    exit 1
fi
grep -a "^== " build/image-build.log

phase "node image size budget (issue 17; docs/benchmarks.md, \"Image size\")"
python3 image/size-report.py build/image build/mkosi

phase "tests: tier 2 (the image in QEMU)"
if have_nextest; then
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2 \
        -E 'binary(=tier2)' || failed=1
else
    cargo test -p muster-qemu-tests --locked --no-fail-fast -- --test-threads 1 || failed=1
fi
phase "done"
exit "$failed"
