"""Users and least-privilege permissions, generated from what the stack declares (its streams and consumers).

The user declares application users by what they do, not in NATS permission syntax:

    homelab-nats:auth:
      enabled: true
      users:
        iot-devices: {publish: ["sensors.>"]}           # publish, with JetStream acks
        analytics:   {consume: ["sensors/analytics"]}   # pull and ack one declared consumer

and the project adds the users its own parts need: `admin` (the stream provider and restores; its name is
`homelab-nats:natsUser` when set), `nats-box` (the operator's shell, every permission, its own password),
`backup` (snapshots of the backed-up streams only) and `monitor` (read-only JetStream information, for
`python -m streams check`). The Prometheus exporter needs no user: it
reads the HTTP monitoring port, which nats-server does not authenticate.

Each role is expanded here into the exact subjects it needs. Sources read for them:
- JetStream API subjects and the ACL groups: nats-io/nats.docs using-nats/jetstream/nats_api_reference.md
  ("ACLs", "Acknowledging Messages", "Fetching The Next Message From a Pull-based Consumer");
- a publish-with-ack is a request: nats-py 2.16 `nats/aio/client.py` (`request` subscribes once to
  `<inbox prefix>.<nuid>.*`), so a publisher needs its inbox and nothing else to receive the ack;
- a pull fetch: nats-py `js/client.py` (`pull_subscribe_bind`: `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`
  with a reply on a new inbox; `pull_subscribe` asks `$JS.API.CONSUMER.INFO.<stream>.<consumer>` first); an ack
  publishes to the message's reply subject `$JS.ACK.<stream>.<consumer>.…`;
- `nats stream backup` (natscli v0.4.0 in nats-box 0.19.7, cli/stream_command.go backupAction: loadStream, then
  jsm.go v0.4.1 snapshots.go: `$JS.API.STREAM.SNAPSHOT.<stream>` with a NewRespInbox deliver subject, and a
  reply to each chunk's `$JS.SNAPSHOT.ACK.<stream>.…`).

Replies come back on inboxes. Every restricted user has its own inbox prefix, `_INBOX_<user>`, and may only
subscribe below it: with the shared `_INBOX.>` any user could read the messages another user's fetch or
request receives. Clients set the prefix (nats-py `inbox_prefix=`, nats.go `nats.CustomInboxPrefix`, the nats
CLI `--inbox-prefix`); each user's Kubernetes Secret carries it as NATS_INBOX_PREFIX.

Accounts (issue 22). nats-server checks a publish against its subject, never its reply, and JetStream acts on
whatever reaches its API subjects in the account that holds the streams: a user there that may ask anything the
server answers (a publish with an ack, a direct get, a fetch) can aim the answer at `$JS.API.STREAM.DELETE.x` by
naming it as the reply. So with auth on:
- the streams live in account `STREAMS` (JetStream on), with the project's operator users only: admin, nats-box
  and backup. A snapshot is answered only inside the stream's own account (nats-server
  server/jetstream_api.go getRequestInfo takes the requester's account; server/client.go processServiceImport
  names the exporter as `ci.Service` only for an import of an import), so backup cannot leave it: the three
  passwords are operator credentials, kept in the NATS namespace, never handed to an application;
- `monitor` has an account of its own, importing from the system account the JSZ of `STREAMS` (every stream's and
  consumer's config and state, no message): the system account exports it to the monitor's account alone;
- every application user gets an account of its own, without JetStream, that imports exactly the services its
  role needs from `STREAMS`, which exports each to the accounts that import it and no other. An imported
  service's reply is remapped to a `_R_.` subject of the importing account (server/accounts.go
  addRespServiceImport), so whatever reply a user names, the answer lands in its own account, where nothing acts
  on JetStream or reaches another user.
What an application role imports, and why each works across accounts (measured on the pinned 2.15.1 and kept in
tests/stack/test_accounts.py): a publish (the stream's subscription answers the ack); a pull consumer's
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` (the consumer's own subscription; response_type stream: one
answer per message) and its `$JS.ACK.<stream>.<consumer>.>`; a push consumer's delivery subject (a stream
export, its subject fixed by the catalog) and `$JS.FC.<stream>.<consumer>.>`; a bucket's direct gets (the
stream's subscription, streamed for batches) and, to write a key, `$KV.<bucket>.>`. Everything JetStream's API
answers (stream and consumer info, consumer creation, purge) is answered in the requester's account, which has no
JetStream (10039): application users get none of it, so nats-py's `js.key_value()` (a stream info first),
`kv.watch()`, `kv.history()` and the object store's reads (ordered consumers) are not theirs. The README shows
the direct gets that replace them.

With auth off every client is in the global account `$G`, where streams made before auth existed are. The
account the streams belong in is `jetstream_account`; a standalone server's store is moved to it while the
server is stopped (render/settle_account.py).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stack.errors import SettingsError, config_key
from stack.subjects import name_problem, subject_is_subset, subject_problem

ADMIN = "admin"
BACKUP = "backup"
MONITOR = "monitor"
NATS_BOX = "nats-box"
# A cluster's operator user, in the system account: removing a peer ($JS.API.SERVER.REMOVE) is answered there
# only (clustering.md). Its password is in the Secret nats-user-sys; nothing else logs in as it.
SYSTEM = "sys"
SYSTEM_ACCOUNT = "SYS"
# With auth off, a cluster's nats.conf still has the system user; the server then wants every client to log in,
# so clients without credentials become this user of the global account (no_auth_user), as they were before.
ANONYMOUS = "anonymous"
BUILT_IN_USERS = (BACKUP, MONITOR, NATS_BOX, SYSTEM, ANONYMOUS)
# User names: a Kubernetes Secret is named nats-user-<name>, and the name is a subject token in the inbox.
# A user's name is a Kubernetes Secret name (nats-user-<name>) and a subject token (its inbox prefix).
USER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
_USER_KEYS = ("publish", "consume", "keyValues", "objectStores", "namespace", "mqtt", "subscribe")
# What an MQTT device may do: publish to topics and subscribe to topics (commands). It speaks MQTT only.
_MQTT_KEYS = ("publish", "subscribe", "namespace", "mqtt")
# nats-server's connection types (server/auth.go jwt.ConnectionTypeMqtt): an MQTT device's user is refused on the
# NATS port.
MQTT_ONLY = ("MQTT",)
ACCESS = ("read", "write")

# The account that holds JetStream and the streams when auth is on, and the global account they are in otherwise.
STREAMS_ACCOUNT = "STREAMS"
GLOBAL_ACCOUNT = "$G"

# The monitor reads JetStream's information from the system account: the JSZ of the streams' account, exported to
# the monitor's account alone (streams/cli/view.py). `$JS.API.INFO` is answered in its own account, with 10039
# ("JetStream not enabled for account"), which is how check and report know to read the JSZ.
MONITOR_JSZ = f"$SYS.REQ.ACCOUNT.{STREAMS_ACCOUNT}.JSZ"
MONITOR_SUBJECTS = ("$JS.API.INFO", MONITOR_JSZ)


@dataclass(frozen=True)
class AppUser:
    """An application user as declared: subjects it publishes to, stream/consumer pairs it consumes, and the
    key-value buckets and object stores it reads or writes."""
    name: str
    publish: tuple[str, ...] = ()
    consume: tuple[tuple[str, str], ...] = ()
    key_values: tuple[tuple[str, str], ...] = ()      # (bucket, "read" | "write")
    object_stores: tuple[tuple[str, str], ...] = ()
    namespace: str | None = None   # where its Secret goes (default: the NATS namespace)
    mqtt: bool = False             # an MQTT device: connects over MQTT only, may subscribe to `subscribe`
    subscribe: tuple[str, ...] = ()


@dataclass(frozen=True)
class Auth:
    enabled: bool = False
    users: tuple[AppUser, ...] = ()


def jetstream_account(auth_enabled: bool) -> str:
    """The account the streams belong in: `STREAMS` with auth on, the global account without."""
    return STREAMS_ACCOUNT if auth_enabled else GLOBAL_ACCOUNT


@dataclass(frozen=True)
class Import:
    """A subject an application's account imports from `STREAMS`: a service (its requests go there, the answers
    come back on a `_R_.` reply), or a stream (messages published there are delivered here)."""
    kind: str               # "service" | "stream"
    subject: str
    streamed: bool = False  # a service answering with several messages (response_type: stream)
    account: str = STREAMS_ACCOUNT   # the exporting account: the streams', or the system account (monitor)


@dataclass(frozen=True)
class ServerUser:
    """One user as the server sees it: its name and permissions (None: everything), where its Secret goes, and,
    for an application user, what its own account imports (None: an operator user, in `STREAMS`)."""
    name: str
    permissions: Mapping[str, Any] | None = field(default=None, hash=False)
    namespace: str | None = None   # None: the NATS namespace
    imports: tuple[Import, ...] | None = None
    connection_types: tuple[str, ...] | None = None   # allowed_connection_types; None: all

    @property
    def inbox_prefix(self) -> str | None:
        return None if self.permissions is None else inbox_prefix(self.name)

    @property
    def account(self) -> str:
        return STREAMS_ACCOUNT if self.imports is None else self.name


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


def secret_name(user: str) -> str:
    return f"nats-user-{user}"


def _key(path: str) -> str:
    return config_key(f"auth.{path}")


def _list_of_text(value: Any, key: str, example: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"{key}: expected a list such as {example}, got {value!r}")
    return tuple(value)


def parse_auth(raw: Any, *, admin: str = ADMIN) -> Auth:
    """`homelab-nats:auth` as typed settings. Names and shapes only: what the names refer to is checked against
    the catalog by `plan_users`."""

    if raw is None:
        return Auth()
    if not isinstance(raw, Mapping) or set(raw) - {"enabled", "users"}:
        raise SettingsError(f"{config_key('auth')}: expected {{enabled, users}}, got {raw!r}")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise SettingsError(f"{_key('enabled')}: expected true or false, got {enabled!r}")
    users_raw = raw.get("users") or {}
    if not isinstance(users_raw, Mapping):
        raise SettingsError(f"{_key('users')}: expected a map of user names to {{publish, consume}}, "
                            f"got {users_raw!r}")
    users = []
    for name, decl in users_raw.items():
        where = _key(f"users.{name}")
        if not isinstance(name, str) or not USER_NAME.match(name):
            raise SettingsError(f"{where}: user names are 1-42 lowercase letters, digits and '-' (they name a "
                                "Kubernetes Secret and an inbox prefix)")
        if name in (admin, *BUILT_IN_USERS):
            raise SettingsError(f"{where}: {name!r} is a user this project makes itself (admin: {admin!r}, "
                                f"{', '.join(BUILT_IN_USERS)}); choose another name")
        decl = decl or {}
        if not isinstance(decl, Mapping) or set(decl) - set(_USER_KEYS):
            raise SettingsError(f"{where}: expected {{publish: [subjects], consume: [stream/consumer], keyValues: "
                                f"{{bucket: read|write}}, objectStores: {{bucket: read|write}}, namespace}}, got {decl!r}")
        publish = _list_of_text(decl.get("publish"), f"{where}.publish", '["sensors.>"]')
        for subject in publish:
            problem = subject_problem(subject)
            if problem:
                raise SettingsError(f"{where}.publish: {problem}")
        pairs = []
        for pair in _list_of_text(decl.get("consume"), f"{where}.consume", '["sensors/analytics"]'):
            stream, _, consumer = pair.partition("/")
            if not consumer or name_problem(stream) or name_problem(consumer):
                raise SettingsError(f"{where}.consume: {pair!r} is not STREAM/CONSUMER (e.g. \"sensors/analytics\")")
            pairs.append((stream, consumer))
        stores = {}
        for key in ("keyValues", "objectStores"):
            value = decl.get(key) or {}
            if not isinstance(value, Mapping) or not all(isinstance(b, str) and a in ACCESS for b, a in value.items()):
                raise SettingsError(f"{where}.{key}: expected a map of bucket names to read or write, e.g. "
                                    f"{{device-config: read}}; got {value!r}")
            stores[key] = tuple(value.items())
        mqtt = decl.get("mqtt", False)
        if not isinstance(mqtt, bool):
            raise SettingsError(f"{where}.mqtt: expected true (an MQTT device) or false, got {mqtt!r}")
        subscribe = _list_of_text(decl.get("subscribe"), f"{where}.subscribe", '["commands.kitchen.>"]')
        if mqtt:
            other = [k for k in decl if k not in _MQTT_KEYS]
            if other:
                raise SettingsError(f"{where}.{other[0]}: an MQTT device publishes and subscribes to topics only "
                                    "(publish, subscribe); MQTT has no consumers or buckets. Remove it, or declare "
                                    "another user for a NATS application")
        elif subscribe:
            raise SettingsError(f"{where}.subscribe: only an MQTT device (mqtt: true) subscribes to subjects: a NATS "
                                "application reads a stream through a declared consumer (consume)")
        for subject in subscribe:
            problem = subject_problem(subject)
            if problem or subject.startswith("$"):
                raise SettingsError(f"{where}.subscribe: {problem or f'{subject!r} is a server subject'}")
        if not publish and not pairs and not any(stores.values()) and not subscribe:
            raise SettingsError(f"{where}: give it something to do: publish (subjects), consume (stream/consumer "
                                "pairs), keyValues or objectStores" + ("; or subscribe" if mqtt else ""))
        namespace = decl.get("namespace")
        if namespace is not None and (not isinstance(namespace, str)
                                      or not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", namespace)):
            raise SettingsError(f"{where}.namespace: {namespace!r} is not a namespace name")
        users.append(AppUser(name, publish, tuple(pairs), stores["keyValues"], stores["objectStores"], namespace,
                             mqtt, subscribe))
    return Auth(enabled=enabled, users=tuple(users))


def _permissions(publish: Iterable[str], subscribe: Iterable[str]) -> dict:
    return {"publish": {"allow": list(dict.fromkeys(publish))}, "subscribe": {"allow": list(dict.fromkeys(subscribe))}}


def app_user_access(user: AppUser, catalog) -> tuple[dict, tuple[Import, ...]]:
    """What an application user may publish and subscribe to, and what its account imports for it: one list of
    grants, so that a permission never comes without the import that makes it work, or the reverse."""
    consumers = {(spec.name, c.name): c for spec in catalog for c in spec.consumers}
    grants: list[tuple[str, Import]] = [("publish", Import("service", s)) for s in _widest(user.publish)]
    for stream, consumer in user.consume:
        deliver = consumers[(stream, consumer)].config.get("deliver_subject")
        if deliver:  # a push consumer: its delivery subject, and replies to the server's flow control
            grants += [("subscribe", Import("stream", deliver)),
                       ("publish", Import("service", f"$JS.FC.{stream}.{consumer}.>"))]
        else:        # a pull consumer: the fetch
            grants.append(("publish", Import("service", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                                             streamed=True)))
        grants.append(("publish", Import("service", f"$JS.ACK.{stream}.{consumer}.>")))
    for bucket, access in user.key_values:
        grants += _direct_gets(f"KV_{bucket}")
        if access == "write":
            grants.append(("publish", Import("service", f"$KV.{bucket}.>")))
    for bucket, _ in user.object_stores:
        grants += _direct_gets(f"OBJ_{bucket}")
    publish = [i.subject for verb, i in grants if verb == "publish"]
    subscribe = [f"{inbox_prefix(user.name)}.>"] + [i.subject for verb, i in grants if verb == "subscribe"]
    return _permissions(publish, subscribe), tuple(dict.fromkeys(i for _, i in grants))


def mqtt_device_permissions(user: AppUser) -> dict:
    """An MQTT device's permissions (nats-server at 2.15, read in its source):
    - publish: its subjects; a QoS 1 or retained publish is stored by the server itself (server/mqtt.go), and
      retained messages are kept only while their publisher may still publish there (mqttCheckPubRetainedPerms);
    - subscribe: its subjects, and for each one ending in `.>` the level above it: an MQTT `a/b/#` matches `a/b`
      too, so the server subscribes to both (server/mqtt.go processSubs, mqttNeedSubForLevelUp), and refuses the
      whole subscription when the parent is not allowed (measured on 2.15.1);
    - nothing for QoS 1 deliveries: the consumers' delivery subjects `$MQTT.sub.<nuid>` are allowed implicitly for
      MQTT connections (server/client.go canSubscribeInternal), and an MQTT client may not subscribe to `$MQTT.`
      subjects itself (processSubs: "Do not allow MQTT clients to subscribe directly to internal subjects");
    - its inbox, as every user has, which MQTT never uses: an empty allow list would allow everything.
    MQTT 3.1.1, the only version nats-server speaks (mqttProtoLevel 4), has no reply subject, and the user may not
    connect over NATS (allowed_connection_types MQTT), so it never names a reply for the server to answer to."""
    subscribe = [f"{inbox_prefix(user.name)}.>"]
    for subject in _widest(user.subscribe):
        subscribe.append(subject)
        if subject.endswith(".>"):   # mqttNeedSubForLevelUp: more than one token, ending in .>
            subscribe.append(subject[:-2])
    return _permissions(_widest(user.publish), subscribe)


def app_user_permissions(user: AppUser, catalog) -> dict:
    """The subjects an application user needs for what it declared, and nothing more."""
    return app_user_access(user, catalog)[0]


def _widest(subjects: Iterable[str]) -> list[str]:
    """The subjects without those another one already covers: one account cannot import a subject twice."""
    subjects = list(dict.fromkeys(subjects))
    return [s for s in subjects if not any(o != s and subject_is_subset(s, o) for o in subjects)]


def _direct_gets(stream: str) -> list[tuple[str, Import]]:
    """Reading a bucket's messages by subject or sequence: the stream's direct get, answered by the stream's own
    subscription (so across accounts), streamed for batch and multi-last requests."""
    return [("publish", Import("service", f"$JS.API.DIRECT.GET.{stream}", streamed=True)),
            ("publish", Import("service", f"$JS.API.DIRECT.GET.{stream}.>", streamed=True))]


def backup_permissions(streams: Iterable[str]) -> dict:
    """`nats stream backup` and `python -m streams backup` of these streams: their info, the snapshot request,
    and the chunk acks. No restore, no delete, no messages."""
    publish = []
    for s in streams:
        publish += [f"$JS.API.STREAM.INFO.{s}", f"$JS.API.STREAM.SNAPSHOT.{s}", f"$JS.SNAPSHOT.ACK.{s}.>"]
    return _permissions(publish, [f"{inbox_prefix(BACKUP)}.>"])


MONITOR_IMPORTS = (Import("service", MONITOR_JSZ, streamed=True, account=SYSTEM_ACCOUNT),)


def monitor_permissions() -> dict:
    return _permissions(MONITOR_SUBJECTS, [f"{inbox_prefix(MONITOR)}.>"])


def plan_users(auth: Auth, catalog, backup_streams: Iterable[str], *, admin: str = ADMIN,
               buckets=(), mqtt_enabled: bool = False) -> tuple[ServerUser, ...]:
    """Every user of the server with its permissions, after checking each subject and consumer an application
    user names against the catalog (at preview: the server would accept a permission for a stream that does not
    exist, and the application would fail at run time)."""

    if not auth.enabled:
        return ()
    declared = {(spec.name, c.name) for spec in catalog for c in spec.consumers}
    stream_subjects = [(spec.name, s) for spec in catalog for s in spec.config.get("subjects", [])]
    # nats-box is the operator's shell (the guide's `kubectl exec … -- nats …`): every permission, but its own
    # user and password, so the provider's (natsPassword) never sits in a pod.
    users = [ServerUser(admin), ServerUser(NATS_BOX), ServerUser(BACKUP, backup_permissions(backup_streams)),
             ServerUser(MONITOR, monitor_permissions(), imports=MONITOR_IMPORTS)]
    for user in auth.users:
        where = _key(f"users.{user.name}")
        for subject in user.publish:
            if not any(subject_is_subset(subject, outer) for _, outer in stream_subjects):
                listed = ", ".join(f"{s} ({n})" for n, s in stream_subjects) or "none"
                raise SettingsError(f"{where}.publish: {subject!r} is not inside any declared stream's subjects "
                                    f"({listed}); messages published there would be stored nowhere. Use a subject "
                                    "a stream captures, or declare the stream")
        for stream, consumer in user.consume:
            if (stream, consumer) not in declared:
                known = ", ".join(f"{s}/{c}" for s, c in sorted(declared)) or "none"
                raise SettingsError(f"{where}.consume: {stream}/{consumer} is not a declared consumer (declared: "
                                    f"{known}); declare it under homelab-nats:streams.{stream}.consumers")
        for key, kind, pairs in (("keyValues", "keyValue", user.key_values),
                                 ("objectStores", "objectStore", user.object_stores)):
            declared_buckets = {b.name: b for b in buckets if b.kind.kind == kind}
            for bucket, access in pairs:
                if bucket not in declared_buckets:
                    raise SettingsError(f"{where}.{key}: {bucket!r} is not a declared bucket (declared: "
                                        f"{', '.join(sorted(declared_buckets)) or 'none'}); declare it under "
                                        f"homelab-nats:{key}")
                _check_bucket_grant(f"{where}.{key}.{bucket}", key, declared_buckets[bucket], access)
        if user.mqtt:
            if not mqtt_enabled:
                raise SettingsError(f"{where}.mqtt: the MQTT listener is off; turn it on with homelab-nats:mqtt.enabled "
                                    "(README, \"Devices over MQTT\")")
            # With the streams: an MQTT connection names no reply (above), and its QoS 1 publishes and subscriptions
            # need JetStream in its own account (server/mqtt.go: the $MQTT_* streams), which must be the streams'.
            users.append(ServerUser(user.name, mqtt_device_permissions(user), user.namespace,
                                    connection_types=MQTT_ONLY))
            continue
        permissions, imports = app_user_access(user, catalog)
        users.append(ServerUser(user.name, permissions, user.namespace, imports))
    return tuple(users)


def _check_bucket_grant(where: str, key: str, bucket, access: str) -> None:
    """What an application's account can be given of a bucket: reads are direct gets, which the bucket must allow;
    an object store cannot be written from outside `STREAMS` (replacing an object purges its old chunks, and a
    purge is JetStream's API, answered only there)."""
    if key == "objectStores" and access == "write":
        raise SettingsError(f"{where}: an application user can read an object store, not write it: replacing or "
                            "deleting an object purges its chunks through JetStream's API, which the server answers "
                            "only inside the streams' account, where any user could aim an answer at the API and "
                            "delete a stream (README, \"Users and permissions\"). Give it read, and upload from "
                            "nats-box (`nats object put`)")
    if not bucket.config.get("allow_direct"):
        raise SettingsError(f"{where}: reading the bucket from an application's account needs direct gets, and the "
                            f"bucket declares direct: false. Remove `direct: false` from homelab-nats:{key}."
                            f"{bucket.name}, or leave the user without it")
