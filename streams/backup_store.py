"""Backups in S3-compatible storage (the homelab's MinIO), in the `nats stream backup` layout:

    s3://<bucket>/<prefix>/<stream>/<UTC timestamp>/stream.tar.s2   (uploaded first, multipart)
    s3://<bucket>/<prefix>/<stream>/<UTC timestamp>/backup.json     (written last: marks it complete)

A folder without backup.json is an incomplete backup: list, restore and prune ignore it.
Bytes are streamed: a backup is never held whole in memory.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import AsyncIterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from streams.snapshot import SnapshotMeta

DEFAULT_ENDPOINT = "http://10.0.0.241"   # the homelab's MinIO; override with AWS_ENDPOINT_URL or --endpoint
PART_SIZE = 5 * 1024 * 1024      # S3's minimum part size: the least memory per part in flight
PARTS_IN_FLIGHT = 3
READ_SIZE = 1024 * 1024
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
META_NAME = "backup.json"
DATA_NAME = "stream.tar.s2"


class StoreError(RuntimeError):
    """S3 refused or could not be reached; the message says what to check (never the credentials)."""


def s3_client(endpoint: str | None = None, region: str | None = None, access_key: str | None = None,
              secret_key: str | None = None):
    """A boto3 S3 client for MinIO: path-style addressing, the standard AWS variables as defaults."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT,
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=60),
    )


