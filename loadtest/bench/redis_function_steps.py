#!/usr/bin/env python3
"""What each step of a durable publish costs inside Redis.

Loads a throwaway Function library whose functions do the first 0, 1, 2, ...
steps of wsgate's append (HGET the epoch, HINCRBY the offset, EXPIRE the
stream, XADD, PUBLISH), and runs each, and plain PUBLISH, XADD and HINCRBY,
through redis-benchmark on a private redis-server. Redis's own
`INFO commandstats` (usec_per_call: time inside the command, without the
network) gives each one's cost, so the difference between two rows is what
that step adds. The median of the rounds is printed.

    python3 loadtest/bench/redis_function_steps.py [--events 200000] [--rounds 3]

Needs redis-server, redis-cli and redis-benchmark (Redis 7+).
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import time

PAYLOAD = '{"event":"order:updated","data":{"id":7,"status":"shipped","items":[1,2,3],"note":"left at the door"}}'

# Each function does every step up to its own, as the append does them.
STEPS = [
    ("FCALL that returns 1", ""),
    ("+ HGET epoch", "local epoch = redis.call('HGET', '{' .. key .. '}:m', 'e') or 'x'"),
    ("+ HINCRBY offset", "local id = tostring(redis.call('HINCRBY', '{' .. key .. '}:m', 'o', 1))"),
    ("+ EXPIRE stream", "redis.call('EXPIRE', '{' .. key .. '}:h', '600')"),
    ("+ XADD MAXLEN ~", "redis.call('XADD', '{' .. key .. '}:h', 'MAXLEN', '~', '1000', id, 'p', payload)"),
    ("+ PUBLISH", "redis.call('PUBLISH', key, '__d:' .. id .. ':' .. epoch .. '__' .. payload)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def library() -> str:
    source, body = "#!lua name=wsgate_steps\n", ""
    for i, (_, code) in enumerate(STEPS):
        body += f"  {code}\n"
        source += (
            f"redis.register_function('step{i}', function(keys, args)\n"
            f"  local key, payload = keys[1], args[1]\n{body}  return 1\nend)\n"
        )
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            run(port, args.events, args.rounds)
        finally:
            redis.kill()
            redis.wait()


def run(port: int, events: int, rounds: int) -> None:
    def cli(*words: str, stdin: str | None = None) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *words], input=stdin, capture_output=True, text=True).stdout

    deadline = time.monotonic() + 10
    while cli("PING").strip() != "PONG":
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    loaded = cli("-x", "FUNCTION", "LOAD", "REPLACE", stdin=library())
    if "wsgate_steps" not in loaded:
        raise SystemExit(f"FUNCTION LOAD: {loaded}")

    def in_command(*command: str) -> float:
        cli("CONFIG", "RESETSTAT")
        subprocess.run(
            ["redis-benchmark", "-p", str(port), "-n", str(events), "-c", "4", "-P", "16", "-q", *command],
            stdout=subprocess.DEVNULL,
            check=True,
        )
        stat = f"cmdstat_{command[0].lower()}:"
        line = next(l for l in cli("INFO", "commandstats").splitlines() if l.startswith(stat))
        return float(line.split("usec_per_call=")[1].split(",")[0])

    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        for i, (name, _) in enumerate(STEPS):
            # One room per function: each keeps its own increasing offsets.
            rows.setdefault(name, []).append(in_command("FCALL", f"step{i}", "1", f"gw:org:step{i}", PAYLOAD))
        rows.setdefault("plain PUBLISH", []).append(in_command("PUBLISH", "gw:org:plain", PAYLOAD))
        rows.setdefault("plain XADD MAXLEN ~", []).append(
            in_command("XADD", "plain:h", "MAXLEN", "~", "1000", "*", "p", PAYLOAD)
        )
        rows.setdefault("plain HINCRBY", []).append(in_command("HINCRBY", "plain:m", "o", "1"))
    print(f"| step (no subscriber; {events:,} calls, median of {rounds}) | µs inside Redis per call | rounds |")
    print("|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
