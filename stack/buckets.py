"""Key-value buckets and object stores: each one is a stream, made exactly as the official clients make it.

A declaration in the clients' own terms (`homelab-nats:keyValues: {device-config: {history: 5, ttl: 30d}}`,
`homelab-nats:objectStores: {firmware: {maxBytes: 5GB}}`) becomes a stream declaration here, and from there
the stream machinery does the rest: units, the server's rules at preview, the update/replace plan, adoption,
drift and the data-loss refusals. The mapping follows nats.go v1.53.1 `jetstream/kv.go`
(`prepareKeyValueConfig`) and `jetstream/object.go` (`prepareObjectStoreConfig`), which the `nats kv` and
`nats object` commands use; nats.py 2.16.0 `nats/js/client.py` (`create_key_value`, `create_object_store`)
makes the same streams except in two flags:

- `allow_msg_ttl`: nats.py always sets it on a key-value stream, nats.go only with a limit-marker TTL;
- `allow_direct`: nats.go always sets it, nats.py only when asked (`direct=True`).

Neither changes how the bucket behaves for the other client, so unless declared (`direct`, `limitMarkerTtl`)
these two are left as the server has them when a bucket is adopted, and set as nats.go does for a new one:
a bucket either client made is adopted with no change (tests/streams/test_buckets.py).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stack.catalog import CatalogError, _check_store_reservations, stream_declaration, stream_wire_config
from stack.subjects import subjects_overlap

KV_PREFIX = "KV_"
OBJ_PREFIX = "OBJ_"
# nats.go validBucketRe (jetstream/kv.go): letters, digits, '-' and '_'.
BUCKET_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
MAX_HISTORY = 64   # nats.go KeyValueMaxHistory

# bucket option -> the stream declaration key it becomes (the rest are fixed by the client libraries)
KV_OPTIONS = {"description": "description", "history": "maxMsgsPerSubject", "ttl": "maxAge",
              "maxValueSize": "maxMsgSize", "maxBytes": "maxBytes", "storage": "storage", "replicas": "replicas",
              "compression": "compression", "placement": "placement", "republish": "republish",
              "metadata": "metadata", "mirror": "mirror", "sources": "sources",
              "limitMarkerTtl": "subjectDeleteMarkerTtl", "direct": "allowDirect"}
OBJ_OPTIONS = {"description": "description", "ttl": "maxAge", "maxBytes": "maxBytes", "storage": "storage",
               "replicas": "replicas", "compression": "compression", "placement": "placement",
               "metadata": "metadata"}
CONTROL = ("allowDataLoss", "protect")
# A key-value bucket's declared keys and values (`entries: {key: value}`): KeyValueEntry resources, not stream options.
ENTRIES = "entries"
# nats.go jetstream/kv.go keyValid: letters, digits and - / _ = . with no '.' at either end.
KEY_NAME = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


@dataclass(frozen=True)
class BucketKind:
    kind: str            # "keyValue" | "objectStore"
    label: str           # for messages
    prefix: str          # the stream name prefix
    options: Mapping[str, str]
    config_key: str      # homelab-nats:<config_key>

    def stream_name(self, bucket: str) -> str:
        return self.prefix + bucket

    def where(self, bucket: str) -> str:
        return f"{self.label} {bucket!r}"


KEY_VALUE = BucketKind("keyValue", "key-value bucket", KV_PREFIX, KV_OPTIONS, "keyValues")
OBJECT_STORE = BucketKind("objectStore", "object store", OBJ_PREFIX, OBJ_OPTIONS, "objectStores")


def bucket_option(kind: BucketKind, stream_key: str | None) -> str | None:
    """The bucket option a stream declaration key came from (for error messages and replace keys)."""
    for option, key in kind.options.items():
        if key == stream_key:
            return option
    return stream_key


def _check(kind: BucketKind, bucket: str, decl: Mapping[str, Any]) -> None:
    where = kind.where(bucket)
    if not isinstance(bucket, str) or not BUCKET_NAME.match(bucket):
        raise CatalogError(where, None, "bucket names are letters, digits, '-' and '_' (nats.go validBucketRe)")
    if not isinstance(decl, Mapping):
        raise CatalogError(where, None, f"expected an object of options such as {{storage: file}}, got {decl!r}")
    extra = (ENTRIES,) if kind is KEY_VALUE else ()
    unknown = sorted(set(decl) - set(kind.options) - set(CONTROL) - set(extra))
    if unknown:
        raise CatalogError(where, unknown[0], f"unknown option; a {kind.label} takes "
                                              f"{', '.join([*kind.options, *CONTROL, *extra])}")
    if "compression" in decl and not isinstance(decl["compression"], bool):
        raise CatalogError(where, "compression", f"expected true (S2) or false, got {decl['compression']!r}")
    if "direct" in decl and not isinstance(decl["direct"], bool):
        raise CatalogError(where, "direct", f"expected true or false, got {decl['direct']!r}")
    history = decl.get("history", 1)   # over gRPC every number arrives as a double: 5.0 is 5
    if isinstance(history, bool) or not isinstance(history, (int, float)) or history != int(history) \
            or not 1 <= history <= MAX_HISTORY:
        raise CatalogError(where, "history", f"a whole number from 1 to {MAX_HISTORY} (the clients' limit), "
                                             f"got {history!r}")
    if "mirror" in decl and "sources" in decl:
        raise CatalogError(where, "mirror", "a bucket mirrors one bucket or sources from others, not both")


def _source_name(kind: BucketKind, name: str) -> str:
    return name if name.startswith(kind.prefix) else kind.prefix + name


def stream_declaration_for(kind: BucketKind, bucket: str, decl: Mapping[str, Any]) -> dict:
    """The stream declaration (catalog camelCase, CLI units) the clients make for this bucket."""
    _check(kind, bucket, decl)
    out: dict[str, Any] = {"discard": "new", "allowRollup": True, "allowDirect": True}
    if kind is KEY_VALUE:
        out.update(denyDelete=True, maxMsgs=-1, maxConsumers=-1, maxMsgsPerSubject=1, maxBytes=-1, maxMsgSize=-1)
    else:
        out.update(maxBytes=-1)
    for option, value in decl.items():
        if option in CONTROL or option == ENTRIES:
            continue
        key = kind.options[option]
        if option == "compression":
            value = "s2" if value else "none"
        out[key] = value
    if kind is KEY_VALUE:
        if "limitMarkerTtl" in decl:
            out["allowMsgTtl"] = True
        if "mirror" in decl:
            mirror = decl["mirror"]
            mirror = {"name": mirror} if isinstance(mirror, str) else dict(mirror or {})
            if "name" in mirror:
                mirror["name"] = _source_name(kind, str(mirror["name"]))
            out["mirror"] = mirror
            out["mirrorDirect"] = True
        else:
            out["subjects"] = [f"$KV.{bucket}.>"]
            if "sources" in decl:
                sources = []
                for src in decl["sources"] or []:
                    src = {"name": src} if isinstance(src, str) else dict(src)
                    origin = str(src.get("name", ""))
                    origin_bucket = origin[len(kind.prefix):] if origin.startswith(kind.prefix) else origin
                    src["name"] = _source_name(kind, origin)
                    if not src.get("subjectTransforms") and origin_bucket != bucket:
                        src["subjectTransforms"] = [{"source": f"$KV.{origin_bucket}.>",
                                                  "destination": f"$KV.{bucket}.>"}]
                    sources.append(src)
                out["sources"] = sources
    else:
        out["subjects"] = [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"]
    return out


# Wire keys the two client libraries set differently (see the module docstring): unless declared, an existing
# bucket keeps the server's value.
def unmanaged_keys(kind: BucketKind, decl: Mapping[str, Any]) -> tuple[str, ...]:
    if kind is not KEY_VALUE:
        return ()
    keys = []
    if "direct" not in decl:
        keys.append("allow_direct")
    if "limitMarkerTtl" not in decl:
        keys.append("allow_msg_ttl")
    return tuple(keys)


def bucket_wire_config(kind: BucketKind, bucket: str, decl: Mapping[str, Any], *, max_replicas: int = 1,
                       creating: bool | None = None) -> dict:
    """The stream config for the bucket; a problem is reported against the bucket and its own option."""
    try:
        stream_decl = stream_declaration_for(kind, bucket, decl)
        return stream_wire_config(kind.stream_name(bucket), stream_decl, max_replicas=max_replicas,
                                  creating=creating)
    except CatalogError as exc:
        if exc.where.startswith(kind.label):
            raise
        raise CatalogError(kind.where(bucket), bucket_option(kind, exc.key), exc.problem) from None


def bucket_declaration(kind: BucketKind, config: Mapping[str, Any], declared: Mapping[str, Any]) -> dict:
    """A server's stream config as the bucket's options (what `refresh` records): every option the declaration
    names, and any other that differs from what the clients would set, so out-of-band edits show as drift."""
    stream = stream_declaration(config)
    bucket = config["name"][len(kind.prefix):]
    baseline = stream_declaration(stream_wire_config(config["name"], stream_declaration_for(kind, bucket, {})))
    out: dict[str, Any] = {}
    for option, key in kind.options.items():
        value = stream.get(key)
        if option == "compression":
            value = value == "s2" if value is not None else None
        if option in declared or (value is not None and stream.get(key) != baseline.get(key)
                                  and option not in ("direct", "mirror", "sources", "limitMarkerTtl")):
            if value is not None:
                out[option] = value
    if "mirror" in declared and "mirror" in stream:
        out["mirror"] = declared["mirror"]
    if "sources" in declared and "sources" in stream:
        out["sources"] = declared["sources"]
    return out


@dataclass(frozen=True)
class EntrySpec:
    """One declared key of a key-value bucket and its value (None: a secret the stack file holds encrypted, which
    only `pulumi up` can read)."""
    bucket: str
    key: str
    value: str | None
    allow_data_loss: bool = False    # the bucket's: removing the declaration deletes the key only then

    @property
    def where(self) -> str:
        return f"key {self.key!r} of key-value bucket {self.bucket!r}"


def entry_value(value: Any) -> str | None:
    """A declared value as the text stored: text as it is, numbers and true/false as YAML writes them; an encrypted
    value (`{secure: …}` in the stack file, decrypted by Pulumi only) is None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, Mapping) and set(value) == {"secure"}:
        return None
    raise ValueError(f"expected text (or a number), got {value!r}: write the value as it should be stored, quoted")


