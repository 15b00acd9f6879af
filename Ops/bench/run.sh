#!/usr/bin/env bash
# `make bench`: the Python peer and the llmq farm side by side, in one run each
# (../shared/bench/compare.sh and overhead.sh), then the figures into BENCHMARKS.md:
#   1. streaming throughput: 100-token jobs, burst and closed loop (compare.sh);
#   2. short jobs: 1-token jobs, burst (compare.sh -t 1);
#   3. what the farm adds: pickup, token lag and added TTFT at C=32 with 2 workers, peer beside it;
#   4. one worker with many paced streams (1,000 and 10,000), the farm alone, LLMQ_BENCH_REPEAT times (3);
#   5. steps 3 and 4 again with the C paced upstream (Ops/bench/ts_upstream.c, LLMQ_BENCH_UPSTREAM=c),
#      since at 10,000 new connections the node one spends a core of its own; and the 10,000 run
#      once more with `http_threads: 2` (LLMQ_BENCH_HTTP_THREADS).
#   run.sh BENCH_DIR
# LLMQ_BENCH_QUICK=1 runs smaller sizes (a smoke run, not for the record).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=$(cd "${1:?usage: run.sh BENCH_DIR}" && pwd); shift
out=$(mktemp -d /tmp/llmq-bench-out.XXXXXX)
quick=${LLMQ_BENCH_QUICK:-}
short_jobs=20000 many=10000
[ -n "$quick" ] && short_jobs=5000 many=2000
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The farm-only runs, which vary most from run to run here, run REPEAT times (record.py keeps the medians).
repeat=${LLMQ_BENCH_REPEAT:-3}
[ -n "$quick" ] && repeat=1
step() {  # NAME COMMAND...   (REPEAT=n: n runs into the same output)
  local name=$1 times=${REPEAT:-1}; shift
  : > "$out/$name.out"
  for i in $(seq "$times"); do
    echo "running ($i of $times): $*"
    "$@" 2>&1 | tee -a "$out/$name.out"
  done
  printf '%s\n' "$*" > "$out/$name.cmd"
}
step stream "$bench/compare.sh" -- "$here/farm.sh" {redis} {upstream}
step short "$bench/compare.sh" -t 1 -j "$short_jobs" -- "$here/farm.sh" {redis} {upstream}
step overhead "$here/overhead.sh" "$bench" -c 32 -- "$here/farm.sh" {redis} {upstream}
LLMQ_BENCH_CONCURRENCY=$many REPEAT=$repeat step paced1k "$here/overhead.sh" "$bench" -P -m ts-20-100-50 -c 1000 -n 1 -- "$here/farm.sh" {redis} {upstream} 1
LLMQ_BENCH_CONCURRENCY=$many REPEAT=$repeat step paced10k "$here/overhead.sh" "$bench" -P -m ts-10-1000-50 -c "$many" -n 1 -- "$here/farm.sh" {redis} {upstream} 1
LLMQ_BENCH_UPSTREAM=c step overhead_c "$here/overhead.sh" "$bench" -c 32 -- "$here/farm.sh" {redis} {upstream}
LLMQ_BENCH_UPSTREAM=c LLMQ_BENCH_CONCURRENCY=$many REPEAT=$repeat step paced1k_c "$here/overhead.sh" "$bench" -P -m ts-20-100-50 -c 1000 -n 1 -- "$here/farm.sh" {redis} {upstream} 1
LLMQ_BENCH_UPSTREAM=c LLMQ_BENCH_CONCURRENCY=$many REPEAT=$repeat step paced10k_c "$here/overhead.sh" "$bench" -P -m ts-10-1000-50 -c "$many" -n 1 -- "$here/farm.sh" {redis} {upstream} 1
LLMQ_BENCH_HTTP_THREADS=2 LLMQ_BENCH_UPSTREAM=c LLMQ_BENCH_CONCURRENCY=$many REPEAT=$repeat step paced10k_c2 "$here/overhead.sh" "$bench" -P -m ts-10-1000-50 -c "$many" -n 1 -- "$here/farm.sh" {redis} {upstream} 1
python3 "$here/record.py" "$out" "$root/BENCHMARKS.md"
