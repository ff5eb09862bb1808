"""Drives the dynamic providers in-process as the engine does (check, diff, create, read, update,
delete), keeping the state the engine would keep. The gRPC path is in test_provider_grpc.py."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import nats
from pulumi.dynamic import Config, ConfigureRequest

from stack.catalog import load_catalog
from streams.resources import consumer_props, stream_props

PROJECT = "homelab-nats"


def configured(provider_cls, url: str, ready_timeout: str = "10s", **extra):
    provider = provider_cls()
    config = {f"{PROJECT}:natsUrl": url, f"{PROJECT}:natsReadyTimeout": ready_timeout,
              **{f"{PROJECT}:{k}": v for k, v in extra.items()}}
    provider.configure(ConfigureRequest(Config(config, PROJECT)))
    return provider


def stream_inputs(name: str, decl: dict, jetstream_servers: int = 1) -> dict:
    [spec] = load_catalog({name: decl}, max_replicas=jetstream_servers)
    return stream_props(spec, jetstream_servers=jetstream_servers)


def consumer_inputs(stream: str, stream_decl: dict, name: str, decl: dict) -> dict:
    [spec] = load_catalog({stream: {**stream_decl, "consumers": {name: decl}}})
    return consumer_props(spec.consumers[0])


@dataclass
class Managed:
    """One resource as the engine tracks it: id, inputs and outputs in state."""
    provider: object
    id: str | None = None
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)

    def check(self, news: dict):
        return self.provider.check(self.inputs, news)

    def create(self, news: dict) -> Managed:
        assert not self.check(news).failures, self.check(news).failures
        result = self.provider.create(news)
        self.id, self.inputs, self.outputs = result.id, news, result.outs
        return self

    def diff(self, news: dict):
        return self.provider.diff(self.id, self.outputs, news)

    def update(self, news: dict):
        result = self.provider.update(self.id, self.outputs, news)
        self.inputs, self.outputs = news, result.outs

    def refresh(self):
        result = self.provider.read(self.id, self.outputs)
        self.id = result.id or None
        if result.id:
            self.inputs, self.outputs = result.inputs, result.outs
        return result

    def delete(self):
        self.provider.delete(self.id, self.outputs)

    def apply(self, news: dict) -> str:
        """What `pulumi up` does for an existing resource; returns the step taken."""
        d = self.diff(news)
        if not d.changes:
            return "same"
        if d.replaces:
            old = Managed(self.provider, self.id, self.inputs, self.outputs)
            if d.delete_before_replace:
                old.delete()
                self.create(news)
            else:
                self.create(news)
                old.delete()
            return "replace"
        self.update(news)
        return "update"


class RawJetStream:
    """What a user does with the nats CLI: raw API calls and publishes, on its own connection."""

    def __init__(self, url: str):
        self.url = url

    def _run(self, coro_fn):
        async def go():
            nc = await nats.connect(self.url)
            try:
                return await coro_fn(nc)
            finally:
                await nc.close()
        return asyncio.run(go())

    def api(self, subject: str, body: dict | None = None) -> dict:
        async def call(nc):
            msg = await nc.request(subject, json.dumps(body).encode() if body is not None else b"", timeout=5)
            return json.loads(msg.data)
        return self._run(call)

    def publish(self, subject: str, payloads: list[bytes], headers: dict | None = None) -> None:
        async def pub(nc):
            js = nc.jetstream()
            for p in payloads:
                await js.publish(subject, p, headers=headers)
        self._run(pub)

    def stream(self, name: str) -> dict:
        return self.api(f"$JS.API.STREAM.INFO.{name}")

    def consumer(self, stream: str, name: str) -> dict:
        return self.api(f"$JS.API.CONSUMER.INFO.{stream}.{name}")
