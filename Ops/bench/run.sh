#!/usr/bin/env bash
# `make bench`: the Python peer and the llmq farm side by side in one run
# (../shared/bench/compare.sh), then the figures into BENCHMARKS.md.
#   run.sh BENCH_DIR [compare.sh options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=$(cd "${1:?usage: run.sh BENCH_DIR}" && pwd); shift
out=$(mktemp /tmp/llmq-bench-out.XXXXXX)
cmd=("$bench/compare.sh" "$@" -- "$here/farm.sh" {redis} {upstream})
echo "running: ${cmd[*]}"
"${cmd[@]}" 2>&1 | tee "$out"
python3 "$here/record.py" "$out" "$root/BENCHMARKS.md" "make bench  (compare.sh $* -- Ops/bench/farm.sh {redis} {upstream})"
