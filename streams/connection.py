"""Where the provider connects: the NATS URL and credentials, from stack config and environment.

Precedence for the URL: the `NATS_URL` environment variable (for `kubectl port-forward` users),
then `homelab-nats:natsUrl`, then the load balancer's external URL. Credentials come only from
stack config secrets and are read in the provider's `configure`, never from resource inputs.
"""
from __future__ import annotations

import json
import os
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stack.errors import SettingsError, config_key
from stack.settings import load_settings
from stack.units import UnitError, parse_duration
from stack.urls import nats_url_problem, redact_url
from stack.users import ADMIN

DEFAULT_READY_TIMEOUT = 60.0
# How nats-server words a refused login (server/client.go authViolation, and the expiry messages).
AUTH_ERRORS = ("authorization violation", "authentication expired", "authentication timeout")


def is_auth_error(exc: BaseException) -> bool:
    return any(phrase in str(exc).lower() for phrase in AUTH_ERRORS)


async def quiet_error_cb(exc: Exception) -> None:
    """nats-py logs every connection error with a traceback by default; the callers report errors
    themselves, once, in words."""
# What the command-line tools say when the server they tried is not there.
POINT_ELSEWHERE = ("To use another server, pass --server (and --monitor for check) or set NATS_URL (and "
                   "NATS_MONITOR_URL); a running `make dev` of this checkout is found without either; for the cluster "
                   "from outside the LAN, `kubectl port-forward -n nats svc/nats 4222 8222`")


class CannotConnect(RuntimeError):
    """A command-line tool could not connect; the message says why and what to do (no password in it)."""


def login_from_environment(environ: dict | None = None) -> dict:
    """nats.connect options from NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX (the keys of a user's Secret,
    render/manifests.py user_secret) and NATS_CA, the first two and the last named as the nats CLI reads them."""
    env = os.environ if environ is None else environ
    opts: dict[str, Any] = {}
    if env.get("NATS_USER"):
        opts.update(user=env["NATS_USER"], password=env.get("NATS_PASSWORD", ""))
    if env.get("NATS_INBOX_PREFIX"):
        opts["inbox_prefix"] = env["NATS_INBOX_PREFIX"]
    if env.get("NATS_CA"):   # the CA that signed the server's certificate (the nats CLI's variable too)
        opts["tls"] = ssl.create_default_context(cafile=env["NATS_CA"])
    return opts


# Permission refusals the server sent each command-line connection. A refused publish is never answered, so the
# request only times out; these say why.
_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def refusals(nc) -> list[str]:
    return _REFUSALS.get(nc, []) if nc is not None else []


def describe_failure(nc, exc: BaseException) -> str:
    """Words for a failed NATS request: the server's permission refusal when there was one, else the error."""
    refused = refusals(nc)
    if refused:
        user = os.environ.get("NATS_USER") or "this user"
        return (f"the server refused it ({refused[-1]}): {user}'s permissions do not allow this; log in as a user "
                "whose do (the stack output `users` lists each user's permissions)")
    return f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"


# A command-line tool gives up on a server that does not answer the TCP connect or the TLS handshake within this.
CONNECT_TIMEOUT = 3.0


async def connect_once(server: str, timeout: float = 15.0):
    """The command-line tools' connection: one attempt, no reconnects, quiet, and a failure in words. The login
    is in the URL or in the environment (`login_from_environment`)."""
    import asyncio

    import nats

    refused: list[str] = []
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)
        if "permissions violation" in str(exc).lower():
            refused.append(str(exc).removeprefix("nats: "))
    try:
        # nats-py's first connect walks its server pool until every server has failed more than
        # max_reconnect_attempts times, sleeping reconnect_time_wait between rounds (nats/aio/client.py
        # _select_next_server; 0 means "never discard", the default 60 x 2 s): one retry, 0.2 s apart, so a server
        # that is down fails in well under a second instead of running into `timeout`.
        servers = [part.strip() for part in server.split(",") if part.strip()]   # a cluster: every node's URL
        nc = await asyncio.wait_for(nats.connect(servers, connect_timeout=CONNECT_TIMEOUT, allow_reconnect=False,
                                                 max_reconnect_attempts=1, reconnect_time_wait=0.2,
                                                 error_cb=on_error, **login_from_environment()), timeout)
        _REFUSALS[nc] = refused
        return nc
    except Exception as exc:
        if type(exc).__name__ == "NoServersError" and errors:
            exc = errors[-1]   # why the last attempt failed, not that the pool ran out
        if is_auth_error(exc):
            raise CannotConnect(f"NATS at {redact_url(server)} refused the credentials ({exc}); check the user and "
                                "password (NATS_USER and NATS_PASSWORD, or nats://USER:PASSWORD@HOST:4222)") from None
        raise CannotConnect(f"cannot connect to NATS at {redact_url(server)}: {type(exc).__name__}"
                            f"{': ' + str(exc) if str(exc) else ''}. {POINT_ELSEWHERE}") from None


