"""The dynamic providers behind `Stream` and `Consumer`: check and diff are offline and pure
(preview in CI cannot reach the homelab); create, read, update and delete read the facts from the server through
`streams.jetstream` and carry out what `streams.decisions` decides (from the plan of `streams.plan` and what
`streams.safety` says the step would lose).

The safety rules those decisions follow (the README's "No data loss by surprise" says the same for users):
- Nothing that deletes messages or a consumer's progress runs unless the declaration says
  `allowDataLoss: true`: the refusal says what would be lost, and nothing is changed.
- Replacements (a field the server cannot change) happen create-before-delete in the engine's eyes:
  `create` finds the old object under the same name, checks what the new config needs against the
  server first (its validity, subjects held by other streams, the consumers it must carry over), and
  only then deletes and recreates it. If the server still refuses halfway, the old stream, its config
  and its consumers are put back. The engine's later delete of the old resource sees a newer object
  (its `created` differs) and leaves it alone.
- Deletes (a resource removed from the stack, `pulumi destroy`) only see the last applied state, so their
  opt-in must have been applied by an earlier `pulumi up`.
- Adoption: an object that exists without this tool's metadata mark (made with the nats CLI) is adopted
  by `create`, updated in place where it differs in updatable fields, and refused where it differs in a
  field the server cannot change.
- Renaming a stream (`renamedFrom: old-name`) deletes the old stream under the same rules, then creates
  the new one: both cannot hold the same subjects at once.

Credentials come from `configure` (stack config secrets), never from inputs or outputs.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

from stack.catalog import (
    CONSUMER_CONTROL_KEYS,
    CONSUMER_FIELDS,
    MANAGED_BY_KEY,
    STREAM_CONTROL_KEYS,
    STREAM_FIELDS,
    CatalogError,
    canonical_time,
    check_declared_values,
    consumer_declaration,
    consumer_where,
    consumer_wire_config,
    mark_managed,
    stream_declaration,
    stream_where,
    stream_wire_config,
)
from stack.rules import RuleBroken, StreamContext, check_consumer_rules, check_workqueue_partition
from stack.subjects import subjects_overlap
from stack.units import whole_number
from streams import decisions
from streams.connection import ConnectionSettings, connection_from_config
from streams.jetstream import (
    CONSUMER_EXISTS,
    CONSUMER_MISSING,
    INSUFFICIENT_STORAGE,
    NO_MESSAGE_FOUND,
    STREAM_NAME_IN_USE,
    STREAM_SUBJECT_OVERLAP,
    JetStreamApiError,
    JetStreamClient,
    NatsUnavailable,
    client_for,
)
from streams.plan import (
    CONSUMER_IMMUTABLE,
    STREAM_REPLACE_KEYS,
    keep_from,
    normalize_consumer,
    normalize_stream,
    plan_consumer_change,
    plan_stream_change,
)
from streams.safety import (
    LIMIT_NAMES,
    interest_conversion_loss,
    limit_losses,
    lowered_limits,
    stream_message_loss,
)

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
STREAM_KEYS = tuple(f.camel for f in STREAM_FIELDS)
CONSUMER_KEYS = tuple(f.camel for f in CONSUMER_FIELDS)
# Inputs that give context for validation and safety; they never cause a change by themselves.
CONTEXT_KEYS = ("jetstreamServers", "streamSubjects", "streamReplicas", "streamRetention", "streamConsumerLimits",
                "streamAllowDataLoss", "streamCreated")


# A refresh waits this long for NATS before it keeps the recorded state; after one such wait, the process's other
# reads of that server keep theirs at once.
READ_TIMEOUT = 5.0
_UNREACHABLE: set[str | None] = set()
KEEP_STATE = object()
OUTPUT_KEYS = ("created", "config", "messagesRemoved")


def _kept(id_: str, props: dict) -> ReadResult:
    """The recorded state, unchanged (the inputs are the outputs without what the provider adds)."""
    return ReadResult(id_, props, {k: v for k, v in props.items() if k not in OUTPUT_KEYS and k != "__provider"})


class DataLossRefused(RuntimeError):
    """A change would delete messages or a consumer's progress and the declaration did not opt in."""


