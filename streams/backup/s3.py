"""Backups in S3-compatible storage (the homelab's MinIO), in the `nats stream backup` layout:

    s3://<bucket>/<prefix>/<stream>/<id>/stream.tar.s2   (uploaded first, multipart)
    s3://<bucket>/<prefix>/<stream>/<id>/backup.json     (written last: marks it complete)

`<id>` is the UTC time the backup began plus a random suffix (`20261126T030000Z-3fa9c1`): two backups
never share a folder, even in the same second, and a complete backup is never overwritten. Folders named
by the time alone (older backups) are read as well.

Backups are ordered by what the server reported in backup.json (the time of the stream's last message,
then its last sequence), not by the clock of the machine that took them; the id breaks ties.
A folder without backup.json is an incomplete backup, and one whose name or backup.json is not a
backup's is skipped with a warning: list, restore and prune see neither.
Bytes are streamed: a backup is never held whole in memory.
"""
from __future__ import annotations

import asyncio
import builtins
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from streams.backup.snapshot import SnapshotError, SnapshotMeta

PART_SIZE = 8 * 1024 * 1024      # boto3's upload_file part size (s3transfer multipart_chunksize); S3 needs >= 5 MiB
PARTS_IN_FLIGHT = 8              # spooled to temporary files, not held in memory (BackupWriter)
READ_SIZE = 2 * 1024 * 1024
READ_AHEAD = 3
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
META_NAME = "backup.json"
DATA_NAME = "stream.tar.s2"
# <UTC time>[-<suffix>]: the folder names this tool writes (and, without a suffix, wrote before).
BACKUP_ID = re.compile(r"^(\d{8}T\d{6}Z)(-[0-9a-f]{6,32})?$")


class StoreError(RuntimeError):
    """S3 refused or could not be reached; the message says what to check (never the credentials)."""


# The AWS SDKs' own switch (botocore reads it too, but an explicit client config would override it). when_supported,
# the default: a CRC32 on every part. botocore 1.44 (httpchecksum.py resolve_request_checksum_algorithm) sends it as
# a header with a signed payload over http, and over https as an aws-chunked trailer with an unsigned payload
# (STREAMING-UNSIGNED-PAYLOAD-TRAILER). Garage before v1.1.0 refuses that trailer with "Invalid content sha256 hash"
# (deuxfleurs-org/garage v1.0.1 src/api/signature/payload.rs) but takes the header; from v1.1.0 it takes both
# (src/api/common/signature/payload.rs parse_x_amz_content_sha256, src/api/s3/multipart.rs). when_required: no
# checksum unless an operation requires one, for such a store behind https.
CHECKSUM_ENV = "AWS_REQUEST_CHECKSUM_CALCULATION"
CHECKSUM_MODES = ("when_supported", "when_required")


def checksum_mode() -> str:
    """The request checksum mode: AWS_REQUEST_CHECKSUM_CALCULATION, default when_supported."""
    mode = (os.environ.get(CHECKSUM_ENV) or "when_supported").strip().lower()
    if mode not in CHECKSUM_MODES:
        raise StoreError(f"{CHECKSUM_ENV}={mode!r}: expected {' or '.join(CHECKSUM_MODES)} (when_required for a store "
                         "that refuses trailing checksums, such as Garage before v1.1.0)")
    return mode


def _endpoint(endpoint: str | None) -> str:
    """The store to talk to: given, or AWS_ENDPOINT_URL. No address on the network is assumed."""
    found = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if not found:
        raise StoreError("no S3 endpoint: pass --endpoint or set AWS_ENDPOINT_URL")
    return found