def load_entries(bucket: str, decl: Mapping[str, Any]) -> tuple[EntrySpec, ...]:
    raw = decl.get(ENTRIES)
    if raw is None:
        return ()
    where = KEY_VALUE.where(bucket)
    if not isinstance(raw, Mapping):
        raise CatalogError(where, ENTRIES, f"expected a map of keys to values, e.g. {{room1.interval: \"30\"}}, got "
                                           f"{type(raw).__name__}")
    out = []
    for key, value in raw.items():
        key = str(key)
        if not KEY_NAME.match(key) or key.startswith(".") or key.endswith("."):
            raise CatalogError(where, f"{ENTRIES}.{key}", "keys are letters, digits and - / _ = . with no '.' at "
                                                          "either end (nats.go keyValid)")
        try:
            out.append(EntrySpec(bucket, key, entry_value(value), bool(decl.get("allowDataLoss"))))
        except ValueError as exc:
            raise CatalogError(where, f"{ENTRIES}.{key}", str(exc)) from None
    return tuple(out)


@dataclass(frozen=True)
class BucketSpec:
    kind: BucketKind
    name: str
    declaration: dict
    config: dict                 # the stream's wire config
    allow_data_loss: bool = False
    protect: bool = False
    entries: tuple[EntrySpec, ...] = ()

    @property
    def stream_name(self) -> str:
        return self.kind.stream_name(self.name)