class AdoptionRefused(RuntimeError):
    """An object made outside Pulumi differs in a field the server cannot change."""


class ReplacementRefused(RuntimeError):
    """A replacement the server would not complete; checked before anything was deleted."""


class StreamVanished(RuntimeError):
    """An update found no stream although the refresh had just read it."""


class SubjectsTaken(RuntimeError):
    """Another stream on the server holds the subjects a new stream declares."""


class ReplacementFailed(RuntimeError):
    """The server refused the new object halfway through a replacement; the old one was put back."""


def _has_unknown(value: Any) -> bool:
    """A value the engine will only know at `up`: the sentinel on the wire, or the SDK's Unknown object the
    provider host deserializes it into."""
    if isinstance(value, Unknown) or (isinstance(value, str) and value == UNKNOWN):
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def _declared(props: dict, keys: tuple[str, ...]) -> dict:
    return {k: props[k] for k in keys if props.get(k) is not None}


def _number_or(value: Any, default: int) -> int:
    """A context input as the engine hands it over (every number a double), or `default` while it is absent."""
    number = whole_number(value)
    return default if number is None else number


_mark = mark_managed


_is_managed = decisions.is_managed


def _strip_server_metadata(config: dict, *, keep_mark: bool = False) -> dict:
    meta = {k: v for k, v in (config.get("metadata") or {}).items()
            if not k.startswith("_nats.") and (keep_mark or k != MANAGED_BY_KEY)}
    out = {k: v for k, v in config.items() if k != "metadata"}
    if meta:
        out["metadata"] = meta
    return out


def _say(message: str) -> None:
    """A line for the person running `pulumi up`: the engine shows a provider's stderr as diagnostics
    (pulumi sdk/go/common/resource/plugin/plugin.go forwards plugin stderr through Diag.Infoerrf)."""
    print(message, file=sys.stderr, flush=True)


def _camel(fields, wire_key: str) -> str:
    """The declaration's name (camelCase) of a wire key."""
    return next((f.camel for f in fields if f.wire == wire_key), wire_key)


def _refuse_loss(what: str, losses: list[str], action: str, remedy: str) -> DataLossRefused:
    return DataLossRefused(decisions.refusal(what, losses, action, remedy))


def _carry_out_refusal(decision: decisions.Decision) -> None:
    """Raise what a refusing decision says; any other decision goes on."""
    if decision.action == decisions.REFUSE_ADOPTION:
        raise AdoptionRefused(decision.reason)
    if decision.action == decisions.REFUSE_LOSS:
        raise DataLossRefused(decision.reason)


class _JetStreamProvider(ResourceProvider):
    """Shared plumbing: the connection from `configure`, a client per call, and Check."""

    def configure(self, req: ConfigureRequest) -> None:
        self._connection = connection_from_config(req.config.get)

    def _wire(self, props: dict, *, creating: bool | None = None) -> dict:
        raise NotImplementedError

    def _check_known(self, props: dict, unknown: set[str]) -> None:
        raise NotImplementedError

    def check(self, olds: dict, news: dict) -> CheckResult:
        """Offline validation of the declaration; a failure names the key as the user wrote it. With
        values still unknown at preview (computed from another resource), what is known is checked."""
        unknown = {k for k, v in news.items() if _has_unknown(v)}
        try:
            if unknown - set(CONTEXT_KEYS):
                self._check_known(news, unknown)
            else:
                self._wire(news, creating=not olds)
        except CatalogError as exc:
            return CheckResult(news, [CheckFailure(exc.key or "name", str(exc))])
        return CheckResult(news, [])

    def _client(self, *, ready_timeout: float | None = None) -> JetStreamClient:
        connection: ConnectionSettings | None = getattr(self, "_connection", None)
        if connection is None:  # configure was not called (direct use): environment and defaults
            connection = self._connection = connection_from_config(lambda key: None)
        if ready_timeout is not None:
            connection = replace(connection, ready_timeout=min(connection.ready_timeout, ready_timeout))
        return client_for(connection)

    def _read_info(self, where: str, fn, props: dict):
        """What a refresh reads, or KEEP_STATE when NATS cannot be reached: a refresh (`pulumi up` refreshes first, as
        Pulumi.yaml's `options.refresh: always` asks) must not fail `pulumi preview` in CI, where the homelab is out
        of reach. Refused credentials still fail: that is not "unreachable". One wait per provider process."""
        url = getattr(getattr(self, "_connection", None), "url", None)
        if url in _UNREACHABLE:
            return KEEP_STATE
        try:
            return self._client(ready_timeout=READ_TIMEOUT).run(fn)
        except NatsUnavailable as exc:
            if exc.refused:
                raise
            _UNREACHABLE.add(url)
            _say(f"{where}: NATS is not reachable from here, so the refresh kept the recorded state ({exc})")
            return KEEP_STATE


