#!/usr/bin/env python3
"""The gateway's benchmark: its added latency over the Redis path, and its streamed requests/s
side by side with LiteLLM's proxy, same upstream (ts_upstream.js), same concurrency.

  gateway.py --gateway http://127.0.0.1:8080 --redis-port 6379 [--prefix llmq] [--route ts]
             [--litellm http://127.0.0.1:4000 --litellm-model ts] [--n 2000] [--c 64] [--latency-n 300]

Latency: one request at a time, alternating a streamed chat request through the gateway, the
same job pushed straight to Redis by a subscriber (SUBSCRIBE, then LPUSH), and a GET /healthz on a
new connection (the client's HTTP floor: connecting and one request/response through asyncio, which
the direct subscriber on its open connections does not pay); TTFT is from sending to the first text.
`added_p50_ms` is gateway minus direct; `added_over_http_floor_p50_ms` also takes the floor off,
leaving the gateway's own work (a streamed answer closes its connection, so a client pays the floor
on every streamed request whatever its HTTP library). Throughput: N streamed chat requests, C at once, each on its own connection
(the gateway closes streamed answers), requests/s = N / wall time. Plain asyncio sockets, no
client library, so the client costs the same against either server. Prints one JSON object.
"""
import argparse
import asyncio
import json
import statistics
import time
import urllib.parse
import uuid


async def http_stream(url, body, headers=None):
    """POSTs body, reads the SSE answer to its end; returns (ttft_s, total_s, ok)."""
    u = urllib.parse.urlsplit(url)
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(u.hostname, u.port)
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    w.write(f"POST {u.path} HTTP/1.1\r\nHost: {u.hostname}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n{extra}\r\n".encode() + data)
    await w.drain()
    ttft, buf, ok = None, b"", False
    while True:
        chunk = await r.read(65536)
        if not chunk:
            break
        buf += chunk
        if ttft is None and b'"content":"@' in buf:
            ttft = time.perf_counter() - t0
        if b"data: [DONE]" in buf:
            ok = True
            break
    w.close()
    return ttft, time.perf_counter() - t0, ok and b" 200 " in buf[:20]


async def http_floor(url):
    """Seconds for a GET on a new connection, to the end of the answer."""
    u = urllib.parse.urlsplit(url)
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(u.hostname, u.port)
    w.write(f"GET /healthz HTTP/1.1\r\nHost: {u.hostname}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    buf = b""
    while b"ok\n" not in buf:
        chunk = await r.read(65536)
        if not chunk:
            break
        buf += chunk
    w.close()
    return time.perf_counter() - t0


async def resp(r):
    """One RESP reply (enough of RESP2 for SUBSCRIBE, LPUSH and messages)."""
    line = await r.readline()
    t = line[:1]
    if t in (b"+", b"-", b":"):
        return line[1:-2]
    if t == b"$":
        n = int(line[1:-2])
        if n < 0:
            return None
        return (await r.readexactly(n + 2))[:-2]
    if t == b"*":
        return [await resp(r) for _ in range(int(line[1:-2]))]
    raise RuntimeError(f"unexpected reply {line!r}")


def cmd(*args):
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += f"${len(a)}\r\n".encode() + a + b"\r\n"
    return out


async def redis_direct(port, prefix, model, sub, pushw, pushr):
    """TTFT of a subscriber pushing its own job: SUBSCRIBE, LPUSH, first chunk event."""
    rid = "bench-" + uuid.uuid4().hex[:12]
    sr, sw = sub
    t0 = time.perf_counter()
    sw.write(cmd("SUBSCRIBE", f"{prefix}:{{{rid}}}:tokens"))
    await sw.drain()
    await resp(sr)
    job = json.dumps({"id": rid, "model": model, "messages": [{"role": "user", "content": "bench"}]})
    pushw.write(cmd("LPUSH", f"{prefix}:{{chat}}:queue", job))
    await pushw.drain()
    await resp(pushr)
    ttft = None
    while True:
        m = await resp(sr)
        if isinstance(m, list) and m[0] == b"message":
            if ttft is None and b'"type":"chunk"' in m[2]:
                ttft = time.perf_counter() - t0
            if b'"type":"done"' in m[2] or b'"type":"error"' in m[2]:
                break
    sw.write(cmd("UNSUBSCRIBE", f"{prefix}:{{{rid}}}:tokens"))
    await sw.drain()
    await resp(sr)
    return ttft


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


async def latency(a):
    sub = await asyncio.open_connection("127.0.0.1", a.redis_port)
    pushr, pushw = await asyncio.open_connection("127.0.0.1", a.redis_port)
    gw, direct, floor = [], [], []
    body = {"model": a.route, "stream": True, "messages": [{"role": "user", "content": "bench"}]}
    for i in range(a.latency_n):
        t, _, ok = await http_stream(a.gateway + "/v1/chat/completions", body, a.headers)
        if ok and t is not None:
            gw.append(t * 1000)
        d = await redis_direct(a.redis_port, a.prefix, a.route, sub, pushw, pushr)
        if d is not None:
            direct.append(d * 1000)
        floor.append(await http_floor(a.gateway) * 1000)
    return {"n": a.latency_n, "gateway_ttft_ms": {"p50": pct(gw, 50), "p90": pct(gw, 90), "p99": pct(gw, 99)},
            "redis_ttft_ms": {"p50": pct(direct, 50), "p90": pct(direct, 90), "p99": pct(direct, 99)},
            "http_floor_ms": {"p50": pct(floor, 50), "p90": pct(floor, 90)},
            "added_p50_ms": pct(gw, 50) - pct(direct, 50) if gw and direct else None,
            "added_over_http_floor_p50_ms": pct(gw, 50) - pct(direct, 50) - pct(floor, 50) if gw and direct else None}


async def throughput(url, model, n, c, headers):
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "bench"}]}
    left, done, failed, ttfts = n, 0, 0, []

    async def worker():
        nonlocal left, done, failed
        while left > 0:
            left -= 1
            try:
                t, _, ok = await http_stream(url, body, headers)
            except OSError:
                ok, t = False, None
            if ok:
                done += 1
                if t is not None:
                    ttfts.append(t * 1000)
            else:
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    wall = time.perf_counter() - t0
    return {"n": n, "c": c, "ok": done, "failed": failed, "requests_per_s": round(done / wall, 1),
            "ttft_ms": {"p50": pct(ttfts, 50), "p99": pct(ttfts, 99)}}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--prefix", default="llmq")
    ap.add_argument("--route", default="ts")
    ap.add_argument("--key", default="")
    ap.add_argument("--litellm")
    ap.add_argument("--litellm-model", default="ts")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--c", type=int, default=64)
    ap.add_argument("--latency-n", type=int, default=300)
    a = ap.parse_args()
    a.headers = {"Authorization": f"Bearer {a.key}"} if a.key else {}
    out = {"latency": await latency(a)}
    out["gateway"] = await throughput(a.gateway + "/v1/chat/completions", a.route, a.n, a.c, a.headers)
    if a.litellm:
        out["litellm"] = await throughput(a.litellm + "/v1/chat/completions", a.litellm_model, a.n, a.c, {"Authorization": "Bearer sk-bench"})
        if out["litellm"]["requests_per_s"]:
            out["gateway_over_litellm"] = round(out["gateway"]["requests_per_s"] / out["litellm"]["requests_per_s"], 1)
    print(json.dumps(out, indent=1))


asyncio.run(main())
