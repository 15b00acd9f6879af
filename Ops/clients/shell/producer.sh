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

# The subscriber runs beside this script; --raw prints each reply element on a line:
# "subscribe", the channel, the count, then "message", the channel, the payload per message.
coproc SUB { exec redis-cli -u "$url" --raw SUBSCRIBE "$channel"; }
trap 'kill "$SUB_PID" 2>/dev/null || true' EXIT

# Wait for Redis to confirm the subscription before the job exists, so no token is missed.
for expected in subscribe "$channel" 1; do
  if ! IFS= read -r -t 10 line <&"${SUB[0]}" || [ "$line" != "$expected" ]; then
    echo "no subscription confirmed by $url (got '${line:-nothing}')" >&2
    exit 2
  fi
done

job=$(jq -cn --arg id "$id" --arg model "$model" --arg prompt "$prompt" \
  '{id: $id, model: $model, messages: [{role: "user", content: $prompt}]}')
redis-cli -u "$url" LPUSH "$prefix:{chat}:queue" "$job" >/dev/null

end=$((SECONDS + timeout_s))
while [ "$SECONDS" -lt "$end" ]; do
  IFS= read -r -t "$((end - SECONDS))" line <&"${SUB[0]}" || break
  # Event lines are the JSON objects; a payload of several lines prints as several lines.
  case $line in "{"*) ;; *) continue ;; esac
  case $(jq -r .type <<<"$line") in
    chunk) jq -j .text <<<"$line" ;;
    retry) jq -r '"\n[attempt \(.attempt) starts over: \(.reason)]"' <<<"$line" >&2 ;;
    done) printf '\n%s\n' "$line"; exit 0 ;;
    error) printf '\n%s\n' "$line"; exit 1 ;;
  esac
done
echo "no terminal event for $id within $timeout_s s" >&2
exit 2
