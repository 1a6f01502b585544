#!/usr/bin/env bash
# Fuzz the split ring against a hostile device for a bounded time.
# Usage: crates/virtio/fuzz/run.sh SECONDS
# Exits non-zero if the fuzzer finds a crash (artifacts under fuzz/artifacts).
set -euo pipefail
secs="${1:?usage: run.sh SECONDS}"
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
mkdir -p corpus/hostile_device
exec cargo +nightly fuzz run hostile_device corpus/hostile_device -- \
    -max_total_time="$secs" -max_len=2048 -timeout=10
