"""A stand-in for the `nats` CLI inside nats-box, for testing the scripts that run there.

Implements what those scripts call, as natscli v0.4.0 does it:
- `nats [--inbox-prefix PREFIX] stream backup STREAM DIR`, with this project's snapshot code, writing the CLI's
  layout (DIR/stream.tar.s2, then DIR/backup.json);
- `nats stream info STREAM` (exit 1 when it does not exist);
- `nats stream add STREAM --config FILE`: the JSON config from the file (a StreamInfo's `config` too), refused when
  its name differs from STREAM (cli/stream_command.go loadConfigFile), created with STREAM.CREATE (jsm.go
  NewStreamFromDefault);
- `nats consumer add STREAM CONSUMER --config FILE`: the durable name from the argument, the reserved `_nats.`
  metadata dropped (cli/consumer_command.go prepareConfig, iu.RemoveReservedMetadata), created with
  CONSUMER.CREATE.
Server from NATS_URL, login from NATS_USER and NATS_PASSWORD, as the CLI reads them (nats/main.go); every call
is appended to $NATS_SHIM_ARGV_LOG when set.
"""
import asyncio
import os
import sys
from pathlib import Path

import nats

from streams.backup.snapshot import snapshot


async def backup(stream: str, folder: Path, inbox_prefix: str | None) -> None:
    login = _login()
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


async def api(subject: str, body: dict | None = None) -> dict:
    import json
    nc = await nats.connect(os.environ["NATS_URL"], max_reconnect_attempts=0, **_login())
    try:
        msg = await nc.request(subject, json.dumps(body).encode() if body is not None else b"", timeout=5)
        data = json.loads(msg.data)
    finally:
        await nc.close()
    if "error" in data:
        raise RuntimeError(data["error"].get("description"))
    return data


def _login() -> dict:
    return {"user": os.environ["NATS_USER"], "password": os.environ.get("NATS_PASSWORD", "")} \
        if os.environ.get("NATS_USER") else {}


def _config_file(path: str) -> dict:
    import json
    data = json.loads(Path(path).read_text())
    return data["config"] if "config" in data else data


async def run(argv: list[str], inbox_prefix: str | None) -> None:
    if argv[:2] == ["stream", "backup"] and len(argv) == 4:
        await backup(argv[2], Path(argv[3]), inbox_prefix)
    elif argv[:2] == ["stream", "info"] and len(argv) == 3:
        await api(f"$JS.API.STREAM.INFO.{argv[2]}")
    elif argv[:2] == ["stream", "add"] and len(argv) == 5 and argv[3] == "--config":
        config = _config_file(argv[4])
        if config.get("name") != argv[2]:
            raise RuntimeError(f"stream names do not match {config.get('name')} != {argv[2]}")
        await api(f"$JS.API.STREAM.CREATE.{argv[2]}", config)
    elif argv[:2] == ["consumer", "add"] and len(argv) == 6 and argv[4] == "--config":
        config = _config_file(argv[5])
        config["durable_name"] = argv[3]
        config["metadata"] = {k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats.")}
        await api(f"$JS.API.CONSUMER.CREATE.{argv[2]}.{argv[3]}", {"stream_name": argv[2], "config": config})
    else:
        raise NotImplementedError(" ".join(argv))


def main(argv: list[str]) -> int:
    if os.environ.get("NATS_SHIM_ARGV_LOG"):
        with open(os.environ["NATS_SHIM_ARGV_LOG"], "a") as log:
            log.write(" ".join(argv) + "\n")
    inbox_prefix = None
    if argv[:1] == ["--inbox-prefix"]:
        inbox_prefix, argv = argv[1], argv[2:]
    try:
        asyncio.run(run(argv, inbox_prefix))
    except NotImplementedError as exc:
        print(f"nats shim: unsupported: {exc}", file=sys.stderr)
        return 64
    except Exception as exc:  # the real CLI prints the error and exits 1
        print(f"nats: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
