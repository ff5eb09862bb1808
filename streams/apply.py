"""Applies a catalog through the same provider code the Pulumi resources use, without the engine:
the local mode (`make dev`) and the benchmarks. Create adopts what exists, so running it again
changes nothing and keeps every message."""
from __future__ import annotations

from dataclasses import dataclass

from pulumi.dynamic import Config, ConfigureRequest

from components.settings import PROJECT
from streams.catalog import StreamSpec
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
    for spec in specs:
        props = stream_props(spec, jetstream_servers=jetstream_servers)
        failures = streams.check({}, props).failures
        if failures:
            raise ValueError(failures[0].reason)
        out = streams.create(props).outs
        applied.append(Applied("stream", spec.name, out.get("created")))
        for c in spec.consumers:
            cprops = consumer_props(c)
            failures = consumers.check({}, cprops).failures
            if failures:
                raise ValueError(failures[0].reason)
            consumers.create(cprops)
            applied.append(Applied("consumer", f"{spec.name}/{c.name}"))
    return applied
