#!/usr/bin/env python3
"""Loads the gateway's page in headless Chromium over the DevTools protocol, submits a prompt,
reloads mid-stream, and checks the streamed answer equals the stored result with nothing repeated.

Usage: browser.py BASE_URL SCREENSHOT.png [API_KEY]
Needs the Debian package chromium and the websockets package; exits 2 when either is missing.
"""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

try:
    import websockets
except ImportError:
    print("FAIL: the websockets package is missing; pip install websockets (make test does)")
    sys.exit(2)

base, shot = sys.argv[1], sys.argv[2]
key = sys.argv[3] if len(sys.argv) > 3 else ""
chrome = shutil.which("chromium") or shutil.which("chromium-browser")
if not chrome:
    print("FAIL: chromium is not installed; apt-get install chromium (make test does)")
    sys.exit(2)

profile = tempfile.mkdtemp(prefix="llmq-chromium-")
proc = subprocess.Popen([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def devtools_url():
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while time.time() < deadline:
        if os.path.exists(port_file):
            lines = open(port_file).read().split()
            if len(lines) >= 1:
                port = lines[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.05)
    raise SystemExit("FAIL: chromium did not open its DevTools port within 30 s")


class Page:
    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method, **params):
        self.n += 1
        my = self.n
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("id") == my:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    async def until(self, what, expr, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.05)
        status = await self.js("document.getElementById('status').textContent")
        raise SystemExit(f"FAIL: timed out waiting for {what}; page status {status!r}")


async def main():
    async with websockets.connect(devtools_url(), max_size=64 << 20) as ws:
        p = Page(ws)
        await p.call("Page.enable")
        await p.call("Page.navigate", url=base + "/" + (f"#key={key}" if key else ""))
        await p.until("the model list", "document.getElementById('model') && document.getElementById('model').dataset.loaded === 'true'")
        models = await p.js("[...document.getElementById('model').options].map(o => o.value)")
        if "demo" not in models:
            raise SystemExit(f"FAIL: the model picker lacks route demo: {models}")
        await p.js("document.getElementById('model').value = 'demo'")
        await p.js("document.getElementById('send').click()")
        await p.until("the first words", "document.getElementById('answer').textContent.length > 20")
        before = await p.js("document.getElementById('answer').textContent")
        rid = await p.js("document.getElementById('answer').dataset.request")
        await p.call("Page.reload")
        await p.until("the page after reload", "document.readyState === 'complete' && document.getElementById('answer') !== null")
        await p.until("the end of the stream", "document.getElementById('status').dataset.state === 'done'", timeout=60)
        text = await p.js("document.getElementById('answer').textContent")
        shotdata = await p.call("Page.captureScreenshot", format="png")
        with open(shot, "wb") as f:
            f.write(base64.b64decode(shotdata["data"]))
        with urllib.request.urlopen(urllib.request.Request(f"{base}/v1/requests/{rid}", headers={"Authorization": f"Bearer {key}"}), timeout=5) as r:
            result = json.load(r)
        print(json.dumps({"request": rid, "before_reload": before, "text": text, "result": result.get("text")}))
        if not text.startswith(before) or len(text) <= len(before):
            raise SystemExit("FAIL: the text after the reload does not continue the text before it")
        if text != result.get("text"):
            raise SystemExit(f"FAIL: the page shows {text!r}, the result is {result.get('text')!r}")
        print("ALL OK")


try:
    asyncio.run(main())
finally:
    proc.kill()
    proc.wait()
    shutil.rmtree(profile, ignore_errors=True)