def in_a_cluster(nc) -> bool:
    """Whether the connected server is part of a cluster: its INFO names the cluster then (nats-py keeps the INFO as
    `_server_info`)."""
    return bool((getattr(nc, "_server_info", None) or {}).get("cluster"))


async def close_quietly(nc) -> None:
    """Close a connection whose server may already be gone (nats-py then raises from close)."""
    import nats.errors

    try:
        await nc.close()
    except (OSError, nats.errors.Error):
        pass


@dataclass(frozen=True)
class ConnectionSettings:
    url: str | None
    url_source: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    credentials: str | None = field(default=None, repr=False)   # a .creds path, or its contents
    nkey_seed: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ready_timeout: float = DEFAULT_READY_TIMEOUT

    def require_url(self) -> str:
        if not self.url:
            raise SettingsError(
                "no NATS URL to manage streams with: the load balancer is off. Set "
                f"{config_key('natsUrl')} or the NATS_URL environment variable (e.g. `kubectl port-forward -n nats "
                "svc/nats 4222` and NATS_URL=nats://127.0.0.1:4222)")
        return self.url

    def connect_options(self) -> dict:
        """Keyword arguments for nats.connect (credentials included: never log this)."""
        opts: dict[str, Any] = {}
        if self.user:
            opts["user"], opts["password"] = self.user, self.password or ""
        if self.token:
            opts["token"] = self.token
        if self.credentials:
            if "BEGIN NATS USER JWT" in self.credentials:
                from nats.aio.client import RawCredentials
                opts["user_credentials"] = RawCredentials(self.credentials)
            else:
                opts["user_credentials"] = self.credentials
        if self.nkey_seed:
            opts["nkeys_seed_str"] = self.nkey_seed
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            opts["tls"] = ctx
        return opts


def connection_from_config(get: Callable[[str], Any], environ: dict | None = None) -> ConnectionSettings:
    """Build the connection from a config getter (unprefixed key -> value or JSON text)."""
    env = os.environ if environ is None else environ

    def value(key):
        raw = get(key)
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except ValueError:
                return raw
        return raw

    tls = value("natsTls") or {}
    if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key"}:
        raise SettingsError(f"{config_key('natsTls')}: expected {{ca, cert, key}} file paths, got {tls!r}")
    if bool(tls.get("cert")) != bool(tls.get("key")):
        raise SettingsError(f"{config_key('natsTls')}: cert and key go together")
    timeout = value("natsReadyTimeout")
    try:
        ready = parse_duration(timeout) / 1e9 if timeout is not None else DEFAULT_READY_TIMEOUT
    except UnitError as exc:
        raise SettingsError(f"{config_key('natsReadyTimeout')}: {exc}") from None
    configured_url = value("natsUrl")
    if env.get("NATS_URL") or configured_url:
        url, source = ((env["NATS_URL"], "the NATS_URL environment variable") if env.get("NATS_URL")
                       else (str(configured_url), config_key("natsUrl")))
        problem = nats_url_problem(url)
        if problem:
            raise SettingsError(f"{source}: {problem}")
    else:
        settings = load_settings({k: v for k in ("loadBalancer", "ports", "tls") if (v := value(k)) is not None})
        lb = settings.load_balancer
        url = f"{settings.tls.scheme}://{lb.ip}:{settings.ports.client}" if lb.enabled else None
        source = f"the load balancer address ({config_key('loadBalancer.ip')})"
    password, token = value("natsPassword"), value("natsToken")
    user = value("natsUser")
    auth = value("auth")
    if user is None and isinstance(auth, dict) and auth.get("enabled") is True:
        user = ADMIN  # the admin user stack/users.py makes, with natsPassword
    if user and token:
        raise SettingsError(f"{config_key('natsToken')}: give a user and password or a token, not both")
    return ConnectionSettings(
        url=url, url_source=source, user=None if user is None else str(user), password=None if password is None else str(password),
        token=None if token is None else str(token), credentials=value("natsCredentials"),
        nkey_seed=value("natsNkeySeed"), tls_ca=tls.get("ca"), tls_cert=tls.get("cert"), tls_key=tls.get("key"),
        ready_timeout=ready)
