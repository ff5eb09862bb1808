"""A stand-in for MinIO's `mc`, for testing the backup CronJob's script here: `alias set`, `cp`,
`ls` and `rm` (with --recursive/--force/--quiet), backed by boto3 against the test S3 (moto)."""
import json
import os
import sys
from datetime import timezone
from pathlib import Path

import boto3
from botocore.config import Config


def _config_file() -> Path:
    return Path(os.environ.get("MC_CONFIG_DIR") or Path(os.environ["HOME"]) / ".mc") / "shim-aliases.json"


def _client(alias: str):
    aliases = json.loads(_config_file().read_text())
    a = aliases[alias]
    return boto3.client("s3", endpoint_url=a["url"], aws_access_key_id=a["key"], aws_secret_access_key=a["secret"],
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def _target(path: str):
    alias, bucket, *rest = path.split("/", 2)
    return _client(alias), bucket, rest[0] if rest else ""


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--") and a not in ("S3v4", "on")]
    if args[:2] == ["alias", "set"]:
        _, _, name, url, key, secret = args
        f = _config_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        aliases = json.loads(f.read_text()) if f.exists() else {}
        aliases[name] = {"url": url, "key": key, "secret": secret}
        f.write_text(json.dumps(aliases))
        print(f"Added `{name}` successfully.")
        return 0
    if args[0] == "cp":
        s3, bucket, key = _target(args[2])
        s3.upload_file(args[1], bucket, key)
        return 0
    if args[0] == "ls":
        s3, bucket, prefix = _target(args[1])
        r = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        for p in r.get("CommonPrefixes", []):
            print(f"[2026-01-01 00:00:00 UTC]     0B {p['Prefix'][len(prefix):]}")
        for o in r.get("Contents", []):
            t = o["LastModified"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            print(f"[{t}] {o['Size']}B {o['Key'][len(prefix):]}")
        return 0
    if args[0] == "rm":
        s3, bucket, key = _target(args[1])
        if "--recursive" in flags:
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                    for o in page.get("Contents", [])]
            for k in keys:
                s3.delete_object(Bucket=bucket, Key=k)
        else:
            s3.delete_object(Bucket=bucket, Key=key)
        return 0
    print(f"mc shim: unsupported: {' '.join(argv)}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
