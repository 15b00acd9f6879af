#!/bin/bash
# What a fetch costs Redis: the fifo path (LMOVE, pipelined 32 deep, as JobFetcher drains a backlog)
# against the fair take script (32 jobs a call, sorting up to 256 queued jobs a call), on N small
# 1-token chat jobs, without and with 10 tenants. Needs redis-server, redis-benchmark, python3.
# Usage: Ops/bench/fetch_cost.sh   (N=20000 by default)
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port $PORT --save "" --appendonly no --dir $DIR --daemonize yes --pidfile $DIR/pid >/dev/null
sleep 0.3
R="redis-cli -p $PORT"
N=${N:-20000}
fill() { # tenants
python3 - "$1" "$N" <<'PY' | redis-cli -p $PORT --pipe >/dev/null
import sys
t=int(sys.argv[1]); n=int(sys.argv[2])
out=[]
for i in range(n):
    ten = ',"tenant":"t%d"' % (i % t) if t > 0 else ''
    job='{"id":"req-%d","model":"sim/sim:tokens=1","messages":[{"role":"user","content":"hi"}]%s}' % (i, ten)
    args=["LPUSH","b:{chat}:queue",job]
    out.append("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args))
sys.stdout.write("".join(out))
PY
}
$R flushall >/dev/null
fill 0
echo "fifo LMOVE, pipeline 32:"; redis-benchmark -p $PORT -c 1 -n $N -P 32 -q LMOVE 'b:{chat}:queue' 'b:{chat}:inflight:w' RIGHT LEFT | tr '\r' '\n' | grep 'per second'
SCRIPT=$(python3 -c '
import re,sys
s=open(sys.argv[1] + "/Sources/LLMQ/Redis/Scripts.swift").read()
m=re.search(r"fairTake = \"\"\"\n(.*?)\n        \"\"\"", s, re.S)
print("\n".join(l[8:] for l in m.group(1).split("\n")))' "$ROOT")
SHA=$($R script load "$SCRIPT")
for T in 0 10; do
  $R flushall >/dev/null; $R script load "$SCRIPT" >/dev/null
  fill $T
  echo "fair take of 32, $T tenants (calls/s; x32 = jobs/s):"
  redis-benchmark -p $PORT -c 1 -n $((N/32)) -q EVALSHA $SHA 5 'b:{chat}:queue' 'b:{chat}:inflight:w' 'b:{chat}:running' 'b:{chat}:running:w' 'b:{chat}:blocked' 'b:{chat}:' 32 256 WAKE 1 0 t1 3 0 '' 1 0 | tr '\r' '\n' | grep 'per second'
  echo "left in queue: $($R llen 'b:{chat}:queue'), inflight: $($R llen 'b:{chat}:inflight:w')"
done
kill $(cat $DIR/pid)
rm -rf "$DIR"
