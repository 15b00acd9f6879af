"""Pushes JOBS chat jobs onto a Redis Cluster farm's queue and times them to the end.

  cluster_load.py SEED_HOST:PORT JOBS TOKENS MASTERS     (MASTERS 0: one plain redis-server, for comparison)

Prints one JSON line: jobs, tokens, seconds from the first push until every job was
acknowledged (queue and in-flight lists empty, every result written), chunks/s, and
Redis' own cost per chunk (microseconds of command time, from INFO commandstats,
summed over the masters), which the projection in BENCHMARKS.md is built on.
"""
import json, sys, time
import redis
from redis.cluster import RedisCluster, ClusterNode

host, port = sys.argv[1].rsplit(":", 1)
jobs, tokens, masters = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
plain = masters == 0
rc = redis.Redis(host=host, port=int(port), decode_responses=True) if plain else \
    RedisCluster(startup_nodes=[ClusterNode(host, int(port))], decode_responses=True)
queue = "llmq:{chat}:queue"

def cost():
    """Microseconds of command time per master (all commands)."""
    if plain:
        return {"plain": sum(v["usec"] for k, v in rc.info("commandstats").items() if k.startswith("cmdstat_"))}
    out = {}
    for node in rc.get_primaries():
        stats = rc.info("commandstats", target_nodes=node)
        out[node.name] = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_"))
    return out

rc.config_resetstat() if plain else rc.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
before = cost()
run = str(int(time.time()))
ids = [f"b-{run}-{i}" for i in range(jobs)]
t0 = time.time()
pipe = rc.pipeline(transaction=False)
for i, id in enumerate(ids):
    pipe.lpush(queue, json.dumps({"id": id, "model": "sim-1", "messages": [{"role": "user", "content": "bench"}]}))
    if i % 500 == 499:
        pipe.execute()
pipe.execute()
deadline = t0 + 600
while time.time() < deadline:
    if rc.llen(queue) == 0:
        keys = rc.scan_iter(match="llmq:{chat}:inflight:*") if plain else \
            rc.scan_iter(match="llmq:{chat}:inflight:*", target_nodes=RedisCluster.PRIMARIES)
        inflight = sum(rc.llen(k) for k in keys)
        if inflight == 0:
            break
    time.sleep(0.02)
seconds = time.time() - t0
results = [f"llmq:{{{id}}}:result" for id in ids]
done = sum(1 for r in (rc.mget(results) if plain else rc.mget_nonatomic(results)) if r and '"status":"done"' in r)
after = cost()
usec = sum(after.values()) - sum(before.get(k, 0) for k in after)
per_master = sorted(round((after[k] - before.get(k, 0)) / 1e6, 2) for k in after)
chunks = done * tokens
print(json.dumps({"masters": masters, "jobs": jobs, "done": done, "tokens": tokens, "seconds": round(seconds, 2),
                  "chunks_per_s": round(chunks / seconds), "redis_usec_per_chunk": round(usec / max(chunks, 1), 3),
                  "redis_busy_s_per_master": per_master}))
