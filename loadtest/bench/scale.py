#!/usr/bin/env python3
"""Scale-out bench: 100k live sockets over 6 wsgate nodes, on one Redis and
then on a 3-master Redis Cluster (sharded pub/sub), fan-out and targeted.

Each run gets fresh nodes (so RSS per socket is the run's own) and publishes
through node 0's HTTP API, which is `PUBLISH` on one Redis and `SPUBLISH` on
the room's shard in cluster mode (a backend's plain `PUBLISH` would not reach
cluster-mode nodes); with `--publish redis` the load tester is the backend
instead, on one Redis: `PUBLISH`, or `FCALL wsgate_publish` with history.
The load tester counts every event on every socket (lost, duplicated,
misrouted) and samples the nodes' and the Redis servers' CPU.

    python3 loadtest/bench/scale.py                       # both modes, both scenarios (~25 min)
    python3 loadtest/bench/scale.py --sockets 6000 --modes cluster --scenarios targeted   # a quick look
    python3 loadtest/bench/scale.py --sockets 4000 --nodes 2 --modes standalone --scenarios targeted --events 40000 --history both
                                                          # Redis CPU per event, durable against plain
    python3 loadtest/bench/scale.py --sockets 4000 --nodes 2 --modes standalone --scenarios targeted --events 40000 --history both --publish redis
                                                          # the same with the load tester as the backend: PUBLISH against FCALL wsgate_publish

It prints a markdown table for BENCHMARKS.md and keeps the raw reports in
target/scale.json. Every process it starts is stopped on exit.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from cluster import RedisCluster
from compare import LOADTEST, REPO, SECRET, Redis, cleanup, loadtest_report, start_wsgate, stop

API_KEY = "scale-bench-api-key-0123456789"


def start_nodes(count: int, redis_url: str | list[str], mode: str, durable: bool = False) -> tuple[list, list[int]]:
    """Ready nodes in `mode` with the API on (and, if `durable`, history for
    the load tester's org and user rooms); with a list of URLs, node i takes URL i."""
    urls = redis_url if isinstance(redis_url, list) else [redis_url]
    env = {"WSGATE_REDIS_MODE": mode, "WSGATE_API_KEYS": API_KEY}
    if durable:
        env["WSGATE_HISTORY_NAMESPACES"] = "org,user"
    server = start_wsgate(urls, count, env)
    return server.procs, [int(url.rsplit(":", 1)[1]) for url in server.urls]


def run_on_fresh_nodes(count: int, redis_url: str | list[str], mode: str, scenario: list[str],
                       redis_pids: list[int], durable: bool = False, publish: str = "api") -> dict:
    """Start `count` nodes, run the load tester against them, stop them; its report."""
    procs, ports = start_nodes(count, redis_url, mode, durable)
    if publish == "api":
        via = ["--publish-http", f"http://127.0.0.1:{ports[0]}", "--api-key", API_KEY]
    else:
        # The load tester as a backend on Redis itself: PUBLISH, or FCALL wsgate_publish when durable.
        via = ["--redis-url", redis_url if isinstance(redis_url, str) else redis_url[0]] + (["--fcall"] if durable else [])
    try:
        return run(scenario + via, ports, [p.pid for p in procs], redis_pids)
    finally:
        for proc in procs:
            stop(proc)


def scenario_args(name: str, sockets: int, events: int | None) -> list[str]:
    if name == "fanout":
        # 20 events to one room of every socket: 2M deliveries at 100k sockets.
        return ["fanout", "--sockets", str(sockets), "--events", "20", "--rate", "2", "--settle", "60"]
    # Events spread over the user rooms (one per user by default), so over every shard.
    return ["targeted", "--users", str(sockets), "--events", str(events or sockets), "--rate", "2000", "--settle", "30"]


def run(scenario: list[str], ports: list[int], node_pids: list[int], redis_pids: list[int]) -> dict:
    """The load tester against these nodes (the scenario's arguments say how it publishes); its JSON report."""
    cmd = [str(LOADTEST), *scenario, "--connect-timeout", "30", "--timeout", "900", "--secret", SECRET, "--quiet"]
    for port in ports:
        cmd += ["--url", f"ws://127.0.0.1:{port}"]
    for pid in node_pids:
        cmd += ["--server-pid", str(pid)]
    for pid in redis_pids:
        cmd += ["--aux-pid", str(pid)]
    report = loadtest_report(cmd, timeout=1000)
    report["_cmd"] = " ".join(str(Path(c).relative_to(REPO)) if c.startswith(str(REPO)) else c for c in cmd)
    return report


def row(mode: str, name: str, r: dict) -> str:
    c, d, lat, s = r["connects"], r["delivery"], r["latency"], r.get("server") or {}

    def num(v, digits=0, unit=""):
        return "–" if v is None else f"{v:,.{digits}f}{unit}"

    return (
        f"| {mode} | {name} | {c['connected']:,} / {c['attempted']:,} | {num(c['ramp_s'], 1, ' s')} "
        f"| {d['delivered']:,} | {d['lost']} / {d['duplicates']} / {d['misrouted']} "
        f"| {num(lat['p50_us'] / 1000, 1)} / {num(lat['p99_us'] / 1000, 1)} ms "
        f"| {num(s.get('rss_per_connection_bytes'), 0, ' B')} | {num(s.get('cpu_per_delivery_us'), 2, ' µs')} "
        f"| {num(s.get('aux_cpu_per_delivery_us'), 3, ' µs')} | {num(s.get('aux_cpu_per_event_us'), 1, ' µs')} "
        f"| {'yes' if r['clean'] else 'NO'} |"
    )


HEADER = (
    "| Redis | run | connected | connect ramp | delivered | lost / dup / misrouted | latency p50 / p99 "
    "| RSS/socket | node CPU/delivery | Redis CPU/delivery | Redis CPU/event | clean |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--events", type=int, help="events of the targeted run (default: one per socket)")
    parser.add_argument("--modes", default="standalone,cluster")
    parser.add_argument("--scenarios", default="fanout,targeted")
    parser.add_argument("--history", default="off", choices=["off", "on", "both"],
                        help="rooms durable or not; both: each run without, then with history")
    parser.add_argument("--publish", default="api", choices=["api", "redis"],
                        help="api: through node 0's HTTP API; redis: the load tester on Redis itself "
                             "(PUBLISH, or FCALL wsgate_publish with history; one Redis only)")
    parser.add_argument("--json", default=str(REPO / "target" / "scale.json"))
    args = parser.parse_args()
    if args.publish == "redis" and args.modes != "standalone":
        parser.error("--publish redis needs --modes standalone: a plain PUBLISH does not reach cluster-mode nodes")
    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGTERM, cleanup)
    subprocess.run(["cargo", "build", "--release", "-p", "wsgate", "-p", "wsgate-loadtest"], cwd=REPO, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="wsgate-scale-"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    results = []
    for mode in args.modes.split(","):
        if mode == "cluster":
            redis = RedisCluster(3, workdir)
            url, pids, label = redis.url, redis.pids, "3-master cluster"
        else:
            redis = Redis.start(workdir)
            url, pids, label = redis.url, [redis.proc.pid], "one Redis"
        try:
            runs = [(name, durable) for name in args.scenarios.split(",")
                    for durable in {"off": [False], "on": [True], "both": [False, True]}[args.history]]
            for name, durable in runs:
                redis.flush()
                started = time.time()
                report = run_on_fresh_nodes(args.nodes, url, mode, scenario_args(name, args.sockets, args.events),
                                            pids, durable, args.publish)
                name = f"{name} (history)" if durable else name
                results.append({"mode": mode, "label": label, "scenario": name, "report": report})
                print(row(label, name, report), f"({time.time() - started:.0f} s)", flush=True)
                Path(args.json).write_text(json.dumps(results, indent=1))
        finally:
            redis.stop() if isinstance(redis, RedisCluster) else stop(redis.proc)
    print()
    print(HEADER)
    for r in results:
        print(row(r["label"], r["scenario"], r["report"]))
    print()
    for r in results:
        print(r["report"]["_cmd"])


if __name__ == "__main__":
    main()