def s3_client(endpoint: str | None = None, region: str | None = None, access_key: str | None = None,
              secret_key: str | None = None):
    """A boto3 S3 client for MinIO or Garage: path-style addressing, the standard AWS variables as defaults."""
    return boto3.client(
        "s3",
        endpoint_url=_endpoint(endpoint),
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        # Uploads as botocore makes them by default (CHECKSUM_ENV above): the CRC32 parts let the store complete
        # the upload from their checksums; moto spent twice the CPU on CompleteMultipartUpload without them. The
        # homelab's MinIO (RELEASE.2025-04-08T15-41-24Z) also takes the https trailer (minio/minio
        # cmd/auth-handler.go isRequestUnsignedTrailerV4, since #16484). Downloads skip the response checksum,
        # which boto3 would otherwise compute over the whole archive.
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=60, request_checksum_calculation=checksum_mode(),
                          response_checksum_validation="when_required"),
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


@dataclass(frozen=True)
class BackupRef:
    stream: str
    id: str                  # the folder: <UTC time it began>-<random suffix>
    size: int = 0
    last_ts: str = ""        # from backup.json: the stream's last message time, as the server reported it
    last_seq: int = 0        # ... its last sequence
    first_seq: int = 0       # ... and its first (a purge or an age-out moves it on)

    @property
    def taken_at(self) -> datetime:
        """When the backup began, by the clock of the machine that took it (for --max-age only)."""
        return datetime.strptime(self.id[:16], TIMESTAMP_FORMAT).replace(tzinfo=UTC)

    @property
    def order(self) -> tuple:
        """Oldest first by the server's account of the stream; the id breaks ties."""
        return (_utc_text(self.last_ts), self.last_seq, self.first_seq, self.id)


def _utc_text(ts: str) -> str:
    """A server timestamp as sortable text: RFC 3339 with nanoseconds, padded to a fixed width."""
    if not ts or ts.startswith("0001-01-01"):
        return ""
    head, _, frac = ts.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')[:9]}"


def new_backup_id(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)).strftime(TIMESTAMP_FORMAT)}-{secrets.token_hex(4)}"


def order_key_from_meta(meta: SnapshotMeta) -> dict:
    """The BackupRef fields that order backups, from what the server reported in backup.json."""
    state = meta.state if isinstance(meta.state, dict) else {}
    return {"last_ts": str(state.get("last_ts") or ""), "last_seq": int(state.get("last_seq") or 0),
            "first_seq": int(state.get("first_seq") or 0)}


