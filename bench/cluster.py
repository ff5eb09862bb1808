"""Benchmark: a three-node JetStream cluster on this machine (the configs make dev --servers 3 renders), against one
node, in the same run.

    .venv/bin/python bench/cluster.py [--messages 3000]

Prints:
- publish throughput with acks, R3 against R1 on the same cluster (ratio R3/R1);
- the time from a node's restart (after kill -9) to the cluster healthy again (plain /healthz on every node);
- the longest write pause while a stream leader is killed (kill -9), under a publisher retrying with Nats-Msg-Id.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402
import nats.errors  # noqa: E402

from stack.settings import load_settings  # noqa: E402
from streams.local.server import local_cluster_layouts, start_cluster, start_server, wait_cluster_ready  # noqa: E402


async def publish_rate(urls: list[str], stream: str, replicas: int, n: int) -> float:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=replicas)
        start = time.perf_counter()
        for i in range(n):
            await js.publish(f"{stream}.x", b"x" * 128, headers={"Nats-Msg-Id": f"{stream}-{i}"})
        return n / (time.perf_counter() - start)
    finally:
        await nc.close()


async def write_pause_through_leader_kill(urls: list[str], kill, n: int) -> float:
    async def quiet(exc: Exception) -> None:   # the killed leader's connection drops: expected, reconnects
        return None
    nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1, error_cb=quiet)
    js = nc.jetstream(timeout=2)
    await js.add_stream(name="PAUSE", subjects=["pause.>"], num_replicas=3)
    leader = (await js.stream_info("PAUSE")).cluster.leader
    longest, last_ack = 0.0, time.perf_counter()
    try:
        for i in range(n):
            while True:
                try:
                    await js.publish("pause.x", b"x", headers={"Nats-Msg-Id": f"p-{i}"})
                    break
                except (TimeoutError, nats.errors.Error):
                    await asyncio.sleep(0.05)
            now = time.perf_counter()
            longest, last_ack = max(longest, now - last_ack), now
            if i == n // 3:
                await asyncio.to_thread(kill, leader)
                last_ack = time.perf_counter()
    finally:
        await nc.close()
    return longest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    args = ap.parse_args()
    settings = load_settings({})
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        layouts = local_cluster_layouts(wd, 3)
        servers = start_cluster(settings, layouts, wd)
        urls = [s.client_url for s in servers]
        try:
            r1 = asyncio.run(publish_rate(urls, "R1", 1, args.messages))
            r3 = asyncio.run(publish_rate(urls, "R3", 3, args.messages))
            print(f"publish with acks: R1 {r1:,.0f} msg/s, R3 {r3:,.0f} msg/s, R3/R1 {r3 / r1:.2f}")

            servers[2].kill()
            start = time.perf_counter()
            servers[2] = start_server(settings, layouts[2], wd / "n2", standalone=False)
            wait_cluster_ready(servers)
            print(f"node restart (after kill -9) to healthy cluster: {time.perf_counter() - start:.2f} s")

            names = [layout.server_name for layout in layouts]

            def kill(leader: str) -> None:
                servers[names.index(leader)].kill()
            pause = asyncio.run(write_pause_through_leader_kill(urls, kill, args.messages // 3))
            print(f"longest write pause while the stream leader is killed: {pause:.2f} s")
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
