#!/usr/bin/env bash
# ../shared/bench/overhead.sh with a paced upstream that can take a burst of
# 10,000 new connections: the shared ts_upstream.js listens with node's default
# backlog of 511, so most of a 10,000-connection burst waits for SYN retries
# (about 1 s, then 3 s) whatever the farm does. This copy listens with a backlog
# of 65,535 (the kernel caps it at net.core.somaxconn) and is otherwise the same.
#   overhead.sh BENCH_DIR [overhead.sh options] -- FARM COMMAND...
set -euo pipefail
bench=$(cd "${1:?usage: overhead.sh BENCH_DIR [options] -- FARM COMMAND}" && pwd); shift
copy=$(mktemp -d /tmp/llmq-overhead-bench.XXXXXX)
trap 'rm -rf "$copy"' EXIT
cp -r "$bench/." "$copy/"
sed -i 's/^server.listen(port, "127.0.0.1");$/server.listen({ port, host: "127.0.0.1", backlog: 65535 });/' "$copy/upstream/ts_upstream.js"
grep -q 'backlog: 65535' "$copy/upstream/ts_upstream.js" || { echo "overhead.sh: the shared ts_upstream.js changed; update Ops/bench/overhead.sh" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || true
"$copy/overhead.sh" "$@"
