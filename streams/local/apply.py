"""Applies a catalog through the same provider code the Pulumi resources use, without the engine:
the local mode (`make dev`) and the benchmarks. Create adopts what exists, so running it again
changes nothing and keeps every message."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from pulumi.dynamic import Config, ConfigureRequest

from stack.buckets import KEY_VALUE, OBJECT_STORE
from stack.catalog import CONSUMER_FIELDS, MANAGED_BY_KEY, MANAGED_BY_VALUE, STREAM_FIELDS, CatalogError, StreamSpec
from stack.errors import PROJECT
from streams.bucket_provider import KeyValueProvider, ObjectStoreProvider
from streams.jetstream import JetStreamApiError
from streams.kv_entry_provider import KeyValueEntryProvider, read_entry
from streams.plan import Plan, keep_from, plan_consumer_change, plan_stream_change
from streams.provider import (
    AdoptionRefused,
    ConsumerProvider,
    DataLossRefused,
    ReplacementFailed,
    ReplacementRefused,
    StreamProvider,
    SubjectsTaken,
)
from streams.resources import bucket_props, consumer_props, stream_props
from streams.safety import consumer_progress_loss, stream_message_loss


@dataclass(frozen=True)
class Applied:
    """What applying one object did: created, updated (the declaration's keys that changed), replaced (why),
    unchanged, or refused (why; the object was left as it was)."""
    kind: str
    name: str
    action: str = "unchanged"
    fields: tuple[str, ...] = ()
    created: str | None = None
    messages_removed: int = 0   # by a replacement or a lowered limit the declaration opted into
    error: str | None = None

    def line(self) -> str:
        what = f"{self.action} {self.kind} {self.name}"
        if self.action == "refused":
            return f"{what}: {self.error}"
        if self.fields:
            what += (": " if self.action == "updated" else " (") + ", ".join(self.fields) + \
                ("" if self.action == "updated" else ")")
        if self.messages_removed:
            what += f"; {self.messages_removed} messages deleted (allowDataLoss)"
        return what


def outcome(kind: str, name: str, existed: bool, plan: Plan, fields) -> Applied:
    """Applied for an object that was (or was not) on the server before, given the plan from its config then to the
    declaration; `fields` names the wire keys (the catalog's field table)."""
    if not existed:
        return Applied(kind, name, "created")
    if plan.action == "none":
        return Applied(kind, name, "unchanged")
    if plan.action == "replace":
        return Applied(kind, name, "replaced", plan.replace_reasons)
    return Applied(kind, name, "updated", tuple(next((f.camel for f in fields if f.wire == k), k) for k in plan.changed))


def configured(provider, url: str, ready_timeout: str = "60s", login: tuple[str, str] | None = None):
    """A provider configured as the engine would, with the URL and (when auth is on) the admin's user and password."""
    values = {f"{PROJECT}:natsUrl": url, f"{PROJECT}:natsReadyTimeout": ready_timeout}
    if login:
        values.update({f"{PROJECT}:natsUser": login[0], f"{PROJECT}:natsPassword": login[1]})
    provider.configure(ConfigureRequest(Config(values, PROJECT)))
    # The server named here, whatever the shell's NATS_URL says: for `pulumi up` that variable wins over natsUrl
    # (a port-forward), but make dev must apply to the server it has just started, never to one a previous export
    # (or the homelab's address) left in the environment.
    provider._connection = replace(provider._connection, url=url, url_source="the local server")
    return provider


def configured_providers(url: str, ready_timeout: str = "60s", login: tuple[str, str] | None = None
                         ) -> tuple[StreamProvider, ConsumerProvider]:
    return (configured(StreamProvider(), url, ready_timeout, login),
            configured(ConsumerProvider(), url, ready_timeout, login))


# What a refusal is: the provider said no to this object (data loss, adoption, a replacement the server would not
# complete) or the server refused its config. Anything else (NATS gone) stops the whole apply.
_REFUSALS = (DataLossRefused, AdoptionRefused, ReplacementRefused, ReplacementFailed, SubjectsTaken, JetStreamApiError)


def apply_catalog(specs: tuple[StreamSpec, ...], url: str, *, jetstream_servers: int = 1,
                  login: tuple[str, str] | None = None, buckets=()) -> list[Applied]:
    """Apply every object; one that is refused is reported and left as it was, and the others are still applied."""
    streams, consumers = configured_providers(url, login=login)
    client = streams._client()
    applied = []
    try:  # create validates the declaration as Check does (the specs were validated by load_catalog already)
        for spec in specs:
            props = stream_props(spec, jetstream_servers=jetstream_servers)
            applied.append(_apply_stream(streams, client, "stream", spec.name, props))
            for c in spec.consumers:
                applied.append(_apply_consumer(consumers, client, c))
        applied += _apply_buckets(buckets, url, login, jetstream_servers, client)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None
    return applied


def _apply_stream(provider, client, kind: str, name: str, props: dict, *, stream: str | None = None) -> Applied:
    before = client.run(lambda c: c.stream_info(stream or name))
    desired = provider._wire(props)
    if before is not None:
        desired = keep_from(desired, before["config"], provider._keep(props))
    plan = plan_stream_change(before["config"], desired) if before else Plan("none")
    try:
        out = provider.create(props).outs
    except _REFUSALS as exc:
        return Applied(kind, name, "refused", error=str(exc))
    result = outcome(kind, name, before is not None, plan, STREAM_FIELDS)
    return replace(result, created=out.get("created"), messages_removed=int(out.get("messagesRemoved") or 0))


def _apply_consumer(provider, client, spec) -> Applied:
    name = f"{spec.stream}/{spec.name}"
    props = consumer_props(spec)
    before = client.run(lambda c: c.consumer_info(spec.stream, spec.name))
    plan = plan_consumer_change(before["config"], provider._wire(props)) if before else Plan("none")
    try:
        provider.create(props)
    except _REFUSALS as exc:
        return Applied("consumer", name, "refused", error=str(exc))
    return outcome("consumer", name, before is not None, plan, CONSUMER_FIELDS)


def _apply_buckets(buckets, url: str, login: tuple[str, str] | None, jetstream_servers: int, client) -> list[Applied]:

    kinds = {KEY_VALUE.kind: KeyValueProvider, OBJECT_STORE.kind: ObjectStoreProvider}
    providers = {}
    applied = []
    for spec in buckets:
        if spec.kind.kind not in providers:
            providers[spec.kind.kind] = configured(kinds[spec.kind.kind](), url, login=login)
        props = bucket_props(spec, jetstream_servers=jetstream_servers)
        applied.append(_apply_stream(providers[spec.kind.kind], client, spec.kind.label, spec.name, props,
                                     stream=spec.stream_name))
        if spec.entries:
            entries = configured(KeyValueEntryProvider(), url, login=login)
            applied += [_apply_entry(entries, client, entry) for entry in spec.entries]
    return applied


def _apply_entry(provider, client, entry) -> Applied:
    """A declared key: written when the server's value differs. An encrypted value (only `pulumi up` decrypts it)
    is left as the server has it."""
    name = f"{entry.bucket}/{entry.key}"
    if entry.value is None:
        return Applied("key", name, "unchanged", ("a secret: only pulumi up writes it",))
    before = client.run(lambda c: read_entry(c, entry.bucket, entry.key))
    try:
        provider.create({"bucket": entry.bucket, "key": entry.key, "value": entry.value,
                         "allowDataLoss": entry.allow_data_loss})
    except _REFUSALS as exc:
        return Applied("key", name, "refused", error=str(exc))
    if before is None:
        return Applied("key", name, "created")
    return Applied("key", name, "unchanged" if before[0] == entry.value else "updated",
                   () if before[0] == entry.value else ("value",))


async def _consumer_infos(c, *, name: str) -> list[dict]:
    return await c.consumer_infos(name)


def undeclared(specs: tuple[StreamSpec, ...], url: str, login: tuple[str, str] | None = None,
               buckets=()) -> list[str]:
    """Streams and consumers this project made on the server (marked managed) that the catalog no longer
    declares, each with what `pulumi up` would do with it: delete it, or refuse while it holds data."""

    def managed(config: dict) -> bool:
        return (config.get("metadata") or {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE

    streams, _ = configured_providers(url, login=login)
    client = streams._client()
    declared = {spec.name: spec for spec in specs}
    bucket_streams = {b.stream_name for b in buckets}
    report = []
    for info in client.run(lambda c: c.stream_infos()):
        name = info["config"]["name"]
        if name in bucket_streams:
            continue
        if name not in declared:
            if managed(info["config"]):
                loss = stream_message_loss(info)
                report.append(f"stream {name} is no longer declared: `pulumi up` would delete it" + (
                    f", and refuses to while it holds {loss} unless the stream's last declaration set "
                    "allowDataLoss: true" if loss else " (it is empty)"))
            continue
        wanted = {c.name for c in declared[name].consumers}
        for ci in client.run(partial(_consumer_infos, name=name)):
            cname = ci["config"].get("durable_name") or ci["name"]
            if cname not in wanted and managed(ci["config"]):
                loss = consumer_progress_loss(ci)
                report.append(f"consumer {name}/{cname} is no longer declared: `pulumi up` would delete it"
                              + (f", losing {loss}" if loss else ""))
    return report
