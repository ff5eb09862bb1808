"""`Stream` and `Consumer`: JetStream objects as Pulumi resources (type tokens
`pulumi-python:dynamic/nats:Stream` and `.../nats:Consumer`), built from the validated catalog."""
from __future__ import annotations

from collections.abc import Sequence

import pulumi
from pulumi.dynamic import Resource

from stack.buckets import KEY_VALUE, BucketSpec, EntrySpec
from stack.catalog import ConsumerSpec, StreamSpec
from streams.bucket_provider import KeyValueProvider, ObjectStoreProvider
from streams.kv_entry_provider import KeyValueEntryProvider
from streams.provider import ConsumerProvider, StreamProvider


def stream_props(spec: StreamSpec, *, jetstream_servers: int) -> dict:
    """The Stream resource's inputs: the declaration as written, plus the provider's context."""
    return {"name": spec.name, **{k: v for k, v in spec.declaration.items() if k != "protect"},
            "allowDataLoss": spec.allow_data_loss, "jetstreamServers": jetstream_servers}


def consumer_props(spec: ConsumerSpec) -> dict:
    """The Consumer resource's inputs: the declaration as written, plus what the stack knows of its stream
    (subjects, replicas, retention, consumer limits, whether it allows data loss): context for validation
    and safety, never a change by themselves."""
    return {"stream": spec.stream, "name": spec.name, **spec.declaration, **spec.context.as_input(),
            "streamAllowDataLoss": spec.stream_allows_data_loss}


class Stream(Resource, module="nats", name="Stream"):
    """A JetStream stream. Outputs: `created` (the server's creation time, a stable identity), `config`
    (the applied config, server defaults included) and `messagesRemoved` (what the last change deleted:
    a lowered limit, or a replacement with allowDataLoss)."""
    created: pulumi.Output[str]
    config: pulumi.Output[dict]
    messagesRemoved: pulumi.Output[int]

    def __init__(self, resource_name: str, spec: StreamSpec, *, jetstream_servers: int,
                 opts: pulumi.ResourceOptions | None = None):
        props = {**stream_props(spec, jetstream_servers=jetstream_servers), "created": None, "config": None,
                 "messagesRemoved": None}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=spec.protect))
        super().__init__(StreamProvider(), resource_name, props, opts)


class Consumer(Resource, module="nats", name="Consumer"):
    """A durable JetStream consumer. Outputs: `created` and `config` (the applied config, server defaults
    included). Its input `streamCreated` follows the stream: when the stream is made anew, the consumer is
    made again with it."""
    created: pulumi.Output[str]
    config: pulumi.Output[dict]

    def __init__(self, resource_name: str, spec: ConsumerSpec, stream: Stream,
                 opts: pulumi.ResourceOptions | None = None):
        props = {**consumer_props(spec), "streamCreated": stream.created, "created": None, "config": None}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[stream]))
        super().__init__(ConsumerProvider(), resource_name, props, opts)


def declare_catalog(specs: Sequence[StreamSpec], *, jetstream_servers: int,
                    depends_on: Sequence[pulumi.Resource] = ()) -> dict[str, Stream]:
    """One Stream per spec and one Consumer per consumer, each waiting for the deployment to be ready."""
    streams = {}
    for spec in specs:
        stream = Stream(f"stream-{spec.name}", spec, jetstream_servers=jetstream_servers,
                        opts=pulumi.ResourceOptions(depends_on=list(depends_on)))
        streams[spec.name] = stream
        for consumer in spec.consumers:
            Consumer(f"consumer-{spec.name}-{consumer.name}", consumer, stream,
                     opts=pulumi.ResourceOptions(depends_on=list(depends_on)))
    return streams


def bucket_props(spec: BucketSpec, *, jetstream_servers: int) -> dict:
    """A bucket resource's inputs: its options as declared, plus the provider's context."""
    return {"name": spec.name, **{k: v for k, v in spec.declaration.items() if k != "protect"},
            "allowDataLoss": spec.allow_data_loss, "jetstreamServers": jetstream_servers}


class _Bucket(Resource):
    created: pulumi.Output[str]
    config: pulumi.Output[dict]
    messagesRemoved: pulumi.Output[int]

    def __init__(self, provider, resource_name: str, spec: BucketSpec, *, jetstream_servers: int,
                 opts: pulumi.ResourceOptions | None = None):
        props = {**bucket_props(spec, jetstream_servers=jetstream_servers), "created": None, "config": None,
                 "messagesRemoved": None}
        super().__init__(provider, resource_name, props,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=spec.protect)))


class KeyValue(_Bucket, module="nats", name="KeyValue"):
    """A JetStream key-value bucket (the stream KV_<name>). Outputs as for Stream."""

    def __init__(self, resource_name: str, spec: BucketSpec, **kwargs):
        super().__init__(KeyValueProvider(), resource_name, spec, **kwargs)


class ObjectStore(_Bucket, module="nats", name="ObjectStore"):
    """A JetStream object store (the stream OBJ_<name>). Outputs as for Stream."""

    def __init__(self, resource_name: str, spec: BucketSpec, **kwargs):
        super().__init__(ObjectStoreProvider(), resource_name, spec, **kwargs)


class KeyValueEntry(Resource, module="nats", name="KeyValueEntry"):
    """One declared key of a key-value bucket: `pulumi up` writes its value when the server's differs; a refresh
    shows a value changed on the server as drift. Output: the revision (streams/kv_entry_provider.py)."""
    revision: pulumi.Output[int]

    def __init__(self, resource_name: str, spec: EntrySpec, *, secret: bool = False,
                 opts: pulumi.ResourceOptions | None = None):
        value = pulumi.Output.secret(spec.value) if secret else spec.value
        props = {"bucket": spec.bucket, "key": spec.key, "value": value, "allowDataLoss": spec.allow_data_loss,
                 "revision": None}
        hide = pulumi.ResourceOptions(additional_secret_outputs=["value"]) if secret else None
        super().__init__(KeyValueEntryProvider(), resource_name, props, pulumi.ResourceOptions.merge(opts, hide))


def declare_buckets(specs: Sequence[BucketSpec], *, jetstream_servers: int,
                    depends_on: Sequence[pulumi.Resource] = (), secret_entries: bool = False) -> list:
    """One KeyValue or ObjectStore resource per bucket, each waiting for the deployment to be ready, and one
    KeyValueEntry per declared key after its bucket (their values secret when the stack's are)."""
    resources: list[Resource] = []
    for spec in specs:
        cls, prefix = (KeyValue, "kv") if spec.kind is KEY_VALUE else (ObjectStore, "objectstore")
        bucket = cls(f"{prefix}-{spec.name}", spec, jetstream_servers=jetstream_servers,
                     opts=pulumi.ResourceOptions(depends_on=list(depends_on)))
        resources.append(bucket)
        for entry in spec.entries:
            resources.append(KeyValueEntry(f"kv-{spec.name}-entry-{entry.key}", entry, secret=secret_entries,
                                           opts=pulumi.ResourceOptions(depends_on=[bucket])))
    return resources
