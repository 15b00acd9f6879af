#!/usr/bin/env bash
# `make bench` (cluster part): the release farm on one plain redis-server, then on a
# Redis Cluster of 1 and of 3 masters (no replicas), against the instant nginx upstream of ../shared/bench,
# JOBS jobs of TOKENS chunks each; one JSON line per run (cluster_load.py).
#   cluster.sh BENCH_DIR [JOBS] [TOKENS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=$(cd "${1:?usage: cluster.sh BENCH_DIR [JOBS] [TOKENS]}" && pwd)
jobs=${2:-2000} tokens=${3:-100}
work=$(mktemp -d /tmp/llmq-bench-cluster.XXXXXX); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
venv=${LLMQ_BENCH_VENV:-/tmp/llmq-bench-venv}
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" -q install redis hiredis httpx uvloop; }

uport=$(freeport)
python3 "$bench/upstream/gen_static.py" "$work/static" "$tokens"
sed -e "s#@DIR@#$work#g" -e "s#@PORT@#$uport#g" "$bench/upstream/nginx.conf.in" > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"

# First one plain redis-server (the same load script), then clusters of 1 and 3 masters.
p=$(freeport)
redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --logfile "$work/plain.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$here/farm.sh" "redis://127.0.0.1:$p" "http://127.0.0.1:$uport/n$tokens/v1" >"$work/farm-plain.log" 2>&1 &
farm=$!; pids+=($farm)
sleep 3
"$venv/bin/python" "$here/cluster_load.py" "127.0.0.1:$p" "$jobs" "$tokens" 0
kill -TERM "$farm"; wait "$farm" 2>/dev/null || true
redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true

for masters in 1 3; do
  ports=()
  for i in $(seq "$masters"); do
    p=$(freeport); b=$(freeport); ports+=("$p"); mkdir -p "$work/m$masters-$i"
    redis-server --port "$p" --cluster-port "$b" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
      --cluster-config-file "$work/m$masters-$i/nodes.conf" --dir "$work/m$masters-$i" --logfile "$work/m$masters-$i/redis.log" &
    pids+=($!)
  done
  for p in "${ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
  if [ "$masters" -eq 1 ]; then
    redis-cli -p "${ports[0]}" cluster addslotsrange 0 16383 >/dev/null   # redis-cli --cluster create wants 3 masters
  else
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 --cluster-yes >"$work/create-$masters.log"
  fi
  for _ in $(seq 100); do redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1; done
  seeds=$(printf '127.0.0.1:%s,' "${ports[@]}"); seeds=${seeds%,}
  LLMQ_BENCH_CONCURRENCY=${LLMQ_BENCH_CONCURRENCY:-256} "$here/farm.sh" "redis+cluster://$seeds" "http://127.0.0.1:$uport/n$tokens/v1" >"$work/farm-$masters.log" 2>&1 &
  farm=$!; pids+=($farm)
  sleep 3
  "$venv/bin/python" "$here/cluster_load.py" "127.0.0.1:${ports[0]}" "$jobs" "$tokens" "$masters"
  kill -TERM "$farm"; wait "$farm" 2>/dev/null || true
  for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
done
