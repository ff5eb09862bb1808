"""Applies a catalog through the same provider code the Pulumi resources use, without the engine:
the local mode (`make dev`) and the benchmarks. Create adopts what exists, so running it again
changes nothing and keeps every message."""
from __future__ import annotations

from dataclasses import dataclass

from pulumi.dynamic import Config, ConfigureRequest

from components.settings import PROJECT
from streams.catalog import CatalogError, StreamSpec
from streams.provider import ConsumerProvider, StreamProvider
from streams.resources import consumer_props, stream_props


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    created: str | None = None
    messages_removed: int = 0   # by a replacement or a lowered limit the declaration opted into


def configured(provider, url: str, ready_timeout: str = "60s", login: tuple[str, str] | None = None):
    """A provider configured as the engine would, with the URL and (when auth is on) the admin's user and password."""
    values = {f"{PROJECT}:natsUrl": url, f"{PROJECT}:natsReadyTimeout": ready_timeout}
    if login:
        values.update({f"{PROJECT}:natsUser": login[0], f"{PROJECT}:natsPassword": login[1]})
    provider.configure(ConfigureRequest(Config(values, PROJECT)))
    return provider


def configured_providers(url: str, ready_timeout: str = "60s", login: tuple[str, str] | None = None
                         ) -> tuple[StreamProvider, ConsumerProvider]:
    return (configured(StreamProvider(), url, ready_timeout, login),
            configured(ConsumerProvider(), url, ready_timeout, login))


def apply_catalog(specs: tuple[StreamSpec, ...], url: str, *, jetstream_servers: int = 1,
                  login: tuple[str, str] | None = None, buckets=()) -> list[Applied]:
    streams, consumers = configured_providers(url, login=login)
    applied = []
    try:  # create validates the declaration as Check does (the specs were validated by load_catalog already)
        for spec in specs:
            out = streams.create(stream_props(spec, jetstream_servers=jetstream_servers)).outs
            applied.append(Applied("stream", spec.name, out.get("created"), int(out.get("messagesRemoved") or 0)))
            for c in spec.consumers:
                consumers.create(consumer_props(c))
                applied.append(Applied("consumer", f"{spec.name}/{c.name}"))
        applied += _apply_buckets(buckets, url, login, jetstream_servers)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None
    return applied


def _apply_buckets(buckets, url: str, login: tuple[str, str] | None, jetstream_servers: int) -> list[Applied]:
    from streams.bucket_provider import KeyValueProvider, ObjectStoreProvider
    from streams.buckets import KEY_VALUE, OBJECT_STORE
    from streams.resources import bucket_props

    kinds = {KEY_VALUE.kind: KeyValueProvider, OBJECT_STORE.kind: ObjectStoreProvider}
    providers = {}
    applied = []
    for spec in buckets:
        if spec.kind.kind not in providers:
            providers[spec.kind.kind] = configured(kinds[spec.kind.kind](), url, login=login)
        provider = providers[spec.kind.kind]
        out = provider.create(bucket_props(spec, jetstream_servers=jetstream_servers)).outs
        applied.append(Applied(spec.kind.label, spec.name, out.get("created"), int(out.get("messagesRemoved") or 0)))
    return applied


def undeclared(specs: tuple[StreamSpec, ...], url: str, login: tuple[str, str] | None = None,
               buckets=()) -> list[str]:
    """Streams and consumers this project made on the server (marked managed) that the catalog no longer
    declares, each with what `pulumi up` would do with it: delete it, or refuse while it holds data."""
    from streams.catalog import MANAGED_BY_KEY, MANAGED_BY_VALUE
    from streams.safety import consumer_progress_loss, stream_message_loss

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
        for ci in client.run(lambda c: c.consumer_infos(name)):
            cname = ci["config"].get("durable_name") or ci["name"]
            if cname not in wanted and managed(ci["config"]):
                loss = consumer_progress_loss(ci)
                report.append(f"consumer {name}/{cname} is no longer declared: `pulumi up` would delete it"
                              + (f", losing {loss}" if loss else ""))
    return report
