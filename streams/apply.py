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


def configured_providers(url: str, ready_timeout: str = "60s") -> tuple[StreamProvider, ConsumerProvider]:
    config = Config({f"{PROJECT}:natsUrl": url, f"{PROJECT}:natsReadyTimeout": ready_timeout}, PROJECT)
    providers = StreamProvider(), ConsumerProvider()
    for p in providers:
        p.configure(ConfigureRequest(config))
    return providers


def apply_catalog(specs: tuple[StreamSpec, ...], url: str, *, jetstream_servers: int = 1) -> list[Applied]:
    streams, consumers = configured_providers(url)
    applied = []
    try:  # create validates the declaration as Check does (the specs were validated by load_catalog already)
        for spec in specs:
            out = streams.create(stream_props(spec, jetstream_servers=jetstream_servers)).outs
            applied.append(Applied("stream", spec.name, out.get("created")))
            for c in spec.consumers:
                consumers.create(consumer_props(c))
                applied.append(Applied("consumer", f"{spec.name}/{c.name}"))
    except CatalogError as exc:
        raise ValueError(str(exc)) from None
    return applied
