#!/usr/bin/env python3
"""Drives `llmq gateway` with the official openai package, unchanged, and checks every answer.

Usage: openai_client.py BASE_URL KEY SIM_URL REDIS_PORT PREFIX
(BASE_URL like http://127.0.0.1:PORT, SIM_URL the sim's root; REDIS_PORT and PREFIX of the farm, to
set a provider cooldown the way workers do)
Prints one line per check ("ok NAME" or "FAIL NAME: why") and exits 1 when any failed.
The gateway's configuration must have the routes "fast" (chat/complete) and "emb" (embed), the key
KEY with no concurrency limit, the key "slow-key" limited to 1 request at once, and max_waiting
complete: 2 (see Tests/LLMQTests/GatewayTests.swift).
"""
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
from openai import OpenAI

base, key, sim, redis_port, prefix = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
failed = []


def check(name, cond, detail=""):
    if cond:
        print(f"ok {name}", flush=True)
    else:
        print(f"FAIL {name}: {detail}", flush=True)
        failed.append(name)


def expect_error(name, exc_type, status, fn):
    try:
        fn()
    except exc_type as e:
        ok = getattr(e, "status_code", None) == status
        if status in (429, 503):
            ok = ok and e.response.headers.get("retry-after") is not None
        check(name, ok, f"{type(e).__name__} status {getattr(e, 'status_code', None)} headers {dict(getattr(e, 'response', None).headers) if getattr(e, 'response', None) else None}")
        return
    except Exception as e:  # noqa: BLE001 - the wrong exception type is the failure being reported
        check(name, False, f"raised {type(e).__name__}: {e}")
        return
    check(name, False, "no error raised")


def sim_stats():
    with urllib.request.urlopen(sim + "/sim/stats", timeout=5) as r:
        return json.load(r)


def waiting_jobs(mode):
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("llmq_gateway_waiting_jobs") and f'mode="{mode}"' in line:
                return float(line.split()[-1])
    return 0


def wait_until(what, cond, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    check(what, False, f"not within {timeout} s")


def redis(*args):
    """One command on a fresh connection (RESP by hand: no client library needed)."""
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as c:
        c.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(str(a))}\r\n{a}\r\n".encode() for a in args))
        return c.recv(4096)


msgs = [{"role": "user", "content": "Name three rivers."}]

# Chat, whole and streamed: the same deterministic answer both ways.
r = client.chat.completions.create(model="fast", messages=msgs)
whole = r.choices[0].message.content or ""
check("chat", r.object == "chat.completion" and len(whole) > 0 and r.choices[0].finish_reason == "stop"
      and r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, repr(r))

stream = client.chat.completions.create(model="fast", messages=msgs, stream=True, stream_options={"include_usage": True})
parts, finish, usage, roles = [], None, None, []
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
streamed = "".join(parts)
check("chat_stream", streamed == whole and finish == "stop" and roles == ["assistant"] and len(parts) > 1,
      f"{streamed!r} vs {whole!r}, finish {finish}, roles {roles}")
check("chat_stream_usage", usage is not None and usage.completion_tokens > 0, repr(usage))

# Completions, whole and streamed.
c = client.completions.create(model="fast", prompt="Once upon a time")
check("completion", c.object == "text_completion" and len(c.choices[0].text) > 0 and c.usage.completion_tokens > 0, repr(c))
cs = client.completions.create(model="fast", prompt="Once upon a time", stream=True)
text = "".join(ch.choices[0].text for ch in cs if ch.choices)
check("completion_stream", text == c.choices[0].text, f"{text!r} vs {c.choices[0].text!r}")

# Embeddings: the SDK asks for base64 by default and decodes it; float asked explicitly too.
e = client.embeddings.create(model="emb", input=["red", "green"])
check("embeddings", len(e.data) == 2 and len(e.data[0].embedding) > 0 and e.data[1].index == 1
      and e.data[0].embedding != e.data[1].embedding, repr(e)[:300])
ef = client.embeddings.create(model="emb", input="red", encoding_format="float")
check("embeddings_float", len(ef.data) == 1 and all(abs(a - b) < 1e-5 for a, b in zip(ef.data[0].embedding, e.data[0].embedding)), "")

# Tools, whole and streamed.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
t = client.chat.completions.create(model="sim/sim-1:tool=get_weather", messages=msgs, tools=tools, tool_choice="auto")
calls = t.choices[0].message.tool_calls or []
check("tools", len(calls) == 1 and calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) is not None
      and t.choices[0].finish_reason == "tool_calls", repr(t))
ts = client.chat.completions.create(model="sim/sim-1:tool=get_weather", messages=msgs, tools=tools, stream=True)
name, args = None, ""
for chunk in ts:
    for ch in chunk.choices:
        for tc in ch.delta.tool_calls or []:
            name = name or tc.function.name
            args += tc.function.arguments or ""
