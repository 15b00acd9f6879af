"""Appends one `make bench` run (run.sh's output directory) to BENCHMARKS.md: record.py OUT_DIR BENCHMARKS.md"""
import datetime, json, os, platform, statistics, subprocess, sys

out, md = sys.argv[1:3]


def lines_of(name):
    p = os.path.join(out, name + ".out")
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []


def command(name):
    p = os.path.join(out, name + ".cmd")
    if not os.path.exists(p):
        return "?"
    here = os.path.dirname(os.path.abspath(__file__))
    return open(p).read().strip().replace(os.path.dirname(os.path.dirname(here)) + "/", "").replace(
        os.path.dirname(os.path.dirname(os.path.dirname(here))) + "/shared/", "../shared/")


def compare(name):
    rows, ratios = {}, None
    for d in lines_of(name):
        if "who" in d:
            rows[d["who"]] = d
        elif "chunks_per_s_ratio_burst" in d:
            ratios = d
    return rows, ratios


cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                     cwd=os.path.dirname(os.path.abspath(md))).stdout.strip()
load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
text = [f"\n## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {rev}, {cpu} cores, {platform.machine()} "
        f"(load average {load} at the end)\n"]

rows, ratios = compare("stream")
if "peer" in rows and "farm" in rows:
    text += [f"Streaming, 100-token jobs. Command: `{command('stream')}`\n",
             "| who | burst jobs/s | burst chunks/s | closed-loop jobs/s | TTFT p50 ms | TTFT p99 ms | job p50 ms | job p99 ms | done/jobs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for who in ("peer", "farm"):
        b, c = rows[who]["burst"], rows[who]["closed"]
        text.append(f"| {who} | {b['jobs_per_s']:.0f} | {b['chunks_per_s']:.0f} | {c['jobs_per_s']:.0f} | {c['ttft_ms_p50']:.2f} | "
                    f"{c['ttft_ms_p99']:.2f} | {c['latency_ms_p50']:.2f} | {c['latency_ms_p99']:.2f} | {b['done']}/{b['jobs']}, {c['done']}/{c['jobs']} |")
    if ratios:
        text.append(f"\nfarm/peer: burst chunks/s x{ratios['chunks_per_s_ratio_burst']}, closed-loop jobs/s x{ratios['jobs_per_s_ratio_closed']}\n")

rows, _ = compare("short")
if "peer" in rows and "farm" in rows:
    p, f = rows["peer"]["burst"], rows["farm"]["burst"]
    text += [f"Short jobs, 1 token each, burst. Command: `{command('short')}`\n",
             "| who | jobs | done | lines delivered | jobs/s |", "|---|---|---|---|---|"]
    for who, b in (("peer", p), ("farm", f)):
        text.append(f"| {who} | {b['jobs']} | {b['done']} | {b.get('lines', '?')} | {b['jobs_per_s']:.0f} |")
    text.append(f"\nfarm/peer: x{f['jobs_per_s'] / p['jobs_per_s']:.1f} jobs/s\n" if p["jobs_per_s"] else "")

# the *_c steps ran with LLMQ_BENCH_UPSTREAM=c: the paced upstream is Ops/bench/ts_upstream.c, not the node one;
# *_c2 also with LLMQ_BENCH_HTTP_THREADS=2 (`http_threads: 2`)
paced = ("overhead", "overhead_c", "paced1k", "paced10k", "paced1k_c", "paced10k_c", "paced10k_c2")
c_upstream = lambda name: name.endswith("_c") or name.endswith("_c2")
two_threads = lambda name: name.endswith("_c2")
env_of = lambda name: ("LLMQ_BENCH_UPSTREAM=c " if c_upstream(name) else "") + ("LLMQ_BENCH_HTTP_THREADS=2 " if two_threads(name) else "")


def median_row(rows):
    """One row from several runs of one step: each figure the median over the runs, jobs done summed."""
    if len(rows) == 1:
        return rows[0]
    runs = [r["run"] or {} for r in rows]
    m = {k: statistics.median(x[k] for x in runs if k in x) for k in runs[0] if isinstance(runs[0][k], float)}
    m["done"], m["jobs"] = sum(x.get("done", 0) for x in runs), sum(x.get("jobs", 0) for x in runs)
    return dict(rows[0], run=m, rss_peak_mb=statistics.median(r["rss_peak_mb"] for r in rows), runs=len(rows))


over = []
for name in paced:
    by_who = {}
    for d in lines_of(name):
        if "who" in d and "run" in d:
            by_who.setdefault(d["who"], []).append(d)
    over += [(name, median_row(rows)) for rows in by_who.values()]
if over:
    text += ["What the farm adds (paced upstream stamping each token with the clock; pickup = LPUSH to the upstream having the request, "
             "token lag = the upstream wrote a token to a subscriber having its line). Commands:\n"]
    for name in paced:
        if os.path.exists(os.path.join(out, name + ".cmd")):
            text.append(f"- `{env_of(name)}{command(name)}`")
    if any(c_upstream(name) for name, _ in over):
        text += ["", "Rows marked (C upstream) had Ops/bench/ts_upstream.c as the paced upstream, the others the node one "
                 "(../shared/bench/upstream/ts_upstream.js), which spends about 470 us of CPU per new connection."]
    text += ["", "| who | model | C | jobs done | pickup p50/p99 ms | token lag p50/p99 ms | added TTFT p50/p99 ms | RSS peak MB (process tree) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in over:
        m = r["run"] or {}
        g = lambda k: m.get(k, float("nan"))
        model = r["model"] + (" (C upstream, 2 HTTP threads)" if two_threads(name) else " (C upstream)" if c_upstream(name) else "")
        model += f", median of {r['runs']} runs" if r.get("runs") else ""
        text.append(f"| {r['who']} | {model} | {r['concurrency']} | {m.get('done')}/{m.get('jobs')} | "
                    f"{g('pickup_ms_p50'):.2f} / {g('pickup_ms_p99'):.2f} | {g('token_lag_ms_p50'):.2f} / {g('token_lag_ms_p99'):.2f} | "
                    f"{g('added_ttft_ms_p50'):.2f} / {g('added_ttft_ms_p99'):.2f} | {r['rss_peak_mb']} |")
    text.append("")

if len(text) == 1:
    sys.exit("the bench printed no figures; see its output above")
if not os.path.exists(md):
    open(md, "w").write("# Benchmarks\n\nEvery figure below was printed by the command given with it, on the machine described in its heading. "
                        "Newest last.\n")
with open(md, "a") as fh:
    fh.write("\n".join(text) + "\n")
print(f"recorded in {md}")
