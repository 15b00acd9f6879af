#!/usr/bin/env bash
# Enqueues one chat job on an llmq farm and prints its tokens as they arrive (redis-cli, jq).
#
#   LLMQ_REDIS_URL=redis://127.0.0.1:6379 LLMQ_PREFIX=llmq ./producer.sh MODEL "PROMPT"
#
# Prints the text as it streams, then the terminal event on a line of its own.
# Exits 0 on done, 1 on error, 2 when no terminal event came in time.
set -euo pipefail

if [ $# -ne 2 ]; then echo "usage: producer.sh MODEL PROMPT" >&2; exit 2; fi
model=$1 prompt=$2
url=${LLMQ_REDIS_URL:-redis://127.0.0.1:6379}
prefix=${LLMQ_PREFIX:-llmq}
timeout_s=${LLMQ_TIMEOUT_S:-120}
id="sh-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
channel="$prefix:{$id}:tokens"

# The subscriber: --raw prints each reply element on a line of its own ("subscribe", the
# channel, the count; then "message", the channel, the payload, whose NDJSON lines stay lines).
exec {raw}< <(exec redis-cli -u "$url" --raw SUBSCRIBE "$channel" 2>/dev/null)
subscriber=$!
trap 'kill "$subscriber" 2>/dev/null || true' EXIT

# One jq for the whole stream (a process per token would be slow): it turns the confirmation
# and each event line into NUL-terminated pairs, KIND then VALUE: a chunk's text, unescaped,
# or the terminal event's line as it came.
program='. as $line
  | if . == "subscribe" then "subscribed\u0000\u0000"
    else fromjson? | objects
      | if .type == "chunk" then "chunk\u0000\(.text)\u0000"
        elif .type == "retry" then "retry\u0000attempt \(.attempt) starts over: \(.reason)\u0000"
        elif .type == "done" or .type == "error" then "\(.type)\u0000\($line)\u0000"
        else empty end
    end'
exec {events}< <(exec jq --unbuffered -Rj "$program" <&"$raw")

next() {  # reads one KIND VALUE pair within the time left
  local left=$((end - SECONDS))
  [ "$left" -gt 0 ] && IFS= read -r -d '' -t "$left" kind <&"$events" && IFS= read -r -d '' -t "$left" value <&"$events"
}

# Wait for Redis to confirm the subscription before the job exists, so no token is missed.
end=$((SECONDS + 10))
if ! next || [ "$kind" != subscribed ]; then
  echo "no subscription confirmed by $url" >&2
  exit 2
fi

job=$(jq -cn --arg id "$id" --arg model "$model" --arg prompt "$prompt" \
  '{id: $id, model: $model, messages: [{role: "user", content: $prompt}]}')
redis-cli -u "$url" LPUSH "$prefix:{chat}:queue" "$job" >/dev/null 2>&1

end=$((SECONDS + timeout_s))
while next; do
  case $kind in
    chunk) printf '%s' "$value" ;;
    retry) printf '\n[%s]\n' "$value" >&2 ;;
    done) printf '\n%s\n' "$value"; exit 0 ;;
    error) printf '\n%s\n' "$value"; exit 1 ;;
  esac
done
echo "no terminal event for $id within $timeout_s s" >&2
exit 2
