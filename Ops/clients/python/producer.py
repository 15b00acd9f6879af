#!/usr/bin/env python3
"""Enqueue one chat job on an llmq farm and print its tokens as they arrive (redis-py).

    LLMQ_REDIS_URL=redis://127.0.0.1:6379 LLMQ_PREFIX=llmq python3 producer.py MODEL "PROMPT"

Prints the text as it streams, then the terminal event on a line of its own.
Exits 0 on `done`, 1 on `error`, 2 when no terminal event came in time.
"""
import json
import os
import sys
import time
import uuid

import redis


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: producer.py MODEL PROMPT", file=sys.stderr)
        return 2
    model, prompt = sys.argv[1], sys.argv[2]
    url = os.environ.get("LLMQ_REDIS_URL", "redis://127.0.0.1:6379")
    prefix = os.environ.get("LLMQ_PREFIX", "llmq")
    timeout_s = float(os.environ.get("LLMQ_TIMEOUT_S", "120"))
    job_id = f"py-{uuid.uuid4().hex}"

    r = redis.Redis.from_url(url)
    sub = r.pubsub()
    # Subscribe, and wait until Redis confirms it, before the job exists: a token
    # published earlier would be lost to this subscriber.
    sub.subscribe(f"{prefix}:{{{job_id}}}:tokens")
    confirm = sub.get_message(timeout=10)
    if confirm is None or confirm["type"] != "subscribe":
        print(f"no subscription confirmed by {url}: {confirm!r}", file=sys.stderr)
        return 2
    job = {"id": job_id, "model": model, "messages": [{"role": "user", "content": prompt}]}
    r.lpush(f"{prefix}:{{chat}}:queue", json.dumps(job))

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.get_message(timeout=1)
        if msg is None or msg["type"] != "message":
            continue
        # A payload holds one or more whole NDJSON lines.
        for line in msg["data"].decode().splitlines():
            event = json.loads(line)
            kind = event["type"]
            if kind == "chunk":
                print(event["text"], end="", flush=True)
            elif kind == "retry":
                print(f"\n[attempt {event['attempt']} starts over: {event['reason']}]", file=sys.stderr)
            elif kind in ("done", "error"):
                print()
                print(line, flush=True)
                return 0 if kind == "done" else 1
    print(f"no terminal event for {job_id} within {timeout_s} s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
