"""The dynamic providers behind `Stream` and `Consumer`: check and diff are offline and pure
(preview in CI cannot reach the homelab); create, read, update and delete execute the plan from
`streams.plan` through `streams.jetstream`.

Safety rules, in one place:
- Replacing a stream (a field the server cannot change) happens create-before-delete: `create`
  finds the old stream under the same name and recreates it only when it holds no messages or the
  declaration says `allowDataLoss: true`; otherwise it refuses and nothing changes. The consumers
  this tool manages are carried over to the new stream. The engine's later delete of the old
  resource sees a newer stream (its `created` differs) and leaves it alone.
- Deleting a stream that holds messages is refused unless its last applied state allowed data loss.
- Adoption: a stream or consumer that exists without this tool's metadata mark (made with the nats
  CLI) is adopted by `create`, updated in place where it differs in updatable fields, and refused
  where it differs in a field the server cannot change.
- Consumers are replaced delete-before-create (they hold no stream data).

Credentials come from `configure` (stack config secrets), never from inputs or outputs.
"""
from __future__ import annotations

from typing import Any

from pulumi.dynamic import (CheckFailure, CheckResult, ConfigureRequest, CreateResult, DiffResult, ReadResult,
                            ResourceProvider, UpdateResult)

from streams.catalog import (CONSUMER_FIELDS, MANAGED_BY_KEY, MANAGED_BY_VALUE, STREAM_FIELDS, CatalogError,
                             consumer_declaration, consumer_wire_config, stream_declaration, stream_wire_config)
from streams.connection import ConnectionSettings, connection_from_config
from streams.jetstream import CONSUMER_EXISTS, STREAM_NAME_IN_USE, JetStreamApiError, JetStreamClient, client_for
from streams.plan import normalize_consumer, normalize_stream, plan_consumer_change, plan_stream_change

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
STREAM_KEYS = tuple(f.camel for f in STREAM_FIELDS)
CONSUMER_KEYS = tuple(f.camel for f in CONSUMER_FIELDS)
# Inputs that give context for validation; they never cause a change by themselves.
CONTEXT_KEYS = ("jetstreamServers", "streamSubjects", "streamReplicas")


class DataLossRefused(RuntimeError):
    """A change would delete messages and the stream did not opt in."""


class AdoptionRefused(RuntimeError):
    """An object made outside Pulumi differs in a field the server cannot change."""


def _has_unknown(value: Any) -> bool:
    if value == UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def _declared(props: dict, keys: tuple[str, ...]) -> dict:
    return {k: props[k] for k in keys if props.get(k) is not None}


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) else default


def _mark(config: dict) -> dict:
    return {**config, "metadata": {**(config.get("metadata") or {}), MANAGED_BY_KEY: MANAGED_BY_VALUE}}


