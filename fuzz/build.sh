#!/usr/bin/env bash
# Build the libFuzzer target without cargo-fuzz (same flags cargo-fuzz passes): needs a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
 ${FUZZ_ASAN:+-Zsanitizer=address}"
cargo +nightly build --release --target x86_64-unknown-linux-gnu --bin shard_parse "$@"
echo "built target/x86_64-unknown-linux-gnu/release/shard_parse"
