"""Benchmark: peak memory of the `python -m streams backup` command itself (not an in-process call), for
stream shapes that stress different parts: many small messages, fewer large ones, and a 1 GiB stream.

    .venv/bin/python bench/backup_rss.py [--big-mib 1024]

Each backup runs as its own process against a local nats-server and moto's S3 server; its peak RSS is
its VmHWM, read from /proc while it runs. The baseline measured in the same run is the same interpreter
importing what the command imports and exiting (`python -m streams backup --help`): what is left above
it is the backup's working memory. Target: every backup under 100 MiB.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib(cmd: list[str], env: dict) -> float:
    """The process's own high-water mark (VmHWM), read until it exits. (wait4's ru_maxrss would not do:
    a child starts with its parent's peak, and exec keeps it.)"""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak_kib = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return peak_kib / 1024


async def fill(url: str, name: str, count: int, size: int) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    batch = 512
    for start in range(0, count, batch):
        await asyncio.gather(*(js.publish(f"{name}.{i % 16}", os.urandom(size))
                               for i in range(start, min(count, start + batch))))
    await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mib", type=int, default=1024)
    args = ap.parse_args()

    from stack.settings import load_settings
    from streams.backup.s3 import s3_client
    from streams.local.server import local_layout, start_server
    from tests.conftest import start_moto

    moto, endpoint = start_moto()
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_REGION")})
    s3_client().create_bucket(Bucket="bench")
    tmp = Path(tempfile.mkdtemp(prefix="backup-rss-"))
    settings = load_settings({"jetstream": {"memoryStore": "256Mi", "fileStore": "20Gi"}})
    server = start_server(settings, local_layout(tmp / "srv"), tmp / "srv")
    shapes = {"small": (200_000, 1024), "large": (160 * 16, 64 * 1024), "big": (args.big_mib * 16, 64 * 1024)}
    try:
        baseline = peak_rss_mib([sys.executable, "-m", "streams", "backup", "--help"], env)
        print(f"baseline (the command's imports, --help): {baseline:.1f} MiB")
        for name, (count, size) in shapes.items():
            asyncio.run(fill(server.client_url, name, count, size))
            s3 = peak_rss_mib([sys.executable, "-m", "streams", "backup", name, "--bucket", "bench", "--server",
                               server.client_url], env)
            folder = peak_rss_mib([sys.executable, "-m", "streams", "backup", name, "--to", str(tmp / "out" / name),
                                   "--server", server.client_url], env)
            print(f"{name:5s} {count:>7d} x {size // 1024:>2d} KiB ({count * size / 2**20:6.0f} MiB): peak RSS to S3 "
                  f"{s3:6.1f} MiB ({s3 / baseline:.2f}x baseline), to a folder {folder:6.1f} MiB "
                  f"({folder / baseline:.2f}x) (target < 100 MiB)")
    finally:
        server.stop()
        moto.terminate()


if __name__ == "__main__":
    main()
