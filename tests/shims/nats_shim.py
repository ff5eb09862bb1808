"""A stand-in for the `nats` CLI inside nats-box, for testing the backup CronJob's script here.

Implements only `nats stream backup STREAM DIR`, with this project's snapshot code, writing the
CLI's layout (DIR/stream.tar.s2, then DIR/backup.json). Server from NATS_URL, as the CLI reads it.
"""
import asyncio
import os
import sys
from pathlib import Path

import nats

from streams.backup.snapshot import snapshot


async def backup(stream: str, folder: Path) -> None:
    nc = await nats.connect(os.environ["NATS_URL"], max_reconnect_attempts=0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stream.tar.s2", "wb") as out:
            meta = await snapshot(nc, stream, out.write)
        (folder / "backup.json").write_text(meta.to_json())
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    if argv[:2] != ["stream", "backup"] or len(argv) != 4:
        print(f"nats shim: unsupported: {' '.join(argv)}", file=sys.stderr)
        return 64
    try:
        asyncio.run(backup(argv[2], Path(argv[3])))
    except Exception as exc:  # the real CLI prints the error and exits 1
        print(f"nats: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