class BackupStore:
    def __init__(self, s3, bucket: str, prefix: str = "nats"):
        self.s3, self.bucket, self.prefix = s3, bucket, prefix.strip("/")
        self.warnings: list[str] = []   # what list() skipped, and why (the CLI prints them)

    def folder(self, stream: str, backup_id: str) -> str:
        return "/".join(p for p in (self.prefix, stream, backup_id) if p) + "/"

    def url(self, ref: BackupRef) -> str:
        return f"s3://{self.bucket}/{self.folder(ref.stream, ref.id)}"

    def check_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise StoreError(f"bucket {self.bucket!r} does not exist; create it (mc mb) or pass --bucket") from None
            raise _explain(exc, self.bucket) from None

    # ------------------------------------------------------------ writing
    def writer(self, stream: str, backup_id: str) -> BackupWriter:
        return BackupWriter(self, stream, backup_id)

    # ------------------------------------------------------------ reading
    def list(self, stream: str | None = None) -> list[BackupRef]:
        """Complete backups (those with backup.json), oldest first by the server's account of the stream.
        Folders that are not backups are skipped, each with a line in `self.warnings`."""
        base = "/".join(p for p in (self.prefix, stream) if p) + "/"
        sizes: dict[tuple[str, str], int] = {}
        complete: set[tuple[str, str]] = set()
        strangers: set[str] = set()
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(self.prefix) + 1 if self.prefix else 0:]
                    parts = rest.split("/")
                    if len(parts) != 3 or not BACKUP_ID.match(parts[1]) or parts[2] not in (META_NAME, DATA_NAME):
                        strangers.add("/".join(parts[:2]) if len(parts) >= 2 else rest)
                        continue
                    key = (parts[0], parts[1])
                    if parts[2] == META_NAME:
                        complete.add(key)
                    else:
                        sizes[key] = obj["Size"]
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        strangers -= {f"{s}/{i}" for s, i in complete | set(sizes)}
        self.warnings = [f"s3://{self.bucket}/{self.folder(*name.split('/', 1)) if '/' in name else name} is not a "
                         "backup (its name or files are not a backup's): skipped" for name in sorted(strangers)]
        refs = []
        for s, i in sorted(complete):
            if (s, i) not in sizes:
                continue
            ref = BackupRef(s, i, sizes[(s, i)])
            try:
                order = order_key_from_meta(self.read_meta(ref))
            except StoreError as exc:
                self.warnings.append(f"{exc}: skipped")
                continue
            refs.append(BackupRef(s, i, sizes[(s, i)], **order))
        return sorted(refs, key=lambda r: (r.stream, r.order))

    def find(self, stream: str, at: str | None = None) -> BackupRef:
        """The newest backup of `stream`, or the one `at` names: its id, or the time alone when that is
        unambiguous."""
        backups = self.list(stream)
        if not backups:
            raise StoreError(f"no complete backup of stream {stream!r} in s3://{self.bucket}/{self.prefix}")
        if at is None:
            return backups[-1]
        matches = [r for r in backups if r.id == at] or [r for r in backups if r.id.split("-", 1)[0] == at]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(r.id for r in (matches or backups))
        if matches:
            raise StoreError(f"{at} matches {len(matches)} backups of {stream!r}: {listed}; give the whole id")
        raise StoreError(f"no complete backup of {stream!r} at {at}; there are: {listed}")

    def read_meta(self, ref: BackupRef) -> SnapshotMeta:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.folder(ref.stream, ref.id) + META_NAME)
            return SnapshotMeta.from_json(body["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        except SnapshotError as exc:
            raise StoreError(f"{self.url(ref)}: {exc}") from None

    async def chunks(self, ref: BackupRef) -> AsyncIterator[bytes]:
        """The archive's bytes, streamed in READ_SIZE reads, READ_AHEAD of them ahead in a worker thread."""
        loop = asyncio.get_running_loop()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.folder(ref.stream, ref.id) + DATA_NAME)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        with ThreadPoolExecutor(max_workers=1) as pool:
            # READ_AHEAD reads queued in the one worker thread: S3's latency hides behind the restore loop's.
            pending = [loop.run_in_executor(pool, body.read, READ_SIZE) for _ in range(READ_AHEAD)]
            while True:
                data = await pending.pop(0)
                if not data:
                    return
                pending.append(loop.run_in_executor(pool, body.read, READ_SIZE))
                yield data

    def stale_uploads(self, older_than: timedelta, now: datetime | None = None) -> builtins.list[dict]:
        """Multipart uploads under the prefix begun more than `older_than` ago and never completed or aborted:
        what a backup leaves behind when S3 went away mid-upload and the abort could not reach it either.
        Younger ones may be a backup still running."""
        cutoff = (now or datetime.now(UTC)) - older_than
        base = f"{self.prefix}/" if self.prefix else ""
        stale = []
        try:
            for page in self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        stale.append({"Key": upload["Key"], "UploadId": upload["UploadId"],
                                      "Initiated": upload["Initiated"]})
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None
        return stale

    def abort_upload(self, upload: dict) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None

    def delete(self, ref: BackupRef) -> None:
        folder = self.folder(ref.stream, ref.id)
        try:
            # backup.json first: from that moment the backup is incomplete and invisible.
            self.s3.delete_object(Bucket=self.bucket, Key=folder + META_NAME)
            self.s3.delete_object(Bucket=self.bucket, Key=folder + DATA_NAME)
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.bucket) from None


