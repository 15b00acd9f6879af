#!/usr/bin/env bash
# The gateway's benchmark in one run: a private redis-server, the paced upstream
# (../shared/bench/upstream/ts_upstream.js), a farm and `llmq gateway` (release build), and,
# when LiteLLM's proxy is installed (pip install 'litellm[proxy]', or LITELLM=/path/to/litellm),
# LiteLLM's proxy in front of the same upstream; then Ops/bench/gateway.py against both.
#   gateway.sh BENCH_DIR [N] [C]      (defaults 2000 64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=$(cd "${1:?usage: gateway.sh BENCH_DIR [N] [C]}" && pwd)
n=${2:-2000}
c=${3:-64}
llmq=${LLMQ_BIN:-$root/.build/release/llmq}
work=$(mktemp -d /tmp/llmq-gwbench.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 3000); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

rport=$(free_port); uport=$(free_port); gport=$(free_port); lport=$(free_port)
redis-server --port "$rport" --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
node "$bench/upstream/ts_upstream.js" "$uport" >"$work/upstream.log" 2>&1 & pids+=($!)
wait_port "$rport"; wait_port "$uport"
cat >"$work/farm.yaml" <<YAML
redis: redis://127.0.0.1:$rport
workers: 2
log_level: warning
http_port: 0
modes:
  chat: {concurrency: 128}
providers:
  ts: {kind: openai, base_url: "http://127.0.0.1:$uport/v1", timeout_s: 60, idle_timeout_s: 10}
routes:
  ts: ["ts/ts-20-1-0"]
gateway:
  max_waiting: {chat: 100000}
YAML
"$llmq" farm --config "$work/farm.yaml" >"$work/farm.log" 2>&1 & pids+=($!)
"$llmq" gateway --config "$work/farm.yaml" --host 127.0.0.1 --port "$gport" >"$work/gateway.log" 2>&1 & pids+=($!)
wait_port "$gport"
args=(--gateway "http://127.0.0.1:$gport" --redis-port "$rport" --n "$n" --c "$c")
litellm=${LITELLM:-$(command -v litellm || true)}
if [ -n "$litellm" ]; then
  cat >"$work/litellm.yaml" <<YAML
model_list:
  - model_name: ts
    litellm_params: {model: openai/ts-20-1-0, api_base: "http://127.0.0.1:$uport/v1", api_key: sk-upstream}
general_settings: {master_key: sk-bench}
YAML
  LITELLM_LOCAL_MODEL_COST_MAP=True "$litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$lport" --num_workers 1 >"$work/litellm.log" 2>&1 & pids+=($!)
  wait_port "$lport"
  args+=(--litellm "http://127.0.0.1:$lport")
else
  echo "LiteLLM's proxy is not installed (pip install 'litellm[proxy]'); measuring the gateway alone" >&2
fi
# Warm both up so first-request costs (imports, connections) stay out of the figures.
python3 "$here/gateway.py" "${args[@]}" --n 64 --latency-n 10 >/dev/null
python3 "$here/gateway.py" "${args[@]}"
