#!/usr/bin/env python3
"""Admission 503 and tenant 429 under load, through the official openai package.

Usage: load_limits.py BASE_URL OPEN_KEY TEAM_KEY
OPEN_KEY has no concurrency limit; TEAM_KEY's tenant may run 3 requests at once; the gateway's
max_waiting for chat is 6. Fires bursts of concurrent slow streams and counts the answers.
"""
import sys
import threading

import openai
from openai import OpenAI

base, open_key, team_key = sys.argv[1], sys.argv[2], sys.argv[3]
SLOW = "sim/sim-1:tokens=60,delay_ms=30"
failed = []


def burst(key, n):
    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
    results, lock = [], threading.Lock()
    start = threading.Barrier(n)

    def one():
        start.wait()
        try:
            s = client.chat.completions.create(model=SLOW, messages=[{"role": "user", "content": "load"}], stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
            r = ("ok", len(text))
        except openai.RateLimitError as e:
            r = ("429", e.response.headers.get("retry-after"))
        except openai.InternalServerError as e:
            r = (str(e.status_code), e.response.headers.get("retry-after"))
        except Exception as e:  # noqa: BLE001 - reported as a failure below
            r = ("other", repr(e))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def check(name, cond, detail):
    print(("ok " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failed.append(name)


# The openai package builds its pydantic models on first use, and two threads doing that at once can fail
# (PydanticUserError "BaseModel cannot be instantiated directly"); one stream before the bursts builds them.
warm = OpenAI(base_url=base + "/v1", api_key=open_key, max_retries=0, timeout=60)
"".join(c.choices[0].delta.content or "" for c in warm.chat.completions.create(
    model="sim/sim-1:tokens=2", messages=[{"role": "user", "content": "warm"}], stream=True) if c.choices)

team = burst(team_key, 12)
oks = [r for r in team if r[0] == "ok"]
limited = [r for r in team if r[0] == "429"]
check("tenant_429", len(oks) == 3 and len(limited) == 9 and all(r[1] for r in limited) and all(r[1] > 0 for r in oks), team)

crowd = burst(open_key, 24)
oks = [r for r in crowd if r[0] == "ok"]
shed = [r for r in crowd if r[0] == "503"]
check("admission_503", len(oks) >= 6 and len(shed) >= 6 and len(oks) + len(shed) == 24 and all(r[1] for r in shed), crowd)

print("ALL OK" if not failed else f"FAILED: {', '.join(failed)}", flush=True)
sys.exit(1 if failed else 0)
