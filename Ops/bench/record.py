"""Appends one compare.sh run to BENCHMARKS.md as a table: record.py OUTPUT BENCHMARKS.md COMMAND"""
import datetime, json, os, platform, subprocess, sys

out, md, command = sys.argv[1:4]
rows = {}
ratios = None
for line in open(out):
    line = line.strip()
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    if "who" in d:
        rows[d["who"]] = d
    elif "chunks_per_s_ratio_burst" in d:
        ratios = d
if "peer" not in rows or "farm" not in rows:
    sys.exit("compare.sh printed no peer and farm figures; see its output above")
cpu = subprocess.run(["sh", "-c", "nproc"], capture_output=True, text=True).stdout.strip()
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=os.path.dirname(md) or ".").stdout.strip()
lines = [f"\n## {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {rev}, {cpu} cores, {platform.machine()}\n",
         f"Command: `{command}`\n",
         "| who | burst jobs/s | burst chunks/s | closed-loop jobs/s | TTFT p50 ms | TTFT p99 ms | job p50 ms | job p99 ms | done/jobs |",
         "|---|---|---|---|---|---|---|---|---|"]
for who in ("peer", "farm"):
    b, c = rows[who]["burst"], rows[who]["closed"]
    lines.append(f"| {who} | {b['jobs_per_s']:.0f} | {b['chunks_per_s']:.0f} | {c['jobs_per_s']:.0f} | {c['ttft_ms_p50']:.2f} | {c['ttft_ms_p99']:.2f} | "
                 f"{c['latency_ms_p50']:.2f} | {c['latency_ms_p99']:.2f} | {b['done']}/{b['jobs']}, {c['done']}/{c['jobs']} |")
if ratios:
    lines.append(f"\nfarm/peer: burst chunks/s x{ratios['chunks_per_s_ratio_burst']}, closed-loop jobs/s x{ratios['jobs_per_s_ratio_closed']}; "
                 f"TTFT p50 peer {ratios['ttft_p50_ms_peer_vs_farm'][0]:.2f} ms vs farm {ratios['ttft_p50_ms_peer_vs_farm'][1]:.2f} ms\n")
if not os.path.exists(md):
    open(md, "w").write("# Benchmarks\n\nEvery figure below was printed by the command given with it, on the machine described in its heading. "
                        "Newest last.\n")
with open(md, "a") as f:
    f.write("\n".join(lines) + "\n")
print(f"recorded in {md}")