def load_buckets(raw: Any, kind: BucketKind, *, max_replicas: int = 1) -> tuple[BucketSpec, ...]:
    """`homelab-nats:keyValues` or `homelab-nats:objectStores`, validated as at preview."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise CatalogError(f"homelab-nats:{kind.config_key}", None, "expected a map of bucket names to options")
    specs = []
    for name, decl in raw.items():
        decl = dict(decl or {})
        cfg = bucket_wire_config(kind, str(name), decl, max_replicas=max_replicas)
        for flag in CONTROL:
            if flag in decl and not isinstance(decl[flag], bool):
                raise CatalogError(kind.where(name), flag, f"expected true or false, got {decl[flag]!r}")
        entries = load_entries(str(name), decl) if kind is KEY_VALUE else ()
        specs.append(BucketSpec(kind, str(name), {k: v for k, v in decl.items() if k != ENTRIES}, cfg,
                                bool(decl.get("allowDataLoss")), bool(decl.get("protect")), entries))
    return tuple(specs)


def check_collisions(streams, buckets) -> None:
    """A bucket's stream may not share a name or a subject with a declared stream (the server refuses the second
    one; at preview instead)."""

    names = {s.name: s for s in streams}
    for b in buckets:
        where = b.kind.where(b.name)
        if b.stream_name in names:
            raise CatalogError(where, None, f"its stream is named {b.stream_name!r}, like a declared stream; rename "
                                            "one of them")
        for s in streams:
            for mine in b.config.get("subjects", []):
                for theirs in s.config.get("subjects", []):
                    if subjects_overlap(mine, theirs):
                        raise CatalogError(where, None, f"its subjects {mine!r} overlap {theirs!r} of stream "
                                                        f"{s.name!r}; the server refuses two streams capturing the "
                                                        "same subject")


def load_all_buckets(raw: Mapping[str, Any], *, streams=(), max_replicas: int = 1,
                     store_limits: Mapping[str, int] | None = None) -> tuple[BucketSpec, ...]:
    """Both kinds of bucket from the stack config (unprefixed keys), checked against the declared streams: names,
    subjects and, with the streams, the stores' reservations."""

    buckets = (*load_buckets(raw.get("keyValues"), KEY_VALUE, max_replicas=max_replicas),
               *load_buckets(raw.get("objectStores"), OBJECT_STORE, max_replicas=max_replicas))
    check_collisions(streams, buckets)
    if store_limits:
        _check_store_reservations([*streams, *buckets], store_limits, servers=max_replicas)
    return buckets