class BackupWriter:
    """Multipart upload of stream.tar.s2 with up to PARTS_IN_FLIGHT parts uploading while the next fills.
    Each part is spooled to an unnamed temporary file and uploaded from it, as boto3's own upload_file
    reads parts from a file: memory stays small and flat (bench/backup_rss.py) however many parts are in
    flight, and the disk holds at most (PARTS_IN_FLIGHT + 1) x PART_SIZE. Fewer, larger parts also make the
    final CompleteMultipartUpload cheaper for the store (moto: 1.9 s for 52 parts of 5 MiB, 1.1 s for 32). backup.json is written by
    `complete` only. `abort` leaves nothing behind."""

    def __init__(self, store: BackupStore, stream: str, backup_id: str):
        self.store, self.stream, self.id = store, stream, backup_id
        self.key = store.folder(stream, backup_id) + DATA_NAME
        self.spool = tempfile.TemporaryFile(prefix="nats-backup-part-")
        self.spooled = 0
        self.parts: list[dict] = []
        self.size = 0
        self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT)
        self._inflight: list[Future] = []
        try:
            # CRC32 parts, as boto3's upload_file makes them: the store then completes the upload from the parts'
            # checksums (moto spent twice the CPU on CompleteMultipartUpload without them).
            # Without checksums (when_required) the upload must not announce one: the completion would then
            # have to carry each part's.
            announce = {"ChecksumAlgorithm": "CRC32"} if checksum_mode() == "when_supported" else {}
            self.upload_id = store.s3.create_multipart_upload(Bucket=store.bucket, Key=self.key,
                                                              **announce)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            self._pool.shutdown()
            self.spool.close()
            raise _explain(exc, store.bucket) from None

    def _upload_part(self, number: int, part) -> dict:
        try:
            part.seek(0)
            r = self.store.s3.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                          PartNumber=number, Body=part)
            part_ref = {"PartNumber": number, "ETag": r["ETag"]}
            if r.get("ChecksumCRC32"):
                part_ref["ChecksumCRC32"] = r["ChecksumCRC32"]
            return part_ref
        finally:
            part.close()

    def _wait_oldest(self) -> None:
        future = self._inflight.pop(0)
        try:
            self.parts.append(future.result())
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, self.store.bucket) from None

    def _next_part(self):
        part, self.spool, self.spooled = self.spool, tempfile.TemporaryFile(prefix="nats-backup-part-"), 0
        return part

    async def write(self, data: bytes) -> None:
        self.spool.write(data)
        self.spooled += len(data)
        self.size += len(data)
        if self.spooled >= PART_SIZE:
            if len(self._inflight) >= PARTS_IN_FLIGHT:
                await asyncio.get_running_loop().run_in_executor(None, self._wait_oldest)
            number = len(self.parts) + len(self._inflight) + 1
            self._inflight.append(self._pool.submit(self._upload_part, number, self._next_part()))

    def complete(self, meta: SnapshotMeta) -> BackupRef:
        while self._inflight:
            self._wait_oldest()
        if self.spooled or not self.parts:
            self.parts.append(self._upload_part(len(self.parts) + 1, self._next_part()))
        self.spool.close()
        s3, bucket = self.store.s3, self.store.bucket
        meta_key = self.store.folder(self.stream, self.id) + META_NAME
        try:
            if self._exists(meta_key):  # never replace a complete backup (ids are unique: this is a guard)
                raise StoreError(f"s3://{bucket}/{meta_key} exists already; refusing to overwrite a backup")
            s3.complete_multipart_upload(Bucket=bucket, Key=self.key, UploadId=self.upload_id,
                                         MultipartUpload={"Parts": self.parts})
            s3.put_object(Bucket=bucket, Key=meta_key, Body=meta.to_json().encode(), ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, bucket) from None
        finally:
            self._pool.shutdown()
        return BackupRef(self.stream, self.id, self.size, **order_key_from_meta(meta))

    def _exists(self, key: str) -> bool:
        try:
            self.store.s3.head_object(Bucket=self.store.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def abort(self) -> None:
        self.spool.close()
        try:
            for future in self._inflight:
                future.cancel()
            self._pool.shutdown(wait=True)
            self.store.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except (ClientError, BotoCoreError):
            pass  # best effort: an unfinished multipart upload holds no visible object