# ================================================================ streams

class StreamProvider(_JetStreamProvider):
    # For buckets (streams/bucket_provider.py): what their data is, which makes a lowered limit on a store that
    # holds data a refusal without allowDataLoss (for a stream it is applied and reported).
    GUARD_LIMITS = "messages"

    def _keep(self, props: dict) -> tuple[str, ...]:
        """Wire keys left as the server has them: a mirror's mirrorDirect, when not declared, is its origin's
        allowDirect (nats-server stream.go checkStreamCfg inherits it, and refuses a mismatch in pedantic mode)."""
        return ("mirror_direct",) if props.get("mirror") and props.get("mirrorDirect") is None else ()

    # ------------------------------------------------------------ offline
    def _wire(self, props: dict, *, creating: bool | None = None) -> dict:
        return stream_wire_config(props["name"], _declared(props, STREAM_KEYS + STREAM_CONTROL_KEYS),
                                  max_replicas=_number_or(props.get("jetstreamServers"), 1), creating=creating)

    def _check_known(self, props: dict, unknown: set[str]) -> None:
        name = props.get("name")
        where = stream_where("(unknown)" if _has_unknown(name) else str(name))
        check_declared_values(where, {k: v for k, v in _declared(props, STREAM_KEYS + STREAM_CONTROL_KEYS).items()
                                      if k not in unknown}, kind="stream")

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        if olds.get("name") != news.get("name"):
            return DiffResult(changes=True, replaces=["name"], delete_before_replace=False)
        unknown = [k for k in STREAM_KEYS if _has_unknown(news.get(k))]
        if unknown:  # a possible replacement where the unknown value could force one, else an update
            replace_camel = {_camel(STREAM_FIELDS, k) for k in STREAM_REPLACE_KEYS}
            return DiffResult(changes=True, replaces=[k for k in unknown if k in replace_camel],
                              delete_before_replace=False)
        old_wire = self._wire(olds)
        new_wire = keep_from(self._wire(news), old_wire, self._keep(news))
        plan = plan_stream_change(old_wire, new_wire)
        control_changed = bool(olds.get("allowDataLoss")) != bool(news.get("allowDataLoss"))
        replaces = [_camel(STREAM_FIELDS, k) for k in plan.replace_keys]
        note = lowered_limits_note(str(news.get("name")), old_wire, new_wire, bool(news.get("allowDataLoss")),
                                   self.GUARD_LIMITS)
        if note and not replaces:
            _say(note)
        return DiffResult(changes=plan.changes or control_changed, replaces=replaces, delete_before_replace=False)

    # ------------------------------------------------------------ online
    def create(self, props: dict) -> CreateResult:
        desired = self._wire(props)
        allow_loss = bool(props.get("allowDataLoss"))
        renamed_from = props.get("renamedFrom")

        async def create(c: JetStreamClient):
            if renamed_from:
                await _retire_renamed_stream(c, renamed_from, desired, allow_loss)
            return await _create_or_adopt_stream(c, desired, allow_loss, guard_limits=self.GUARD_LIMITS,
                                                 keep=self._keep(props))
        info, removed = self._client().run(create)
        return CreateResult(desired["name"], self._outs(props, info, removed))

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        desired = self._wire(news)
        allow_loss = bool(news.get("allowDataLoss"))

        async def apply(c: JetStreamClient):
            current = await c.stream_info(desired["name"])
            if current is None:  # gone since the refresh: not made again behind the user's back
                raise StreamVanished(decisions.vanished_stream(desired["name"], olds.get("created")).reason)
            return await _update_stream(c, current, keep_from(desired, current["config"], self._keep(news)), allow_loss,
                                        guard_limits=self.GUARD_LIMITS)
        info, removed = self._client().run(apply)
        return UpdateResult(self._outs(news, info, removed))

    def read(self, id_: str, props: dict) -> ReadResult:
        info = self._read_info(stream_where(id_), lambda c: c.stream_info(id_), props)
        if info is KEEP_STATE:
            return _kept(id_, props)
        if info is None:
            return ReadResult("", {})
        inputs = {"name": id_, **stream_declaration(info["config"]),
                  **{k: props[k] for k in ("allowDataLoss", "renamedFrom", "jetstreamServers") if k in props}}
        return ReadResult(id_, self._outs(inputs, info, props.get("messagesRemoved") or 0), inputs)

    def delete(self, id_: str, props: dict) -> None:
        allow_loss = bool(props.get("allowDataLoss"))
        created = props.get("created")

        async def remove(c: JetStreamClient):
            decision = decisions.stream_delete(await c.stream_info(id_), created, allow_loss)
            if decision.action == decisions.LEAVE:
                return
            _carry_out_refusal(decision)
            await c.delete_stream(id_)
            if decision.losses:
                _say(f"stream {id_!r}: deleted with {decision.losses[0]} (allowDataLoss)")
        self._client().run(remove)

    @staticmethod
    def _outs(inputs: dict, info: dict, removed: int = 0) -> dict:
        applied = normalize_stream(_strip_server_metadata(info["config"]))
        return {**inputs, "created": info.get("created"), "config": applied, "messagesRemoved": removed}


