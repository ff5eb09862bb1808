"""Benchmark: backup and restore throughput through this code versus the floors, and peak memory.

    .venv/bin/python bench/backup_throughput.py [--mib 256] [--rounds 3]

Floors, measured in the same run on the same data:
  - snapshot floor: the bare snapshot protocol loop that only acks and discards the bytes;
  - restore floor:  the bare restore loop sending the archive from a local file;
  - S3 floors:      boto3's own upload_file / download_file of the same archive (moto on loopback).
Each measurement runs in a child process (peak RSS from its VmHWM). Rounds alternate the measurements,
and the ratios are medians of the per-round ratios (this kind of machine varies by 2x between runs).
Targets (issue 10): backup within 1.3x of the slower of its two floors (snapshot, S3 upload: the two run
at once); restore within 1.3x of the bare restore loop; peak RSS under 100 MiB.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(mode: str, args) -> None:
    import nats

    from streams.backup.s3 import BackupStore, s3_client
    from streams.backup.service import backup_stream, restore_backup
    from streams.backup.snapshot import SnapshotMeta, restore, snapshot

    async def run():
        nc = await nats.connect(args.server, max_reconnect_attempts=0)
        try:
            if mode == "snapshot-floor":
                meta = await snapshot(nc, args.stream, lambda chunk: None)
                Path(args.meta).write_text(meta.to_json())
            elif mode == "snapshot-to-file":
                with open(args.file, "wb") as out:
                    meta = await snapshot(nc, args.stream, out.write)
                Path(args.meta).write_text(meta.to_json())
            elif mode == "restore-floor":
                meta = SnapshotMeta.from_json(Path(args.meta).read_text())

                async def chunks():
                    with open(args.file, "rb") as f:
                        while data := f.read(1024 * 1024):
                            yield data
                await restore(nc, meta, chunks(), name=args.target, subjects=[f"{args.target}.>"])
            elif mode == "backup":
                await backup_stream(nc, BackupStore(s3_client(), args.bucket, "bench"), args.stream)
            elif mode == "restore":
                store = BackupStore(s3_client(), args.bucket, "bench")
                await restore_backup(nc, store, store.find(args.stream), name=args.target,
                                     subjects=[f"{args.target}.>"])
        finally:
            await nc.close()

    start = time.perf_counter()
    if mode in ("s3-upload", "s3-download"):
        # boto3 as it comes (its default checksums and transfer settings), only pointed at the S3 server
        import boto3
        from botocore.config import Config
        plain = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                             config=Config(s3={"addressing_style": "path"}))
    if mode == "s3-upload":
        plain.upload_file(args.file, args.bucket, "floor/stream.tar.s2")
    elif mode == "s3-download":
        plain.download_file(args.bucket, "floor/stream.tar.s2", args.file + ".down")
    else:
        asyncio.run(run())
    seconds = time.perf_counter() - start
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))  # this process's own peak (ru_maxrss starts at the parent's)
    print(json.dumps({"seconds": seconds, "maxrss_mib": hwm / 1024}))


def run_child(mode: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise SystemExit(f"{mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def delete_stream(url: str, name: str) -> None:
    import nats

    async def go():
        nc = await nats.connect(url)
        await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=30)
        await nc.close()
    asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child")
    for opt in ("server", "stream", "bucket", "file", "meta", "target"):
        ap.add_argument(f"--{opt}")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args)

    import nats

    from stack.settings import load_settings
    from streams.backup.s3 import s3_client
    from streams.local.server import local_layout, start_server
    from tests.conftest import start_moto

    moto, endpoint = start_moto()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1")
    s3_client().create_bucket(Bucket="bench")
    tmp = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    settings = load_settings({"jetstream": {"memoryStore": "256Mi", "fileStore": "20Gi"}})
    server = start_server(settings, local_layout(tmp / "srv"), tmp / "srv")
    try:
        async def fill():
            nc = await nats.connect(server.client_url)
            js = nc.jetstream()
            await js.add_stream(name="bench", subjects=["bench.>"])
            payload_size = 64 * 1024
            for i in range(args.mib * 1024 * 1024 // payload_size):
                await js.publish(f"bench.{i % 16}", os.urandom(payload_size))
            info = await js.stream_info("bench")
            await nc.close()
            return info.state.bytes
        stream_bytes = asyncio.run(fill())
        common = {"server": server.client_url, "stream": "bench", "bucket": "bench",
                  "file": str(tmp / "archive.tar.s2"), "meta": str(tmp / "backup.json")}
        rounds: list[dict] = []
        for r in range(args.rounds):
            results = {"snapshot floor": run_child("snapshot-floor", **common),
                       "snapshot to file": run_child("snapshot-to-file", **common)}
            archive = Path(common["file"]).stat().st_size
            results["s3 upload floor"] = run_child("s3-upload", **common)
            results["s3 download floor"] = run_child("s3-download", **common)
            results["backup (this code)"] = run_child("backup", **common)
            results["restore floor"] = run_child("restore-floor", **common, target=f"floorcopy{r}")
            delete_stream(server.client_url, f"floorcopy{r}")
            results["restore (this code)"] = run_child("restore", **common, target=f"restored{r}")
            delete_stream(server.client_url, f"restored{r}")
            rounds.append(results)
    finally:
        server.stop()
        moto.terminate()
    mib = archive / 2**20
    print(f"stream: {stream_bytes / 2**20:.0f} MiB of messages, archive {mib:.0f} MiB, {args.rounds} rounds")
    for name in rounds[0]:
        secs = sorted(r[name]["seconds"] for r in rounds)
        rss = max(r[name]["maxrss_mib"] for r in rounds)
        med = secs[len(secs) // 2]
        print(f"{name:22s} median {med:7.2f} s  {mib / med:7.1f} MiB/s  peak RSS {rss:6.1f} MiB")

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]
    s = [{k: v["seconds"] for k, v in r.items()} for r in rounds]
    print(f"backup  / max(snapshot floor, s3 upload floor): "
          f"{median(x['backup (this code)'] / max(x['snapshot floor'], x['s3 upload floor']) for x in s):.2f}x "
          "(target <= 1.3x)")
    print(f"backup  / (snapshot floor + s3 upload floor):   "
          f"{median(x['backup (this code)'] / (x['snapshot floor'] + x['s3 upload floor']) for x in s):.2f}x")
    print(f"restore / restore floor:                        "
          f"{median(x['restore (this code)'] / x['restore floor'] for x in s):.2f}x (target <= 1.3x)")
    print(f"peak RSS: backup {max(r['backup (this code)']['maxrss_mib'] for r in rounds):.1f} MiB, restore "
          f"{max(r['restore (this code)']['maxrss_mib'] for r in rounds):.1f} MiB (target < 100 MiB; "
          "bench/backup_rss.py measures the command itself)")


if __name__ == "__main__":
    main()