# A key's last message marks it deleted with one of these (nats.go jetstream/kv.go kvop, the KV-Operation header).
KV_DELETED = ("DEL", "PURGE")


def entry_subject(bucket: str, key: str) -> str:
    """The subject a key lives on (nats.go jetstream/kv.go: `$KV.<bucket>.<key>`)."""
    return f"$KV.{bucket}.{key}"


def entry_from_message(message: Mapping[str, Any]) -> tuple[str, int] | None:
    """A key's value and revision from the last message on its subject (`$JS.API.STREAM.MSG.GET`'s `message`:
    base64 data and headers), or None when that message marks it deleted."""
    import base64

    headers = base64.b64decode(message.get("hdrs") or b"").decode(errors="replace")
    if any(f"KV-Operation: {op}" in headers for op in KV_DELETED):
        return None
    return base64.b64decode(message.get("data") or b"").decode(errors="replace"), int(message["seq"])


# A declared key against the server: what check and report say of it.
AS_DECLARED, DIFFERS, MISSING, NOT_COMPARED = "as declared", "differs", "missing", "secret: not compared"


def entry_status(entry: EntrySpec, server: tuple[str, int] | None) -> str:
    """A declared key against the server's value and revision (None: the key has none)."""
    if entry.value is None:
        return NOT_COMPARED
    if server is None:
        return MISSING
    return AS_DECLARED if server[0] == entry.value else DIFFERS
