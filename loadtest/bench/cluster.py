"""A local Redis Cluster of 1 to N masters (no replicas) for the scale-out benches.

`redis-cli --cluster create` needs at least three masters; one and two are
joined by hand (CLUSTER ADDSLOTSRANGE + CLUSTER MEET), so the same bench can
compare 1, 2 and 3 shards. Every master gets a free port and a free cluster
bus port (the default port + 10000 may fall in the ephemeral range).
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from compare import free_port, start, stop

SLOTS = 16384


def command(port: int, *args: str) -> str:
    """One command over RESP; the reply's raw text (enough for INFO and OK)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload.encode())
        data = b""
        s.settimeout(0.5)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                if data:
                    break
                continue
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")


def wait_pong(port: int) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if "PONG" in command(port, "PING"):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def redis_pid(port: int) -> int:
    info = command(port, "INFO", "server")
    for line in info.splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"no process_id in INFO of {port}")


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_us(pid: int) -> int:
    """User + system CPU of a process, µs (from /proc, in clock ticks: 10 ms on Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000 // CLOCK_TICKS_PER_S


class RedisCluster:
    def __init__(self, masters: int, workdir: Path) -> None:
        self.ports = [free_port() for _ in range(masters)]
        self.bus_ports = [free_port() for _ in range(masters)]
        self.procs = []
        for i, port in enumerate(self.ports):
            d = workdir / f"shard{i}-{port}"
            d.mkdir(parents=True)
            self.procs.append(
                start(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(d), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(self.bus_ports[i]), "--cluster-node-timeout", "5000",
                     # A master that was never met learns no address of its
                     # own and announces an empty one, which clients cannot use.
                     "--cluster-announce-ip", "127.0.0.1"],
                    {},
                )
            )
        for port in self.ports:
            wait_pong(port)
        if masters >= 3:
            subprocess.run(
                ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        else:
            share = SLOTS // masters
            for i, port in enumerate(self.ports):
                last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
                command(port, "CLUSTER", "ADDSLOTSRANGE", str(i * share), str(last))
            for port in self.ports[1:]:
                command(port, "CLUSTER", "MEET", "127.0.0.1", str(self.ports[0]), str(self.bus_ports[0]))
        self.wait_ok()
        self.pids = [redis_pid(p) for p in self.ports]

    def wait_ok(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline:
            infos = [command(p, "CLUSTER", "INFO") for p in self.ports]
            if all("cluster_state:ok" in i and f"cluster_known_nodes:{len(self.ports)}" in i for i in infos):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return ",".join(f"redis://127.0.0.1:{p}" for p in self.ports)

    def flush(self) -> None:
        for port in self.ports:
            command(port, "FLUSHALL")

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)