def lowered_limits_note(name: str, old: dict, new: dict, allow_loss: bool, what: str = "messages") -> str | None:
    """What preview says of a tightened limit: it may delete what the stream holds, which only `up` can count."""
    lowered = lowered_limits(old, new)
    if not lowered:
        return None
    limits = ", ".join(LIMIT_NAMES[k] for k in lowered)
    then = ("they will be deleted (allowDataLoss: true)" if allow_loss else
            "`pulumi up` counts them against the live stream and refuses unless the declaration sets allowDataLoss: "
            "true")
    return f"{stream_where(name)}: lowering {limits} may delete {what} it holds beyond the new limit; {then}"


async def _limit_facts(c: JetStreamClient, name: str, desired: dict, lowered: list[str], now: datetime) -> dict:
    """What `limit_losses` needs beyond the stream's info, asked of the server only for the limits that tighten."""
    facts: dict = {}
    if "max_msgs_per_subject" in lowered:
        info = await c.request(f"$JS.API.STREAM.INFO.{name}", {"subjects_filter": ">"})
        facts["subject_counts"] = (info.get("state") or {}).get("subjects") or {}
    if "max_age" in lowered:
        cutoff = now - timedelta(microseconds=desired["max_age"] // 1000)
        try:
            msg = await c.request(f"$JS.API.STREAM.MSG.GET.{name}", {"start_time": canonical_time(cutoff)})
            facts["first_seq_after_cutoff"] = msg["message"]["seq"]
        except JetStreamApiError as exc:
            if exc.err_code != NO_MESSAGE_FOUND:
                raise
    return facts


async def _update_stream(c: JetStreamClient, current: dict, desired: dict, allow_loss: bool, *,
                         guard_limits: str = "messages") -> tuple[dict, int]:
    """An in-place update, refused when the server would apply it by dropping messages nobody asked to drop: a
    tightened limit that removes what the stream holds now (counted from its state), or a switch to interest
    retention; returns the new info and how many messages the update removed. `guard_limits` says what the data
    is (buckets: "keys and revisions", "objects")."""
    name = desired["name"]
    cur_cfg = current["config"]
    lowered = lowered_limits(cur_cfg, desired)
    losses = []
    if lowered and (current.get("state") or {}).get("messages"):
        now = datetime.now(UTC)
        facts = await _limit_facts(c, name, desired, lowered, now)
        losses = limit_losses(current, desired, now=now, **facts)
    interest_loss = None
    if cur_cfg.get("retention", "limits") == "limits" and desired.get("retention") == "interest":
        interest_loss = interest_conversion_loss(current, await c.consumer_infos(name))
    _carry_out_refusal(decisions.stream_update(name, losses, interest_loss, allow_loss, guard_limits))
    before = (current.get("state") or {}).get("messages", 0)
    info = await c.update_stream(_mark(desired))
    removed = max(0, before - (info.get("state") or {}).get("messages", 0))
    if removed:
        tightened = ", ".join(LIMIT_NAMES[k] for k in lowered) or "retention"
        _say(f"stream {name!r}: the update ({tightened}) removed {removed} messages"
             + (" (allowDataLoss)" if allow_loss else ""))
    return info, removed


async def _mirror_direct_from_origin(c: JetStreamClient, desired: dict) -> dict:
    """A mirror's mirrorDirect as the server would inherit it from its origin (in pedantic mode it refuses anything
    else: stream.go, "origin stream has direct get set, mirror has it disabled")."""
    mirror = desired.get("mirror") or {}
    if not mirror.get("name") or (mirror.get("external") or {}).get("api"):
        return desired
    origin = await c.stream_info(mirror["name"])
    if origin is None or not origin["config"].get("allow_direct"):
        return desired
    return {**desired, "mirror_direct": True}


async def _subjects_taken(c: JetStreamClient, desired: dict, exc: JetStreamApiError) -> RuntimeError:
    """Words for 10065 on create: which stream holds the subjects, and the rename it may be."""
    for info in await c.stream_infos():
        other = info["config"]["name"]
        for mine in desired.get("subjects") or []:
            for theirs in info["config"].get("subjects") or []:
                if other != desired["name"] and subjects_overlap(mine, theirs):
                    return SubjectsTaken(
                        f"{stream_where(desired['name'])}: its subject {mine!r} overlaps {theirs!r} of stream {other!r} "
                        f"on the server ({exc}). If this is {other!r} renamed, declare renamedFrom: {other} on "
                        f"{desired['name']!r}: the old stream then goes first, under the data-loss rules (two streams "
                        "cannot hold one subject, and Pulumi creates before it deletes). Otherwise change the subjects "
                        f"or remove {other!r}. Nothing was changed")
    return exc


async def _create_or_adopt_stream(c: JetStreamClient, desired: dict, allow_loss: bool, *,
                                  guard_limits: str = "messages", keep: tuple[str, ...] = ()) -> tuple[dict, int]:
    name = desired["name"]
    if "mirror_direct" in keep:
        desired = await _mirror_direct_from_origin(c, desired)
    try:  # the common case in one round trip; an identical stream of ours is a success too
        return await c.create_stream(_mark(desired)), 0
    except JetStreamApiError as exc:
        if exc.err_code == STREAM_SUBJECT_OVERLAP:
            raise await _subjects_taken(c, desired, exc) from None
        # The server checks the storage reservation before it looks for the stream: re-creating an existing
        # stream whose maxBytes is more than half its store is refused as insufficient storage (10047), not as
        # a name in use. Either way, look for the stream.
        if exc.err_code not in (STREAM_NAME_IN_USE, INSUFFICIENT_STORAGE):
            raise
        refused = exc
    info = await c.stream_info(name)
    if info is None:
        if refused.err_code == INSUFFICIENT_STORAGE:
            raise refused
        return await c.create_stream(_mark(desired)), 0  # deleted in between
    desired = keep_from(desired, info["config"], keep)
    plan = plan_stream_change(info["config"], desired)
    decision = decisions.existing_stream(info, plan, allow_loss)
    if decision.action == decisions.UPDATE:
        return await _update_stream(c, info, desired, allow_loss, guard_limits=guard_limits)
    _carry_out_refusal(decision)
    return await _replace_stream(c, info, desired, plan.replace_reasons)


# The server's answers to an in-place update of a field it cannot change (nats-server stream.go,
# configUpdateCheckLocked): reaching one of them means the new config passed every other check.
_IMMUTABLE_UPDATE_ERRORS = ("can not change storage type", "can not change retention policy", "can not unseal",
                            "can not cancel deny", "mirror configuration can not be updated",
                            "message TTL status can not be disabled", "can not change message counter",
                            "message schedules can not be disabled", "can not change persist mode")


async def _preflight_replacement(c: JetStreamClient, desired: dict,
                                 consumers: list[dict]) -> dict | None:
    """Ask the server everything that can be asked before the old stream is deleted. Returns the updated
    info when the server turns out to accept the change in place (nothing to replace), else None; raises
    ReplacementRefused with the reason when the replacement could not complete."""
    name = desired["name"]
    try:
        return await c.update_stream(_mark(desired))
    except JetStreamApiError as exc:
        if not any(phrase in exc.description for phrase in _IMMUTABLE_UPDATE_ERRORS):
            raise ReplacementRefused(f"stream {name!r}: the server refuses the new config: {exc}. Nothing was "
                                     "changed") from None
    for other in await c.stream_infos():
        other_name = other["config"]["name"]
        if other_name == name:
            continue
        for mine in desired.get("subjects") or []:
            for theirs in other["config"].get("subjects") or []:
                if subjects_overlap(mine, theirs):
                    raise ReplacementRefused(
                        f"stream {name!r}: cannot be replaced: its subject {mine!r} overlaps {theirs!r} of stream "
                        f"{other_name!r} on the server (JetStream error 10065). Nothing was changed")
    context = StreamContext.of(desired, max_replicas=desired.get("num_replicas", 1))
    carried = [_carried_consumer(ci["config"]) for ci in consumers]
    for config in carried:
        try:
            check_consumer_rules(config, context)
        except RuleBroken as exc:
            raise ReplacementRefused(
                f"stream {name!r}: cannot be replaced: its {consumer_where(name, config['durable_name'])} would not "
                f"fit the new stream ({exc.key}: {exc.problem}). Nothing was changed; change or remove the "
                "consumer in the same declaration") from None
    if desired.get("retention") == "workqueue":
        clash = check_workqueue_partition([(cfg["durable_name"], cfg) for cfg in carried])
        if clash:
            raise ReplacementRefused(
                f"stream {name!r}: cannot be replaced: consumers {clash[0]!r} and {clash[1]!r} overlap, which a "
                "workqueue stream refuses. Nothing was changed")
    return None


async def _replace_stream(c: JetStreamClient, info: dict, desired: dict, reasons: tuple[str, ...]) -> tuple[dict, int]:
    name = desired["name"]
    consumers = [ci for ci in await c.consumer_infos(name) if _is_managed(ci["config"])]
    updated = await _preflight_replacement(c, desired, consumers)
    if updated is not None:
        return updated, 0
    lost = (info.get("state") or {}).get("messages", 0)
    await c.delete_stream(name)
    try:
        created = await c.create_stream(_mark(desired))
        for ci in consumers:  # carry the managed consumers over; their resources stay as they are
            await c.put_consumer(name, _carried_consumer(ci["config"]), "create")
    except Exception as exc:
        try:
            await _restore_stream(c, info, consumers)
        except Exception as restore_exc:
            raise ReplacementFailed(
                f"stream {name!r}: the server refused the replacement halfway ({exc}) and putting the old stream "
                f"back failed too ({restore_exc}). Recreate it from its last backup (python -m streams restore "
                f"{name} …) and run `pulumi refresh`") from exc
        raise ReplacementFailed(
            f"stream {name!r}: the server refused the replacement halfway ({exc}); the old stream's config and "
            f"its {len(consumers)} consumers were put back"
            + (f", its {lost} messages are gone (allowDataLoss)" if lost else "") + ". Fix the declaration and "
            "run `pulumi up` again") from exc
    if lost:
        _say(f"stream {name!r}: replaced ({'; '.join(reasons)}); {lost} messages were deleted (allowDataLoss)")
    return created, lost


async def _restore_stream(c: JetStreamClient, info: dict, consumers: list[dict]) -> None:
    name = info["config"]["name"]
    await c.delete_stream(name)
    await c.request(f"$JS.API.STREAM.CREATE.{name}", _strip_server_metadata(info["config"], keep_mark=True))
    for ci in consumers:
        await c.put_consumer(name, _carried_consumer(ci["config"]), "create")


async def _retire_renamed_stream(c: JetStreamClient, old: str, desired: dict, allow_loss: bool) -> None:
    """A rename: the old stream goes first (both cannot capture the same subjects), under the data-loss rules."""
    info = await c.stream_info(old)
    if info is None:
        return
    if not _is_managed(info["config"]):
        raise AdoptionRefused(f"stream {desired['name']!r}: renamedFrom names {old!r}, which was not made by this "
                              "stack; remove it yourself (after a backup) if that is what you want")
    loss = stream_message_loss(info)
    if loss and not allow_loss:
        raise _refuse_loss(
            stream_where(desired["name"]), [f"{loss} of stream {old!r}"], f"rename {old!r}",
            f"A stream cannot be renamed in place. To keep the data, back it up and restore it under the new name "
            f"(python -m streams backup {old} … then restore {old} --as {desired['name']}); to drop it, set "
            "allowDataLoss: true on the stream")
    await c.delete_stream(old)
    if loss:
        _say(f"stream {old!r}: deleted for the rename to {desired['name']!r}, with {loss} (allowDataLoss)")


def _carried_consumer(config: dict) -> dict:
    keep = {k: v for k, v in config.items() if k not in ("name",)}
    keep["metadata"] = {k: v for k, v in (keep.get("metadata") or {}).items() if not k.startswith("_nats.")}
    return keep


# ================================================================ consumers

def _stream_context(props: dict) -> StreamContext | None:
    """The stream as the consumer's inputs describe it; None while any of it is unknown (preview)."""
    keys = ("streamSubjects", "streamReplicas", "streamRetention", "streamConsumerLimits")
    if any(_has_unknown(props.get(k)) for k in keys):
        return None
    limits = props.get("streamConsumerLimits") or {}
    return StreamContext(tuple(props.get("streamSubjects") or ()), _number_or(props.get("streamReplicas"), 1),
                         props.get("streamRetention") or "limits", _number_or(limits.get("maxAckPending"), 0),
                         _number_or(limits.get("inactiveThreshold"), 0))


class ConsumerProvider(_JetStreamProvider):
    def _wire(self, props: dict, *, creating: bool | None = None) -> dict:
        return consumer_wire_config(props["stream"], props["name"], _declared(props, CONSUMER_KEYS + CONSUMER_CONTROL_KEYS),
                                    context=_stream_context(props))

    def _check_known(self, props: dict, unknown: set[str]) -> None:
        if unknown & set(CONSUMER_KEYS + CONSUMER_CONTROL_KEYS + ("stream", "name")):
            where = consumer_where(str(props.get("stream")), str(props.get("name")))
            check_declared_values(where, {k: v for k, v in _declared(props, CONSUMER_KEYS).items() if k not in unknown},
                                  kind="consumer")
        else:  # only the stream's context is unknown: the consumer's own rules still apply
            self._wire(props)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        for key in ("stream", "name"):
            if olds.get(key) != news.get(key):
                return DiffResult(changes=True, replaces=[key], delete_before_replace=False)
        unknown = [k for k in CONSUMER_KEYS if _has_unknown(news.get(k))]
        if unknown:
            immutable = {_camel(CONSUMER_FIELDS, k) for k, _ in CONSUMER_IMMUTABLE} | {"deliverSubject"}
            return DiffResult(changes=True, replaces=[k for k in unknown if k in immutable],
                              delete_before_replace=False)
        plan = plan_consumer_change(self._wire(olds), self._wire(news))
        replaces = [_camel(CONSUMER_FIELDS, k) for k in plan.replace_keys]
        control_changed = any(bool(olds.get(k)) != bool(news.get(k)) for k in ("allowDataLoss", "streamAllowDataLoss"))
        return DiffResult(changes=plan.changes or control_changed or _stream_recreated(olds, news), replaces=replaces,
                          delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        desired = self._wire(props)
        stream = props["stream"]
        allow_loss = bool(props.get("allowDataLoss"))
        info = self._client().run(lambda c: _create_or_adopt_consumer(c, stream, desired, allow_loss))
        return CreateResult(f"{stream}/{props['name']}", self._outs(props, info))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        desired = self._wire(news)
        stream = news["stream"]

        async def apply(c: JetStreamClient):
            try:
                return await c.put_consumer(stream, _mark(desired), "update")
            except JetStreamApiError as exc:
                if exc.err_code != CONSUMER_MISSING:
                    raise
            return await c.put_consumer(stream, _mark(desired), "create")  # gone since the last refresh
        return UpdateResult(self._outs(news, self._client().run(apply)))

    def read(self, id_: str, props: dict) -> ReadResult:
        stream, _, name = id_.partition("/")
        info = self._read_info(consumer_where(stream, name), lambda c: c.consumer_info(stream, name), props)
        if info is KEEP_STATE:
            return _kept(id_, props)
        if info is None:  # the consumer, or its whole stream, is gone: the next `up` creates it again
            return ReadResult("", {})
        inputs = {"stream": stream, "name": name, **consumer_declaration(info["config"]),
                  **{k: props[k] for k in CONTEXT_KEYS + CONSUMER_CONTROL_KEYS if k in props}}
        inputs.pop("durableName", None)
        return ReadResult(id_, self._outs(inputs, info), inputs)

    def delete(self, id_: str, props: dict) -> None:
        stream, _, name = id_.partition("/")
        allow_loss = bool(props.get("allowDataLoss") or props.get("streamAllowDataLoss"))

        async def remove(c: JetStreamClient):
            info = await c.consumer_info(stream, name)
            same = info is not None and _same_consumer(info, props)
            retention = await _retention(c, stream) if same else "limits"
            decision = decisions.consumer_delete(stream, info, same, retention, allow_loss)
            if decision.action == decisions.LEAVE:
                return  # gone, or replaced by a newer consumer of this name: keep it
            _carry_out_refusal(decision)
            await c.delete_consumer(stream, name)
        self._client().run(remove)

    @staticmethod
    def _outs(inputs: dict, info: dict) -> dict:
        return {**inputs, "created": info.get("created"),
                "config": normalize_consumer(_strip_server_metadata(info["config"]))}


def _stream_recreated(olds: dict, news: dict) -> bool:
    """The consumer's stream is a new one (recreated after an out-of-band delete, or replaced): the consumer
    is updated, which makes it again if it went with the old stream. Unknown or absent at preview: no."""
    old, new = olds.get("streamCreated"), news.get("streamCreated")
    return isinstance(old, str) and isinstance(new, str) and not _has_unknown(new) and old != new


def _same_consumer(info: dict, props: dict) -> bool:
    """Whether the consumer on the server is the one this resource's state describes (not a newer one
    that replaced it). State written before consumers recorded `created` is compared by config."""
    if props.get("created"):
        return info.get("created") == props["created"]
    recorded = props.get("config")
    if not isinstance(recorded, dict):
        return True
    return plan_consumer_change(recorded, info["config"]).action != "replace"


async def _create_or_adopt_consumer(c: JetStreamClient, stream: str, desired: dict, allow_loss: bool) -> dict:
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
    retention = await _retention(c, stream) if plan.action == "replace" else "limits"
    decision = decisions.existing_consumer(stream, info, plan, retention, allow_loss)
    if decision.action == decisions.UPDATE:  # the server can change it in place: keep its progress
        return await c.put_consumer(stream, _mark(desired), "update")
    _carry_out_refusal(decision)
    await c.delete_consumer(stream, name)
    created = await c.put_consumer(stream, _mark(desired), "create")
    if decision.losses:
        _say(f"{consumer_where(stream, name)}: recreated; lost {'; and '.join(decision.losses)} (allowDataLoss)")
    return created


async def _retention(c: JetStreamClient, stream: str) -> str:
    info = await c.stream_info(stream)
    return ((info or {}).get("config") or {}).get("retention", "limits")