check("tools_stream", name == "get_weather" and json.loads(args) == json.loads(calls[0].function.arguments), f"{name} {args!r}")

# Errors, each as the SDK's own exception type.
expect_error("error_400", openai.BadRequestError, 400,
             lambda: client.chat.completions.create(model="fast", messages=[{"role": "wizard", "content": "x"}]))
expect_error("error_401", openai.AuthenticationError, 401,
             lambda: OpenAI(base_url=base + "/v1", api_key="not-a-key", max_retries=0).chat.completions.create(model="fast", messages=msgs))
expect_error("error_403", openai.PermissionDeniedError, 403,
             lambda: client.chat.completions.create(model="sim/sim-1:fault=401", messages=msgs))
expect_error("error_404", openai.NotFoundError, 404, lambda: client.chat.completions.create(model="no-such-route", messages=msgs))
expect_error("error_504", openai.InternalServerError, 504,
             lambda: client.chat.completions.create(model="sim/sim-1:first_ms=5000", messages=msgs, extra_body={"timeout_s": 0.5}))
# 400 streamed: nothing went out yet, so the status is the error's own. A client of its own: once, the pooled
# connection the 504 above had used was found closed ("Connection error"), which max_retries=0 does not retry.
expect_error("error_400_stream", openai.BadRequestError, 400,
             lambda: list(OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
                          .chat.completions.create(model="fast", messages=[], stream=True)))

# 429: "slow-key" may run one request at once across gateways.
slow = OpenAI(base_url=base + "/v1", api_key="slow-key", max_retries=0, timeout=60)
held = slow.chat.completions.create(model="sim/sim-1:tokens=200,delay_ms=20", messages=msgs, stream=True)
next(iter(held))
expect_error("error_429", openai.RateLimitError, 429, lambda: slow.chat.completions.create(model="fast", messages=msgs))
held.close()

# 503: admission control on the complete mode (max_waiting 2) while two long completions run.
streams = [client.completions.create(model="sim/sim-1:tokens=400,delay_ms=20", prompt="long", stream=True) for _ in range(2)]
for s in streams:
    next(iter(s))
wait_until("admission sees 2 complete jobs", lambda: waiting_jobs("complete") >= 2)
expect_error("error_503", openai.InternalServerError, 503, lambda: client.completions.create(model="fast", prompt="x"))
for s in streams:
    s.close()

# 503 when every target of the route cools down (a worker sets PREFIX:cooldown:PROVIDER after a 429).
redis("SET", f"{prefix}:cooldown:sim", "1", "PX", "5000")


def cooldown_seen():
    """The gateway reads cooldowns every sample_interval_s: a request admitted before that waits (and is cancelled)."""
    try:
        client.with_options(timeout=1.0).chat.completions.create(model="fast", messages=msgs)
    except openai.InternalServerError as e:
        return e.status_code == 503
    except openai.APITimeoutError:
        return False
    return False


wait_until("the gateway samples the cooldown", cooldown_seen)
expect_error("error_503_cooldown", openai.InternalServerError, 503, lambda: client.chat.completions.create(model="fast", messages=msgs))
redis("DEL", f"{prefix}:cooldown:sim")
wait_until("the gateway samples the cooldown's end", lambda: not cooldown_seen())

# metadata.detach: the job runs on after its client left, and its result can be read later.
wait_until("the sim's earlier streams end", lambda: sim_stats()["active"] == 0)
aborted = sim_stats()["aborted"]
s = client.chat.completions.create(model="sim/sim-1:tokens=30,delay_ms=20", messages=msgs, stream=True, metadata={"detach": "true"})
it = iter(s)
rid = next(it).id
s.close()


def finished():
    req = urllib.request.Request(f"{base}/v1/requests/{rid}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200 and json.load(r).get("status") == "done"
    except urllib.error.HTTPError:
        return False


wait_until("the detached request's result", finished)
check("detach_keeps_running", finished() and sim_stats()["aborted"] == aborted, f"aborted {aborted} -> {sim_stats()['aborted']}")

# A client that leaves mid-stream cancels its job: the sim sees its stream aborted.
wait_until("the sim's earlier streams end", lambda: sim_stats()["active"] == 0)
before = sim_stats()["aborted"]
s = client.chat.completions.create(model="sim/sim-1:tokens=500,delay_ms=20", messages=msgs, stream=True)
it = iter(s)
for _ in range(5):
    next(it)
s.close()
deadline = time.time() + 10
while time.time() < deadline and sim_stats()["aborted"] <= before:
    time.sleep(0.05)
after = sim_stats()["aborted"]
check("disconnect_cancels_upstream", after > before, f"sim aborted {before} -> {after}")

print("ALL OK" if not failed else f"FAILED: {', '.join(failed)}", flush=True)
sys.exit(1 if failed else 0)
