"""Benchmark: apply 200 streams and 400 consumers through the dynamic provider against a local
nats-server, versus the floor: the same JetStream API creates sent on one open connection.

    .venv/bin/python bench/provider_apply.py [--streams 200] [--consumers-per-stream 2]

Prints both times and the ratio (target: provider at most 1.3x the floor). Each side gets a fresh
server with the homelab's rendered config, in a temporary folder.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402

from stack.catalog import load_catalog  # noqa: E402
from stack.settings import load_settings  # noqa: E402
from streams.jetstream import close_all_clients  # noqa: E402
from streams.local.apply import apply_catalog  # noqa: E402
from streams.local.server import local_layout, start_server  # noqa: E402
from streams.provider import _mark  # noqa: E402


def catalog(n_streams: int, per_stream: int):
    return load_catalog({
        f"bench-{i}": {"subjects": [f"bench.{i}.>"], "storage": "file", "maxAge": "1d", "maxBytes": "16MB",
                       "consumers": {f"c{j}": {"filterSubject": f"bench.{i}.{j}.>", "maxDeliver": 3}
                                     for j in range(per_stream)}}
        for i in range(n_streams)})


async def floor(url: str, specs) -> None:
    """The requests the provider has to send, with the same bodies (marked, pedantic), on one connection."""
    nc = await nats.connect(url)
    for spec in specs:
        body = {**_mark(spec.config), "pedantic": True}
        r = await nc.request(f"$JS.API.STREAM.CREATE.{spec.name}", json.dumps(body).encode(), timeout=10)
        assert b'"error"' not in r.data, r.data
        for c in spec.consumers:
            body = {"stream_name": spec.name, "config": _mark(c.config), "action": "create", "pedantic": True}
            r = await nc.request(f"$JS.API.CONSUMER.CREATE.{spec.name}.{c.name}", json.dumps(body).encode(),
                                 timeout=10)
            assert b'"error"' not in r.data, r.data
    await nc.close()


# The server's file store on tmpfs where there is one: disk flush times vary by 2x between runs on this
# kind of machine and would drown the provider's own cost, which is what this measures.
TMP_ROOT = "/dev/shm" if Path("/dev/shm").is_dir() else None


def timed_on_fresh_server(fn) -> float:
    settings = load_settings({})
    with tempfile.TemporaryDirectory(dir=TMP_ROOT) as tmp:
        with start_server(settings, local_layout(Path(tmp)), Path(tmp)) as server:
            start = time.perf_counter()
            fn(server.client_url)
            return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--consumers-per-stream", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    specs = catalog(args.streams, args.consumers_per_stream)
    n_consumers = sum(len(s.consumers) for s in specs)
    floors, providers = [], []
    for _ in range(args.rounds):
        floors.append(timed_on_fresh_server(lambda url: asyncio.run(floor(url, specs))))

        def through_provider(url):
            apply_catalog(specs, url)
            close_all_clients()
        providers.append(timed_on_fresh_server(through_provider))
    f, p = min(floors), min(providers)
    ratios = sorted(pv / fl for fl, pv in zip(floors, providers, strict=True))
    print(f"{args.streams} streams + {n_consumers} consumers, best of {args.rounds} (data on {TMP_ROOT or 'disk'})")
    print(f"floor (raw API on one connection): {f:.3f} s")
    print(f"provider (check + create/adopt):   {p:.3f} s")
    print(f"ratio provider/floor: {p / f:.2f}x best/best, {ratios[len(ratios) // 2]:.2f}x median of rounds "
          "(target <= 1.3x)")


if __name__ == "__main__":
    main()