def _explain(exc: Exception, bucket: str) -> StoreError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return StoreError(f"bucket {bucket!r} does not exist; create it (mc mb) or pass --bucket")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return StoreError(f"S3 refused the credentials for bucket {bucket!r} ({code}); check "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return StoreError(f"S3 error on bucket {bucket!r}: {code}")
    if isinstance(exc, EndpointConnectionError):
        return StoreError(f"S3 endpoint unreachable ({exc.kwargs.get('endpoint_url', 'endpoint')}); check "
                          "AWS_ENDPOINT_URL or --endpoint")
    return StoreError(f"S3 failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, order=True)
class BackupRef:
    stream: str
    timestamp: str
    size: int = 0

    @property
    def taken_at(self) -> datetime:
        return datetime.strptime(self.timestamp, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)


def new_timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime(TIMESTAMP_FORMAT)


class BackupStore:
    def __init__(self, s3, bucket: str, prefix: str = "nats"):
        self.s3, self.bucket, self.prefix = s3, bucket, prefix.strip("/")

    def folder(self, stream: str, timestamp: str) -> str:
        return "/".join(p for p in (self.prefix, stream, timestamp) if p) + "/"

    def url(self, ref: BackupRef) -> str:
        return f"s3://{self.bucket}/{self.folder(ref.stream, ref.timestamp)}"

    def check_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise StoreError(f"bucket {self.bucket!r} does not exist; create it (mc mb) or pass --bucket") from None
            raise _explain(exc, self.bucket) from None

    # ------------------------------------------------------------ writing
    def writer(self, stream: str, timestamp: str) -> "BackupWriter":
        return BackupWriter(self, stream, timestamp)

    # ------------------------------------------------------------ reading
    def list(self, stream: str | None = None) -> list[BackupRef]:
        """Complete backups (those with backup.json), oldest first."""
        base = "/".join(p for p in (self.prefix, stream) if p) + "/"
        sizes: dict[tuple[str, str], int] = {}
        complete: set[tuple[str, str]] = set()
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(self.prefix) + 1 if self.prefix else 0:].split("/")
                    if len(parts) != 3:
                        continue
                    key = (parts[0], parts[1])
                    if parts[2] == META_NAME:
                        complete.add(key)
                    elif parts[2] == DATA_NAME:
                        sizes[key] = obj["Size"]
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        return sorted(BackupRef(s, t, sizes.get((s, t), 0)) for s, t in complete if (s, t) in sizes)

    def find(self, stream: str, at: str | None = None) -> BackupRef:
        backups = self.list(stream)
        if not backups:
            raise StoreError(f"no complete backup of stream {stream!r} in s3://{self.bucket}/{self.prefix}")
        if at is None:
            return backups[-1]
        for ref in backups:
            if ref.timestamp == at:
                return ref
        raise StoreError(f"no complete backup of {stream!r} at {at}; there are: "
                         f"{', '.join(r.timestamp for r in backups)}")

    def read_meta(self, ref: BackupRef) -> SnapshotMeta:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.folder(ref.stream, ref.timestamp) + META_NAME)
            return SnapshotMeta.from_json(body["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None

    async def chunks(self, ref: BackupRef) -> AsyncIterator[bytes]:
        """The archive's bytes, streamed in 1 MiB reads (read ahead by one in a worker thread)."""
        loop = asyncio.get_running_loop()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.folder(ref.stream, ref.timestamp) + DATA_NAME)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = loop.run_in_executor(pool, body.read, READ_SIZE)
            while True:
                data = await pending
                if not data:
                    return
                pending = loop.run_in_executor(pool, body.read, READ_SIZE)
                yield data

    def delete(self, ref: BackupRef) -> None:
        folder = self.folder(ref.stream, ref.timestamp)
        try:
            # backup.json first: from that moment the backup is incomplete and invisible.
            self.s3.delete_object(Bucket=self.bucket, Key=folder + META_NAME)
            self.s3.delete_object(Bucket=self.bucket, Key=folder + DATA_NAME)
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None


class BackupWriter:
    """Multipart upload of stream.tar.s2 with up to PARTS_IN_FLIGHT parts uploading while the next
    fills (memory stays about (PARTS_IN_FLIGHT + 1) x PART_SIZE whatever the stream's size);
    backup.json is written by `complete` only. `abort` leaves nothing behind."""

    def __init__(self, store: BackupStore, stream: str, timestamp: str):
        self.store, self.stream, self.timestamp = store, stream, timestamp
        self.key = store.folder(stream, timestamp) + DATA_NAME
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.size = 0
        self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT)
        self._inflight: list[Future] = []
        try:
            self.upload_id = store.s3.create_multipart_upload(Bucket=store.bucket, Key=self.key)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            self._pool.shutdown()
            raise _explain(exc, store.bucket) from None

    def _upload_part(self, number: int, data: bytes) -> dict:
        r = self.store.s3.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                      PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": r["ETag"]}

    def _wait_oldest(self) -> None:
        future = self._inflight.pop(0)
        try:
            self.parts.append(future.result())
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.store.bucket) from None

    async def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        if len(self.buffer) >= PART_SIZE:
            part, self.buffer = self.buffer, bytearray()  # hand the buffer over: no copy
            if len(self._inflight) >= PARTS_IN_FLIGHT:
                await asyncio.get_running_loop().run_in_executor(None, self._wait_oldest)
            number = len(self.parts) + len(self._inflight) + 1
            self._inflight.append(self._pool.submit(self._upload_part, number, part))

    def complete(self, meta: SnapshotMeta) -> BackupRef:
        while self._inflight:
            self._wait_oldest()
        if self.buffer or not self.parts:
            self.parts.append(self._upload_part(len(self.parts) + 1, self.buffer))
            self.buffer = bytearray()
        s3, bucket = self.store.s3, self.store.bucket
        try:
            s3.complete_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self.upload_id,
                                         MultipartUpload={"Parts": self.parts})
            s3.put_object(Bucket=bucket, Key=self.store.folder(self.stream, self.timestamp) + META_NAME,
                          Body=meta.to_json().encode(), ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, bucket) from None
        finally:
            self._pool.shutdown()
        return BackupRef(self.stream, self.timestamp, self.size)

    def abort(self) -> None:
        try:
            for future in self._inflight:
                future.cancel()
            self._pool.shutdown(wait=True)
            self.store.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except (ClientError, BotoCoreError):
            pass  # best effort: an unfinished multipart upload holds no visible object
