"""The dynamic providers behind `KeyValue` and `ObjectStore`: a bucket is a stream (stack/buckets.py maps
one to the other), so these are the stream provider with the bucket's options as inputs. Everything the
stream provider guarantees holds: offline check and diff, the server's plan (update or replace), adoption,
drift on refresh, refusals before anything is lost. Two rules are stricter for buckets:

- lowering a limit (history, ttl, maxBytes) on a bucket that holds data is refused without `allowDataLoss`,
  since it deletes revisions or objects (for a stream, a lowered limit is applied and reported);
- the two flags the client libraries set differently (`allow_direct`, `allow_msg_ttl`) stay as the server has
  them unless declared, so a bucket made by nats.py or by the nats CLI is adopted as it is.

The resource's id is the stream's name (`KV_<bucket>`, `OBJ_<bucket>`); messages name the stream.
"""
from __future__ import annotations

from pulumi.dynamic import DiffResult, ReadResult

from stack.buckets import (
    CONTROL,
    KEY_VALUE,
    OBJECT_STORE,
    BucketKind,
    bucket_declaration,
    bucket_option,
    bucket_wire_config,
    unmanaged_keys,
)
from stack.catalog import STREAM_FIELDS, CatalogError, stream_where
from streams.plan import keep_from, plan_stream_change
from streams.provider import KEEP_STATE, StreamProvider, _camel, _has_unknown, _kept, _number_or


class _BucketProvider(StreamProvider):
    KIND: BucketKind

    def _declared(self, props: dict) -> dict:
        return {k: v for k, v in props.items() if k in self.KIND.options or k in CONTROL}

    def _keep(self, props: dict) -> tuple[str, ...]:
        return unmanaged_keys(self.KIND, self._declared(props))

    def _wire(self, props: dict, *, creating: bool | None = None) -> dict:
        return bucket_wire_config(self.KIND, props["name"], self._declared(props),
                                  max_replicas=_number_or(props.get("jetstreamServers"), 1), creating=creating)

    def _check_known(self, props: dict, unknown: set[str]) -> None:
        known = {k: v for k, v in self._declared(props).items() if k not in unknown}
        name = props.get("name")
        if _has_unknown(name):
            return
        try:
            bucket_wire_config(self.KIND, str(name), known)
        except CatalogError as exc:
            if exc.key in unknown:
                return
            raise

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        unknown = [k for k in self.KIND.options if _has_unknown(news.get(k))]
        if unknown:
            return DiffResult(changes=True, replaces=[k for k in unknown if k == "storage"],
                              delete_before_replace=False)
        old = self._wire(olds)
        # the flags left to the server stay as they are, as update() will leave them
        new = keep_from(self._wire(news), old, self._keep(news))
        plan = plan_stream_change(old, new)
        control_changed = bool(olds.get("allowDataLoss")) != bool(news.get("allowDataLoss"))
        replaces = [str(bucket_option(self.KIND, _camel(STREAM_FIELDS, k))) for k in plan.replace_keys]
        return DiffResult(changes=plan.changes or control_changed, replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict) -> ReadResult:
        info = self._read_info(stream_where(id_), lambda c: c.stream_info(id_), props)
        if info is KEEP_STATE:
            return _kept(id_, props)
        if info is None:
            return ReadResult("", {})
        declared = self._declared(props)
        inputs = {"name": id_[len(self.KIND.prefix):], **bucket_declaration(self.KIND, info["config"], declared),
                  **{k: props[k] for k in ("allowDataLoss", "jetstreamServers") if k in props}}
        return ReadResult(id_, self._outs(inputs, info, props.get("messagesRemoved") or 0), inputs)


class KeyValueProvider(_BucketProvider):
    KIND = KEY_VALUE
    GUARD_LIMITS = "keys and revisions"


class ObjectStoreProvider(_BucketProvider):
    KIND = OBJECT_STORE
    GUARD_LIMITS = "objects"
