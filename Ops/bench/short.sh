#!/usr/bin/env bash
# The farm alone on 1-token jobs (no peer): a warm-up burst, then a measured burst of JOBS
# against ../shared/bench's instant nginx upstream, with the CPU time the farm's process tree
# and redis-server spent per job (read from /proc before and after).
#   short.sh BENCH_DIR [JOBS] [TOKENS]      (LLMQ_BENCH_BIN picks the llmq binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=$(cd "${1:?usage: short.sh BENCH_DIR [JOBS] [TOKENS]}" && pwd)
jobs=${2:-10000} tokens=${3:-1}
work=$(mktemp -d /tmp/llmq-short.XXXXXX); chmod 755 "$work"
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rport=$(freeport); uport=$(freeport); farm=
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --logfile "$work/redis.log" --pidfile "$work/redis.pid"
python3 "$bench/upstream/gen_static.py" "$work/static" "$tokens"
sed -e "s#@DIR@#$work#g" -e "s#@PORT@#$uport#g" "$bench/upstream/nginx.conf.in" > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"
cc -O2 -o "$work/loadgen" "$bench/loadgen.c" -lhiredis -lm
trap '[ -n "$farm" ] && kill "$farm" 2>/dev/null; kill "$(cat "$work/nginx.pid")" 2>/dev/null; redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
cpu_ms() {  # utime+stime in ms of a process and its descendants
  local all=" $1 " frontier=$1 kids
  while [ -n "$frontier" ]; do
    kids=$(for p in $frontier; do cat /proc/"$p"/task/*/children 2>/dev/null; done | tr '\n' ' '); all="$all $kids"; frontier=$kids
  done
  for p in $all; do [ -r /proc/"$p"/stat ] && awk '{print $14+$15}' /proc/"$p"/stat; done | awk -v hz="$(getconf CLK_TCK)" '{s+=$1} END{printf "%d\n", s*1000/hz}'
}
"$here/farm.sh" "redis://127.0.0.1:$rport" "http://127.0.0.1:$uport/n$tokens/v1" >"$work/farm.log" 2>&1 &
farm=$!
sleep 3
"$work/loadgen" 127.0.0.1 "$rport" chat sim-1 "$jobs" 0 300 >/dev/null
rpid=$(cat "$work/redis.pid")
f0=$(cpu_ms "$farm"); r0=$(cpu_ms "$rpid")
"$work/loadgen" 127.0.0.1 "$rport" chat sim-1 "$jobs" 0 300
f1=$(cpu_ms "$farm"); r1=$(cpu_ms "$rpid")
echo "{\"farm_cpu_us_per_job\":$(( (f1 - f0) * 1000 / jobs )),\"redis_cpu_us_per_job\":$(( (r1 - r0) * 1000 / jobs ))}"
