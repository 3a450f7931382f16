#!/usr/bin/env bash
# Run the shard-parser fuzzer: ./run.sh [SECONDS] (default 600). Corpus grows in fuzz/corpus (seeded
# from fuzz/seeds: valid shards, each as modes 0/1/2, see the target); crashes land in fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus artifacts
exec ./target/x86_64-unknown-linux-gnu/release/shard_parse corpus seeds \
  -max_total_time="${1:-600}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=artifacts/ -print_final_stats=1 -dict=shard.dict
