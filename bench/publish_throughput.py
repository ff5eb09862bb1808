"""Benchmark: JetStream publish throughput with the local mode's server (the rendered homelab
config) versus a nats-server started with default settings (`-js`), in the same run; and the time
from the first command to a ready local server with the catalog applied.

    .venv/bin/python bench/publish_throughput.py [--async-msgs 50000] [--sync-msgs 5000]

1 KiB messages to a file-backed stream: async publish with acks (a window of outstanding acks)
and sync publish (one at a time). Targets: rendered config >= 0.9x the default's, and well above
the guide's "thousands of messages per second".
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402

from stack.settings import load_settings  # noqa: E402
from streams.local.server import LocalServer, free_port, local_layout, nats_server_binary, start_server  # noqa: E402

PAYLOAD = b"x" * 1024
WINDOW = 256


async def measure(url: str, async_msgs: int, sync_msgs: int) -> tuple[float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="bench", subjects=["bench.>"], storage="file")
    start = time.perf_counter()
    pending = []
    for _ in range(async_msgs):
        pending.append(asyncio.ensure_future(js.publish("bench.async", PAYLOAD)))
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    async_rate = async_msgs / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(sync_msgs):
        await js.publish("bench.sync", PAYLOAD)
    sync_rate = sync_msgs / (time.perf_counter() - start)
    await nc.close()
    return async_rate, sync_rate


def default_server(workdir: Path) -> LocalServer:
    """nats-server with nothing but JetStream switched on (its own defaults for everything else)."""
    import subprocess as sp

    from render.nats_conf import ConfLayout
    port, http = free_port(), free_port()
    log = workdir / "default.log"
    proc = sp.Popen([nats_server_binary(), "-js", "-sd", str(workdir / "data"), "-a", "127.0.0.1", "-p", str(port),
                     "-m", str(http)], stdout=open(log, "wb"), stderr=sp.STDOUT)
    server = LocalServer(proc, ConfLayout("127.0.0.1", port, http, str(workdir / "data"), ""), workdir, log)
    server.wait_ready()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--async-msgs", type=int, default=50000)
    ap.add_argument("--sync-msgs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    settings = load_settings({})  # the homelab's settings: the rendered config
    results = {"rendered homelab config": [], "nats-server defaults": []}
    for _ in range(args.rounds):
        for name in results:
            with tempfile.TemporaryDirectory() as tmp:
                wd = Path(tmp)
                server = (start_server(settings, local_layout(wd), wd) if name.startswith("rendered")
                          else default_server(wd))
                with server:
                    results[name].append(asyncio.run(measure(server.client_url, args.async_msgs, args.sync_msgs)))
    best = {k: (max(r[0] for r in v), max(r[1] for r in v)) for k, v in results.items()}
    for name, (a, s) in best.items():
        print(f"{name:24s} async+acks {a:9.0f} msg/s   sync {s:7.0f} msg/s   (1 KiB, best of {args.rounds})")
    r, d = best["rendered homelab config"], best["nats-server defaults"]
    print(f"ratio rendered/default: async {r[0] / d[0]:.2f}x, sync {r[1] / d[1]:.2f}x (target >= 0.9x)")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "streams", "dev", "--once", "--port", str(free_port()),
                              "--http-port", str(free_port()), "--data-dir", tmp], cwd=ROOT, capture_output=True,
                             text=True)
        total = time.perf_counter() - start
        assert out.returncode == 0, out.stderr
    print(f"first command to ready local server with the catalog applied (and stopped again): {total:.2f} s "
          "(python -m streams dev --once, fresh data dir)")


if __name__ == "__main__":
    main()
