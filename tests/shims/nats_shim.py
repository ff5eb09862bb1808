"""A stand-in for the `nats` CLI inside nats-box, for testing the backup CronJob's script here.

Implements only `nats [--inbox-prefix PREFIX] stream backup STREAM DIR`, with this project's snapshot code,
writing the CLI's layout (DIR/stream.tar.s2, then DIR/backup.json). Server from NATS_URL, login from NATS_USER
and NATS_PASSWORD, as the CLI reads them (natscli v0.4.0 nats/main.go); --inbox-prefix is the CLI's flag.
"""
import asyncio
import os
import sys
from pathlib import Path

import nats

from streams.backup.snapshot import snapshot


async def backup(stream: str, folder: Path, inbox_prefix: str | None) -> None:
    login = {"user": os.environ["NATS_USER"], "password": os.environ.get("NATS_PASSWORD", "")} \
        if os.environ.get("NATS_USER") else {}
    if inbox_prefix:
        login["inbox_prefix"] = inbox_prefix
    nc = await nats.connect(os.environ["NATS_URL"], max_reconnect_attempts=0, **login)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stream.tar.s2", "wb") as out:
            meta = await snapshot(nc, stream, out.write)
        (folder / "backup.json").write_text(meta.to_json())
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    inbox_prefix = None
    if argv[:1] == ["--inbox-prefix"]:
        inbox_prefix, argv = argv[1], argv[2:]
    if argv[:2] != ["stream", "backup"] or len(argv) != 4:
        print(f"nats shim: unsupported: {' '.join(argv)}", file=sys.stderr)
        return 64
    try:
        asyncio.run(backup(argv[2], Path(argv[3]), inbox_prefix))
    except Exception as exc:  # the real CLI prints the error and exits 1
        print(f"nats: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
