#!/usr/bin/env python3
"""Classic against sharded pub/sub on one Redis Cluster, as shards are added (1 -> 3).

For each cluster size, in the same run, the same targeted load (one event per
user room, rooms spread over every slot) goes through two gateway nodes
twice, publishing through node 0's HTTP API both times:

- classic: the nodes in `standalone` mode, node i on master i: `SUBSCRIBE`
  and `PUBLISH`, which the cluster broadcasts over its bus to every shard;
- sharded: the nodes in `cluster` mode: `SSUBSCRIBE`/`SPUBLISH` on the shard
  that owns the room, nothing sent to the others.

It reports the Redis CPU per event summed over every shard (the load
tester's --aux-pid, over the publishing phase), and checks every event
arrived once. One command per round trip, Redis's cost is mostly the
syscalls around each command; so each size is then run again straight at
Redis, pipelined (pubsub_raw.py), where the pub/sub work itself shows.
Last, on one shard, what one more node serving a room costs per event.

    python3 loadtest/bench/shards.py            # 1, 2, 3 shards and the per-node cost (~10 min)
    python3 loadtest/bench/shards.py --users 2000 --events 10000 --shards 3
    python3 loadtest/bench/shards.py --shards ""  # only the per-node cost
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pubsub_raw
from cluster import RedisCluster, cpu_us
from compare import REPO, cleanup
from scale import run_on_fresh_nodes

IDLE_SAMPLE_S = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--shards", default="1,2,3")
    parser.add_argument("--raw-events", type=int, default=200_000, help="events of the pipelined runs")
    parser.add_argument("--raw-rate", type=int, default=20_000, help="events/s of the pipelined runs")
    parser.add_argument("--fanout-nodes", default="1,6", help="nodes serving every room, for the per-node cost")
    parser.add_argument("--json", default=str(REPO / "target" / "shards.json"))
    args = parser.parse_args()
    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGTERM, cleanup)
    subprocess.run(["cargo", "build", "--release", "-p", "wsgate", "-p", "wsgate-loadtest"], cwd=REPO, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="wsgate-shards-"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    scenario = ["targeted", "--users", str(args.users), "--events", str(args.events), "--rate", str(args.rate),
                "--settle", "30"]
    results = []
    for shards in (int(k) for k in args.shards.split(",") if k):
        cluster = RedisCluster(shards, workdir)
        try:
            # What the shards burn doing nothing (cron, cluster bus pings), to
            # tell it apart from the cost of the events.
            before = sum(cpu_us(pid) for pid in cluster.pids)
            time.sleep(IDLE_SAMPLE_S)
            idle_us_per_s = (sum(cpu_us(pid) for pid in cluster.pids) - before) / IDLE_SAMPLE_S
            for pubsub, mode, urls in (
                ("classic", "standalone", [f"redis://127.0.0.1:{p}" for p in cluster.ports]),
                ("sharded", "cluster", cluster.url),
            ):
                cluster.flush()
                report = run_on_fresh_nodes(2, urls, mode, scenario, cluster.pids)
                server, delivery = report.get("server") or {}, report["delivery"]
                result = {
                    "shards": shards,
                    "pubsub": pubsub,
                    "publisher": "gateway",
                    "redis_cpu_per_event_us": server.get("aux_cpu_per_event_us"),
                    "redis_cpu_publish_us": server.get("aux_cpu_publish_us"),
                    "redis_idle_cpu_us_per_s": idle_us_per_s,
                    "events": args.events,
                    "delivered": delivery["delivered"],
                    "lost": delivery["lost"],
                    "duplicates": delivery["duplicates"],
                    "misrouted": delivery["misrouted"],
                    "clean": report["clean"],
                    "cmd": report["_cmd"],
                }
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "cmd"}), flush=True)
                Path(args.json).write_text(json.dumps(results, indent=1))
            for pubsub in ("classic", "sharded"):
                cluster.flush()
                before = sum(cpu_us(pid) for pid in cluster.pids)
                raw = pubsub_raw.run(cluster.ports, args.users, args.raw_events, pubsub == "sharded", args.raw_rate)
                used = sum(cpu_us(pid) for pid in cluster.pids) - before - idle_us_per_s * raw["seconds"]
                result = {"shards": shards, "pubsub": pubsub, "publisher": "pipelined",
                          "redis_cpu_per_event_us": used / raw["events"], **raw}
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            cluster.stop()
    # What one more node serving the same room costs Redis per event: the
    # same pipelined load on one shard, every room subscribed by 1 then by
    # several nodes.
    cluster = RedisCluster(1, workdir)
    fanout = []
    try:
        for nodes in (int(n) for n in args.fanout_nodes.split(",")):
            before = sum(cpu_us(pid) for pid in cluster.pids)
            raw = pubsub_raw.run(cluster.ports, args.users, args.raw_events, False, args.raw_rate, nodes, True)
            used = sum(cpu_us(pid) for pid in cluster.pids) - before
            fanout.append({"nodes": nodes, "redis_cpu_per_event_us": used / raw["events"], **raw})
            print(json.dumps(fanout[-1]), flush=True)
    finally:
        cluster.stop()
    Path(args.json).write_text(json.dumps({"shards": results, "fanout": fanout}, indent=1))
    print()
    tables = (("gateway", "through the gateway's API, one command per round trip"),
              ("pipelined", f"pipelined, {pubsub_raw.PIPELINE} commands per round trip"))
    for publisher, title in tables if results else ():
        print(f"Redis CPU per event summed over shards, {title}:")
        print()
        print("| shards | classic PUBLISH | sharded SPUBLISH | classic / sharded | received (classic, sharded) |")
        print("|---|---|---|---|---|")
        for shards in sorted({r["shards"] for r in results}):
            c, s = (next(r for r in results if (r["shards"], r["pubsub"], r["publisher"]) == (shards, p, publisher))
                    for p in ("classic", "sharded"))
            got = (lambda r: f"{r['received']:,}/{r['expected']:,}" if publisher == "pipelined"
                   else f"{r['delivered']:,}/{r['events']:,}, lost/dup/misrouted {r['lost']}/{r['duplicates']}/{r['misrouted']}")
            print(f"| {shards} | {c['redis_cpu_per_event_us']:.2f} µs | {s['redis_cpu_per_event_us']:.2f} µs "
                  f"| {c['redis_cpu_per_event_us'] / s['redis_cpu_per_event_us']:.2f}× | {got(c)}; {got(s)} |")
        print()

    print("| nodes serving every room | Redis CPU per event (one shard, pipelined) | received |")
    print("|---|---|---|")
    for f in fanout:
        print(f"| {f['nodes']} | {f['redis_cpu_per_event_us']:.2f} µs | {f['received']:,}/{f['expected']:,} |")
    if len(fanout) >= 2:
        first, last = fanout[0], fanout[-1]
        slope = (last["redis_cpu_per_event_us"] - first["redis_cpu_per_event_us"]) / (last["nodes"] - first["nodes"])
        print(f"\neach more node serving a room: {slope:.2f} µs of Redis CPU per event")


if __name__ == "__main__":
    main()