def _is_managed(config: dict) -> bool:
    return (config.get("metadata") or {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def _strip_server_metadata(config: dict) -> dict:
    meta = {k: v for k, v in (config.get("metadata") or {}).items()
            if not k.startswith("_nats.") and k != MANAGED_BY_KEY}
    out = {k: v for k, v in config.items() if k != "metadata"}
    if meta:
        out["metadata"] = meta
    return out


class _JetStreamProvider(ResourceProvider):
    """Shared plumbing: the connection from `configure`, and a client per call."""

    def configure(self, req: ConfigureRequest) -> None:
        self._connection = connection_from_config(req.config.get)

    def _wire(self, props: dict) -> dict:
        raise NotImplementedError

    # Inputs that may still be unknown at preview without blocking validation of the rest.
    _MAY_BE_UNKNOWN: tuple[str, ...] = ()

    def check(self, _olds: dict, news: dict) -> CheckResult:
        """Offline validation of the declaration; a failure names the key as the user wrote it."""
        if _has_unknown({k: v for k, v in news.items() if k not in self._MAY_BE_UNKNOWN}):
            return CheckResult(news, [])
        try:
            self._wire(news)
        except CatalogError as exc:
            return CheckResult(news, [CheckFailure(exc.key or "name", str(exc))])
        return CheckResult(news, [])

    def _client(self) -> JetStreamClient:
        connection: ConnectionSettings | None = getattr(self, "_connection", None)
        if connection is None:  # configure was not called (direct use): environment and defaults
            connection = self._connection = connection_from_config(lambda key: None)
        return client_for(connection)


class StreamProvider(_JetStreamProvider):
    # ------------------------------------------------------------ offline
    def _wire(self, props: dict) -> dict:
        return stream_wire_config(props["name"], _declared(props, STREAM_KEYS + ("allowDataLoss",)),
                                  max_replicas=_int(props.get("jetstreamServers"), 1))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        unknown = [k for k in STREAM_KEYS if _has_unknown(news.get(k))]
        if unknown:
            return DiffResult(changes=True, replaces=[k for k in unknown if k in ("storage", "retention", "mirror")],
                              delete_before_replace=False)
        plan = plan_stream_change(self._wire(olds), self._wire(news))
        control_changed = bool(olds.get("allowDataLoss")) != bool(news.get("allowDataLoss"))
        replaces = [_camel(STREAM_FIELDS, k) for k in plan.replace_keys]
        return DiffResult(changes=plan.changes or control_changed, replaces=replaces, delete_before_replace=False)

    # ------------------------------------------------------------ online
    def create(self, props: dict) -> CreateResult:
        desired = self._wire(props)
        allow_loss = bool(props.get("allowDataLoss"))
        info = self._client().run(lambda c: _create_or_adopt_stream(c, desired, allow_loss))
        return CreateResult(props["name"], self._outs(props, info))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        desired = self._wire(news)

        async def apply(c: JetStreamClient):
            current = await c.stream_info(desired["name"])
            if current is None:  # deleted out of band since the last refresh: make it again
                return await c.create_stream(_mark(desired))
            return await c.update_stream(_mark(desired))
        return UpdateResult(self._outs(news, self._client().run(apply)))

    def read(self, id_: str, props: dict) -> ReadResult:
        info = self._client().run(lambda c: c.stream_info(id_))
        if info is None:
            return ReadResult("", {})
        inputs = {"name": id_, **stream_declaration(info["config"]),
                  **{k: props[k] for k in ("allowDataLoss", "jetstreamServers") if k in props}}
        return ReadResult(id_, self._outs(inputs, info), inputs)

    def delete(self, id_: str, props: dict) -> None:
        allow_loss = bool(props.get("allowDataLoss"))
        created = props.get("created")

        async def remove(c: JetStreamClient):
            info = await c.stream_info(id_)
            if info is None:
                return
            if created and info.get("created") != created:
                return  # a newer stream of this name replaced the one this resource made: keep it
            messages = info["state"].get("messages", 0)
            if messages and not allow_loss:
                raise DataLossRefused(
                    f"stream {id_!r}: refusing to delete it: it holds {messages} messages "
                    f"({info['state'].get('bytes', 0)} bytes). Back it up (python -m streams backup {id_} --bucket …), "
                    f"then set allowDataLoss: true on the stream and run `pulumi up` before removing it")
            await c.delete_stream(id_)
        self._client().run(remove)

    @staticmethod
    def _outs(inputs: dict, info: dict) -> dict:
        applied = normalize_stream(_strip_server_metadata(info["config"]))
        return {**inputs, "created": info.get("created"), "config": applied}


async def _create_or_adopt_stream(c: JetStreamClient, desired: dict, allow_loss: bool) -> dict:
    name = desired["name"]
    try:  # the common case in one round trip; an identical stream of ours is a success too
        return await c.create_stream(_mark(desired))
    except JetStreamApiError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
    info = await c.stream_info(name)
    if info is None:  # deleted in between
        return await c.create_stream(_mark(desired))
    plan = plan_stream_change(info["config"], desired)
    if plan.action != "replace":
        return await c.update_stream(_mark(desired))
    if not _is_managed(info["config"]):
        raise AdoptionRefused(
            f"stream {name!r} exists on the server (made outside Pulumi) and differs from the declaration in "
            f"fields the server cannot change: {'; '.join(plan.replace_reasons)}. Make the declaration match the "
            "server to adopt it, or back it up and remove it (nats stream rm) to let Pulumi create it anew")
    messages = info["state"].get("messages", 0)
    if messages and not allow_loss:
        raise DataLossRefused(
            f"stream {name!r}: this change needs the stream deleted and created again "
            f"({'; '.join(plan.replace_reasons)}), which would delete its {messages} messages "
            f"({info['state'].get('bytes', 0)} bytes). Nothing was changed. Back it up first "
            f"(python -m streams backup {name} --bucket …), then set allowDataLoss: true on the stream to accept, "
            "or revert the change")
    consumers = []
    for cname in await c.consumer_names(name):
        cinfo = await c.consumer_info(name, cname)
        if cinfo and _is_managed(cinfo["config"]):
            consumers.append(cinfo["config"])
    await c.delete_stream(name)
    created = await c.create_stream(_mark(desired))
    for config in consumers:  # carry the managed consumers over; their resources stay as they are
        try:
            await c.put_consumer(name, _carried_consumer(config), "create")
        except JetStreamApiError:
            pass  # no longer fits the new stream (e.g. filter outside its subjects): its resource will say so
    return created


def _carried_consumer(config: dict) -> dict:
    keep = {k: v for k, v in config.items() if k not in ("name",)}
    keep["metadata"] = {k: v for k, v in (keep.get("metadata") or {}).items() if not k.startswith("_nats.")}
    return keep


def _camel(fields, wire_key: str) -> str:
    return next((f.camel for f in fields if f.wire == wire_key), wire_key)


class ConsumerProvider(_JetStreamProvider):
    _MAY_BE_UNKNOWN = ("streamSubjects",)

    def _wire(self, props: dict) -> dict:
        subjects = props.get("streamSubjects")
        return consumer_wire_config(props["stream"], props["name"], _declared(props, CONSUMER_KEYS),
                                    stream_subjects=None if _has_unknown(subjects) else subjects,
                                    max_replicas=_int(props.get("streamReplicas"), 1))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        for key in ("stream", "name"):
            if olds.get(key) != news.get(key):
                return DiffResult(changes=True, replaces=[key], delete_before_replace=True)
        if any(_has_unknown(news.get(k)) for k in CONSUMER_KEYS):
            return DiffResult(changes=True, replaces=[], delete_before_replace=True)
        plan = plan_consumer_change(self._wire(olds), self._wire(news))
        replaces = [_camel(CONSUMER_FIELDS, k) for k in plan.replace_keys]
        return DiffResult(changes=plan.changes, replaces=replaces, delete_before_replace=True)

    def create(self, props: dict) -> CreateResult:
        desired = self._wire(props)
        stream = props["stream"]
        info = self._client().run(lambda c: _create_or_adopt_consumer(c, stream, desired))
        return CreateResult(f"{stream}/{props['name']}", self._outs(props, info))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        desired = self._wire(news)
        info = self._client().run(lambda c: c.put_consumer(news["stream"], _mark(desired)))
        return UpdateResult(self._outs(news, info))

    def read(self, id_: str, props: dict) -> ReadResult:
        stream, _, name = id_.partition("/")
        info = self._client().run(lambda c: c.consumer_info(stream, name))
        if info is None:
            return ReadResult("", {})
        inputs = {"stream": stream, "name": name, **consumer_declaration(info["config"]),
                  **{k: props[k] for k in CONTEXT_KEYS if k in props}}
        inputs.pop("durableName", None)
        return ReadResult(id_, self._outs(inputs, info), inputs)

    def delete(self, id_: str, props: dict) -> None:
        stream, _, name = id_.partition("/")
        self._client().run(lambda c: c.delete_consumer(stream, name))

    @staticmethod
    def _outs(inputs: dict, info: dict) -> dict:
        return {**inputs, "config": normalize_consumer(_strip_server_metadata(info["config"]))}


async def _create_or_adopt_consumer(c: JetStreamClient, stream: str, desired: dict) -> dict:
    name = desired["durable_name"]
    try:
        return await c.put_consumer(stream, _mark(desired), "create")
    except JetStreamApiError as exc:
        if exc.err_code != CONSUMER_EXISTS:
            raise
    info = await c.consumer_info(stream, name)
    if info is None:
        return await c.put_consumer(stream, _mark(desired), "create")
    plan = plan_consumer_change(info["config"], desired)
    if plan.action != "replace":
        return await c.put_consumer(stream, _mark(desired), "update")
    if not _is_managed(info["config"]):
        raise AdoptionRefused(
            f"consumer {name!r} of stream {stream!r} exists on the server (made outside Pulumi) and differs from "
            f"the declaration in fields the server cannot change: {'; '.join(plan.replace_reasons)}. Make the "
            "declaration match to adopt it, or remove it (nats consumer rm) to let Pulumi create it anew")
    await c.delete_consumer(stream, name)
    return await c.put_consumer(stream, _mark(desired), "create")
