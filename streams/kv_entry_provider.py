"""The dynamic provider behind `KeyValueEntry`: one declared key of a key-value bucket and its value.

A key is a message on `$KV.<bucket>.<key>` of the stream `KV_<bucket>`; its revision is that message's sequence
(nats.go jetstream/kv.go: Put publishes there and returns the ack's sequence; Get reads the last message on the
subject, and a `KV-Operation: DEL` or `PURGE` header marks it deleted). So:
- create and update put the value when the server's differs (the same value is adopted: nothing is written);
- refresh reads the server's value: a value a device or an operator changed shows as drift, and is written back
  only by `pulumi up`; a deleted key reads as gone, and `up` puts it again;
- removing the declaration leaves the key where it is, unless the bucket says `allowDataLoss: true`: then the key
  is deleted as `nats kv del` does (a delete marker; earlier revisions go as the bucket's history says).
The value is secret in the state when the stack's value is (the resource asks for it: streams/resources.py).
The resource's id is `KV_<bucket>/<key>`.
"""
from __future__ import annotations

from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from stack.buckets import BUCKET_NAME, KEY_NAME, KEY_VALUE, entry_from_message, entry_subject
from streams.jetstream import JetStreamApiError, JetStreamClient
from streams.provider import KEEP_STATE, _JetStreamProvider, _kept, _say

# JSNoMessageFoundErr (nats-server server/errors.json): no message on that subject.
NO_MESSAGE_FOUND = 10037


def entry_id(bucket: str, key: str) -> str:
    return f"{KEY_VALUE.stream_name(bucket)}/{key}"


async def read_entry(c: JetStreamClient, bucket: str, key: str) -> tuple[str, int] | None:
    """The key's value and revision on the server, or None when it has none (never put, or deleted)."""
    try:
        answer = await c.request(f"$JS.API.STREAM.MSG.GET.{KEY_VALUE.stream_name(bucket)}",
                                 {"last_by_subj": entry_subject(bucket, key)})
    except JetStreamApiError as exc:
        if exc.err_code == NO_MESSAGE_FOUND:
            return None
        raise
    return entry_from_message(answer["message"])


async def put_entry(c: JetStreamClient, bucket: str, key: str, value: str) -> int:
    """Put the value; its revision (the ack's sequence)."""
    return int((await c.publish(entry_subject(bucket, key), value.encode()))["seq"])


async def delete_entry(c: JetStreamClient, bucket: str, key: str) -> None:
    """`nats kv del`: a delete marker on the key's subject."""
    await c.publish(entry_subject(bucket, key), b"", headers={"KV-Operation": "DEL"})


class KeyValueEntryProvider(_JetStreamProvider):
    """CRUD for one key: inputs bucket, key, value, allowDataLoss; outputs add the revision."""

    def check(self, olds: dict, news: dict) -> CheckResult:
        failures = []
        bucket, key = news.get("bucket"), news.get("key")
        if isinstance(bucket, str) and not BUCKET_NAME.match(bucket):
            failures.append(CheckFailure("bucket", f"{bucket!r} is not a bucket name"))
        if isinstance(key, str) and (not KEY_NAME.match(key) or key.startswith(".") or key.endswith(".")):
            failures.append(CheckFailure("key", f"{key!r} is not a key (nats.go keyValid)"))
        if news.get("value") is not None and not isinstance(news.get("value"), str):
            failures.append(CheckFailure("value", "expected text"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = [k for k in ("bucket", "key") if olds.get(k) != news.get(k)]
        changes = bool(replaces) or olds.get("value") != news.get("value") or \
            bool(olds.get("allowDataLoss")) != bool(news.get("allowDataLoss"))
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def _write(self, props: dict) -> dict:
        bucket, key, value = props["bucket"], props["key"], props["value"]

        async def write(c: JetStreamClient):
            current = await read_entry(c, bucket, key)
            if current is not None and current[0] == value:
                return current[1]   # as declared already: adopted, nothing written
            return await put_entry(c, bucket, key, value)
        return {**props, "revision": self._client().run(write)}

    def create(self, props: dict) -> CreateResult:
        return CreateResult(entry_id(props["bucket"], props["key"]), self._write(props))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(self._write(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        bucket, key = str(props.get("bucket")), str(props.get("key"))
        found = self._read_info(f"key {key!r} of key-value bucket {bucket!r}",
                                lambda c: read_entry(c, bucket, key), props)
        if found is KEEP_STATE:
            return _kept(id_, props)
        if found is None:
            return ReadResult("", {})
        value, revision = found
        inputs = {"bucket": bucket, "key": key, "value": value, "allowDataLoss": bool(props.get("allowDataLoss"))}
        return ReadResult(id_, {**inputs, "revision": revision}, inputs)

    def delete(self, id_: str, props: dict) -> None:
        bucket, key = props["bucket"], props["key"]
        if not props.get("allowDataLoss"):
            _say(f"key {key!r} of key-value bucket {bucket!r}: no longer declared; left on the server (the bucket's "
                 "allowDataLoss: true deletes it)")
            return

        async def remove(c: JetStreamClient):
            if await read_entry(c, bucket, key) is not None:
                await delete_entry(c, bucket, key)
        self._client().run(remove)
        _say(f"key {key!r} of key-value bucket {bucket!r}: deleted (allowDataLoss)")
