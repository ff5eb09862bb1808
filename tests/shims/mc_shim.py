"""A stand-in for MinIO's `mc` (RELEASE.2025-08-13T08-35-41Z), for running the backup CronJob's upload
script here: `cp`, `ls`, `rm` (--recursive, --force, --quiet, --incomplete, --older-than), backed by boto3
against the test S3 (moto). As the real mc (minio/mc cmd/config.go parseEnvURLStr), it takes the alias
only from MC_HOST_<alias>=http(s)://KEY:SECRET@host, and `ls` prints what cmd/ls.go contentMessage.String
prints: "[<time>]<size, 7 wide> <name>"; `cat` writes an object to stdout. Every command line it is given is appended to $MC_SHIM_ARGV_LOG.
"""
import os
import re
import sys
from datetime import UTC, datetime, timedelta

import boto3
from botocore.config import Config

HOST_KEYS = re.compile(r"^(https?://)(.*?):(.*)@(.*?)$")   # mc's hostKeys
KNOWN_FLAGS = {"--quiet", "--recursive", "--force", "--incomplete", "--older-than"}


def _client(alias: str):
    env = os.environ.get(f"MC_HOST_{alias}")
    if not env:
        raise SystemExit(f"mc: <ERROR> Unable to find alias `{alias}` (no MC_HOST_{alias})")
    scheme, key, secret, host = HOST_KEYS.match(env).groups()
    return boto3.client("s3", endpoint_url=f"{scheme}{host}", aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def _target(path: str):
    alias, bucket, *rest = path.split("/", 2)
    return _client(alias), bucket, rest[0] if rest else ""


def _ibytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024


def _duration(text: str) -> timedelta:
    m = re.fullmatch(r"(\d+)d", text) or re.fullmatch(r"(\d+)h", text)
    return timedelta(days=int(m.group(1))) if text.endswith("d") else timedelta(hours=int(m.group(1)))


def main(argv: list[str]) -> int:
    log = os.environ.get("MC_SHIM_ARGV_LOG")
    if log:
        with open(log, "a") as f:
            f.write(" ".join(argv) + "\n")
    flags, args, older_than = set(), [], None
    it = iter(argv)
    for a in it:
        if a.startswith("--"):
            if a not in KNOWN_FLAGS:
                print(f"mc shim: unknown flag {a}", file=sys.stderr)
                return 64
            flags.add(a)
            if a == "--older-than":
                older_than = _duration(next(it))
        else:
            args.append(a)
    if args[0] == "cp":
        s3, bucket, key = _target(args[2])
        s3.upload_file(args[1], bucket, key)
        return 0
    if args[0] == "cat":   # mc cat ALIAS/BUCKET/KEY: the object to stdout (minio/mc cmd/cat-main.go)
        s3, bucket, key = _target(args[1])
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            print(f"mc: <ERROR> Unable to read from `{args[1]}`. Object does not exist.", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(body)
        return 0
    if args[0] == "ls":
        s3, bucket, prefix = _target(args[1])
        r = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        entries = [(p["Prefix"][len(prefix):], 0, None) for p in r.get("CommonPrefixes", [])]
        entries += [(o["Key"][len(prefix):], o["Size"], o["LastModified"]) for o in r.get("Contents", [])]
        for name, size, when in sorted(entries):
            t = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            print(f"[{t}]{_ibytes(size):>7} {'STANDARD ' if when else ''}{name}")
        return 0
    if args[0] == "rm":
        s3, bucket, key = _target(args[1])
        if "--incomplete" in flags:  # unfinished multipart uploads only
            now = datetime.now(UTC)
            for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []):
                if older_than is None or now - u["Initiated"] > older_than:
                    s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            return 0
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
