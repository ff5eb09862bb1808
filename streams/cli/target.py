"""Which NATS server (and S3 store) a command talks to: named, or local, never the cluster by accident.

The order (`resolve_target`, a pure decision with table tests):
1. `--server` (with `--monitor` for the monitoring port);
2. `NATS_URL` (with `NATS_MONITOR_URL`);
3. `--stack NAME` given on the command line: that stack's cluster address (its `natsUrl`, else its load balancer);
4. a `make dev` of this checkout that is running now (it writes `.local/<stack>/dev.json` and holds the folder's
   lock while it runs);
5. nothing: the command stops and says how to name one. There is no default address on the LAN.
Every command prints the server it talks to, and why, as its first line (on stderr).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from render.outputs import connection_details
from stack.catalog import CatalogError
from stack.errors import SettingsError
from stack.loader import load_stack, read_stack_file
from stack.settings import load_settings, monitoring_on_lan
from stack.urls import redact_url

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
DEV_FILE = "dev.json"
LOCK_FILE = "dev.lock"

NO_TARGET = ("no server named: pass --server URL (or set NATS_URL), or name the cluster's stack with --stack homelab; "
             "or start `make dev` in this checkout and run the command again. Nothing on the network is assumed.")


class NoTarget(RuntimeError):
    """No server was named and no local one is running."""


@dataclass(frozen=True)
class RunningDev:
    """A `make dev` of this checkout that runs now (from its .local/<stack>/dev.json)."""
    stack: str
    nats_url: str
    monitor_url: str
    folder: str


@dataclass(frozen=True)
class Target:
    nats_url: str
    monitor_url: str | None
    source: str            # why this server, for the first line
    stack: str             # whose declarations go with it (check, report)

    @property
    def local(self) -> bool:
        """A server on this machine (make dev, a test): cluster matters such as the CronJob's keys do not apply."""
        hosts = {urlsplit(part.strip()).hostname for part in self.nats_url.split(",")}
        return hosts <= {"127.0.0.1", "localhost", "::1"}

    def line(self) -> str:
        return f"NATS: {redact_url(self.nats_url)} ({self.source})"


@dataclass(frozen=True)
class StackAddress:
    """What a stack file says about its cluster address."""
    nats_url: str | None     # natsUrl, else the load balancer's client URL; None without either
    monitor_port: int | None   # None when the load balancer does not carry it (auth on: README)


def resolve_target(*, server: str | None, monitor: str | None, stack: str | None, environ: dict,
                   running: list[RunningDev], stack_address=None) -> Target:
    """The target for a command (module docstring). `stack` is the --stack flag as given (None when not given);
    `stack_address(name)` reads a stack file's address (only called for an explicit --stack)."""
    def derived_monitor(url: str, port: int | None) -> str | None:
        if port is None:
            return None
        host = urlsplit(url.split(",")[0].strip()).hostname
        return f"http://{host}:{port}"

    if server:
        return Target(server, monitor or environ.get("NATS_MONITOR_URL"), "--server", stack or "homelab")
    if environ.get("NATS_URL"):
        return Target(environ["NATS_URL"], monitor or environ.get("NATS_MONITOR_URL"), "NATS_URL",
                      stack or "homelab")
    if stack:
        address = stack_address(stack)
        if address.nats_url is None:
            raise NoTarget(f"stack {stack} has neither natsUrl nor a load balancer address: pass --server or set "
                           "NATS_URL")
        return Target(address.nats_url, monitor or derived_monitor(address.nats_url, address.monitor_port),
                      f"the cluster of stack {stack}, named by --stack", stack)
    if len(running) == 1:
        dev = running[0]
        return Target(dev.nats_url, monitor or dev.monitor_url, f"the running make dev of stack {dev.stack}, "
                      f"{dev.folder}", dev.stack)
    if len(running) > 1:
        names = ", ".join(f"{d.stack} ({d.nats_url})" for d in running)
        raise NoTarget(f"several make dev servers run in this checkout: {names}; pass --server or --stack")
    raise NoTarget(NO_TARGET)


def running_devs(local: Path | None = None) -> list[RunningDev]:
    """The `make dev` servers of this checkout that run now: a dev.json whose folder lock is held."""
    import fcntl

    found = []
    for info in sorted((local or LOCAL).glob(f"*/{DEV_FILE}")):
        lock = info.parent / LOCK_FILE
        try:
            with open(lock, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass            # held: that make dev runs
                else:
                    fcntl.flock(f, fcntl.LOCK_UN)
                    continue        # nobody holds it: a file left by a make dev that was killed
            data = json.loads(info.read_text())
            found.append(RunningDev(data["stack"], data["nats_url"], data["monitor_url"], str(info.parent)))
        except (OSError, ValueError, KeyError):
            continue
    return found


def write_running_dev(folder: Path, stack: str, nats_url: str, monitor_url: str) -> Path:
    """What make dev leaves for the other commands while it runs (removed when it stops)."""
    path = folder / DEV_FILE
    path.write_text(json.dumps({"stack": stack, "nats_url": nats_url, "monitor_url": monitor_url,
                                "pid": os.getpid()}) + "\n")
    return path


def stack_address(stack: str) -> StackAddress:
    """A stack file's cluster address: its natsUrl, else its load balancer's client URL."""

    raw = read_stack_file(stack)
    settings = load_settings(raw)
    url = raw.get("natsUrl") or connection_details(settings).get("clientUrl")
    return StackAddress(url, settings.ports.monitoring if monitoring_on_lan(settings) or raw.get("natsUrl") else None)


def target_from_args(args, environ: dict | None = None) -> Target:
    """The target for parsed args with --server, --stack and (for check) --monitor."""
    return resolve_target(server=getattr(args, "server", None), monitor=getattr(args, "monitor", None),
                          stack=getattr(args, "stack", None), environ=dict(os.environ if environ is None else environ),
                          running=running_devs(), stack_address=stack_address)


def s3_endpoint(flag: str | None, environ: dict, stack: str | None) -> str:
    """The S3 endpoint: --endpoint, AWS_ENDPOINT_URL, or an explicit --stack's backups.endpoint; never assumed."""
    if flag:
        return flag
    if environ.get("AWS_ENDPOINT_URL"):
        return environ["AWS_ENDPOINT_URL"]
    if stack:
        return load_settings(read_stack_file(stack)).backups.endpoint
    raise NoTarget("no S3 store named: pass --endpoint URL or set AWS_ENDPOINT_URL (or --stack homelab for the stack's "
                   "backups.endpoint); for a plain folder use --to/--from DIR")


def announce_with_stack(args):
    """For the commands that read a stack's declarations too (check, report): the target and its stack.loader.Stack,
    with the target said on the first line; None after saying why there is none."""
    import sys


    try:
        found = target_from_args(args)
        stack = load_stack(found.stack)
    except (NoTarget, SettingsError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    print(found.line(), file=sys.stderr, flush=True)
    return found, stack
