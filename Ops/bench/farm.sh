#!/usr/bin/env bash
# Started by ../shared/bench/compare.sh as the farm command: writes a config whose
# route `sim-1` points at the bench upstream, then execs the release farm.
#   farm.sh REDIS_URL UPSTREAM_BASE_URL [WORKERS]   (LLMQ_BENCH_CONCURRENCY, LLMQ_BENCH_HTTP_THREADS)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
redis=$1 upstream=$2 workers=${3:-${LLMQ_BENCH_WORKERS:-2}}
conf=$(mktemp /tmp/llmq-bench-farm.XXXXXX.yaml)
cat > "$conf" <<YAML
redis: $redis
workers: $workers
drain_timeout_s: 5
log_level: warning
http_threads: ${LLMQ_BENCH_HTTP_THREADS:-1}
http_port: 0
modes:
  chat: {concurrency: ${LLMQ_BENCH_CONCURRENCY:-256}}
providers:
  bench: {kind: openai, base_url: "$upstream", timeout_s: 60, idle_timeout_s: 30}
routes:
  sim-1: ["bench/sim-1"]
YAML
exec "${LLMQ_BENCH_BIN:-$root/.build/release/llmq}" farm --config "$conf"
