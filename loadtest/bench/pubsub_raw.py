"""Classic and sharded pub/sub driven straight at a Redis Cluster, pipelined.

No gateway in the loop: subscribers are plain connections that stand for
gateway nodes (each holding half of the rooms), publishers send 16 commands
per round trip to the shard that owns each channel. What remains is Redis's
own pub/sub work, without one syscall per command dominating it:

- classic: subscriber i on master i (as a standalone-mode node connects to
  one server), `PUBLISH` to the channel's owner, which the cluster bus then
  broadcasts to every other master;
- sharded: every subscriber has a connection per shard and `SSUBSCRIBE`s each
  channel on its owner; `SPUBLISH` stays on that shard.
"""
from __future__ import annotations

import socket
import threading
import time

from cluster import command

PIPELINE = 16


def crc16(data: bytes) -> int:
    """CRC16/XMODEM, the hash of Redis Cluster's key slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key.encode()) % 16384


def slot_owners(ports: list[int]) -> list[int]:
    """Slot -> port of the master that owns it, from CLUSTER NODES."""
    owners = [0] * 16384
    for line in command(ports[0], "CLUSTER", "NODES").splitlines():
        parts = line.split()
        if len(parts) < 9 or "master" not in parts[2]:
            continue
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        for spec in parts[8:]:
            low, _, high = spec.partition("-")
            for s in range(int(low), int(high or low) + 1):
                owners[s] = port
    return owners


def encode(*args: str) -> bytes:
    return ("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode()


class Subscriber:
    """One connection subscribed to some channels, read and discarded in a thread."""

    def __init__(self, port: int, verb: str, channels: list[str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.received = 0
        # One channel per command: SSUBSCRIBE's channels must share a slot.
        self.sock.sendall(b"".join(encode(verb, c) for c in channels))
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        marker = b"message\r\n"  # also ends "smessage"
        tail = b""
        try:
            while chunk := self.sock.recv(1 << 20):
                # A marker split across reads is counted once: the kept tail
                # is one byte shorter than the marker.
                self.received += (tail + chunk).count(marker)
                tail = (tail + chunk)[-(len(marker) - 1) :]
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def run(ports: list[int], rooms: int, events: int, sharded: bool, rate: int, nodes: int = 2,
        every_room: bool = False) -> dict:
    """Subscribe `nodes` 'nodes' to a share of `rooms` each (or, with
    `every_room`, each to all of them, as nodes serving the same rooms), publish
    `events`; returns what arrived."""
    owners = slot_owners(ports)
    channels = [f"gw:user:lt{i}" for i in range(rooms)]
    owner = {c: owners[key_slot(c)] for c in channels}
    subs: list[Subscriber] = []
    for node in range(nodes):
        mine = channels if every_room else channels[node::nodes]
        if sharded:
            for port in ports:
                owned = [c for c in mine if owner[c] == port]
                if owned:
                    subs.append(Subscriber(port, "SSUBSCRIBE", owned))
        else:
            subs.append(Subscriber(ports[node % len(ports)], "SUBSCRIBE", mine))
    time.sleep(1)  # the subscriptions are in place before the first event
    verb = "SPUBLISH" if sharded else "PUBLISH"
    payload = '{"event":"bench","data":{"n":0}}'
    conns = {port: socket.create_connection(("127.0.0.1", port)) for port in ports}
    batches: dict[int, list[bytes]] = {port: [] for port in ports}
    interval = PIPELINE / rate
    started = time.time()
    for n in range(events):
        channel = channels[n % rooms]
        port = owner[channel]
        batches[port].append(encode(verb, channel, payload))
        if len(batches[port]) == PIPELINE:
            flush(conns[port], batches[port])
            time.sleep(max(0.0, started + (n + 1) / rate - time.time() - interval / 2))
    for port, batch in batches.items():
        if batch:
            flush(conns[port], batch)
    expected = events * nodes if every_room else events
    deadline = time.time() + 20
    while sum(s.received for s in subs) < expected and time.time() < deadline:
        time.sleep(0.05)
    received = sum(s.received for s in subs)
    for s in subs:
        s.close()
    for c in conns.values():
        c.close()
    return {"events": events, "expected": expected, "received": received, "seconds": time.time() - started}


def flush(conn: socket.socket, batch: list[bytes]) -> None:
    """Send a batch and read one integer reply per command."""
    conn.sendall(b"".join(batch))
    want, got, buf = len(batch), 0, b""
    while got < want:
        buf += conn.recv(1 << 16)
        got = buf.count(b"\r\n")
    batch.clear()
