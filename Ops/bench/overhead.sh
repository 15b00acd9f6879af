#!/usr/bin/env bash
# ../shared/bench/overhead.sh with a paced upstream that can take a burst of
# 10,000 new connections: the shared ts_upstream.js listens with node's default
# backlog of 511, so most of a 10,000-connection burst waits for SYN retries
# (about 1 s, then 3 s) whatever the farm does. This copy listens with a backlog
# of 65,535 (the kernel caps it at net.core.somaxconn) and is otherwise the same.
# With LLMQ_BENCH_UPSTREAM=c the copy runs ts_upstream.c (beside this script,
# compiled into the copy; the same HTTP and frames, backlog 65,535) instead of
# the node upstream: node spends about 470 us of CPU per new connection, a full
# core for a burst of 10,000, so at that size the figures would be node's.
#   [LLMQ_BENCH_UPSTREAM=node|c] overhead.sh BENCH_DIR [overhead.sh options] -- FARM COMMAND...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=$(cd "${1:?usage: overhead.sh BENCH_DIR [options] -- FARM COMMAND}" && pwd); shift
copy=$(mktemp -d /tmp/llmq-overhead-bench.XXXXXX)
trap 'rm -rf "$copy"' EXIT
cp -r "$bench/." "$copy/"
sed -i 's/^server.listen(port, "127.0.0.1");$/server.listen({ port, host: "127.0.0.1", backlog: 65535 });/' "$copy/upstream/ts_upstream.js"
grep -q 'backlog: 65535' "$copy/upstream/ts_upstream.js" || { echo "overhead.sh: the shared ts_upstream.js changed; update Ops/bench/overhead.sh" >&2; exit 2; }
case ${LLMQ_BENCH_UPSTREAM:-node} in
  node) ;;
  c)
    cc -O2 -o "$copy/upstream/ts_upstream" "$here/ts_upstream.c" || { echo "overhead.sh: cannot compile Ops/bench/ts_upstream.c" >&2; exit 2; }
    sed -i 's|^node "$here/upstream/ts_upstream.js" "$uport" |"$here/upstream/ts_upstream" "$uport" |' "$copy/overhead.sh"
    { grep -q '^"$here/upstream/ts_upstream" "$uport" ' "$copy/overhead.sh" && ! grep -q '^[^#]*ts_upstream\.js' "$copy/overhead.sh"; } ||
      { echo "overhead.sh: the shared overhead.sh no longer starts the upstream as expected; update Ops/bench/overhead.sh" >&2; exit 2; } ;;
  *) echo "overhead.sh: LLMQ_BENCH_UPSTREAM must be node or c, not '$LLMQ_BENCH_UPSTREAM'" >&2; exit 2 ;;
esac
ulimit -n 65536 2>/dev/null || true
"$copy/overhead.sh" "$@"
