"""`python -m streams dev`: the homelab on this machine.

Starts a real nats-server with the nats.conf rendered from `Pulumi.<stack>.yaml` by the same
renderer the cluster gets (only paths, listen address and ports remapped), prints the connection
details the stack exports (with local addresses) and stays in the foreground until Ctrl-C.
Data lives under `.local/<stack>/` and survives restarts.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from render.outputs import connection_details, external_urls
from stack.catalog import CatalogError
from stack.errors import SettingsError
from stack.loader import ROOT, load_stack, stack_file_path
from streams.cli.target import write_running_dev
from streams.local.server import LocalServerError, WorkdirLock, local_layout, start_server


def add_parser(sub) -> None:
    p = sub.add_parser("dev", help="run the stack's NATS locally (rendered config, stream catalog)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default="homelab", help="stack file to use: Pulumi.<STACK>.yaml (default homelab), "
                                                       "or a path to a stack file")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4222, help="client port (default 4222)")
    p.add_argument("--http-port", type=int, default=8222, help="monitoring port (default 8222)")
    p.add_argument("--data-dir", type=Path, help="where the server keeps its files (default .local/<stack>)")
    p.add_argument("--once", action="store_true", help="start, apply, print, then stop (for scripts and tests)")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        stack = load_stack(args.stack, warn=lambda w: print(f"warning: {w}", file=sys.stderr))
    except (SettingsError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workdir = args.data_dir or ROOT / ".local" / stack_file_path(args.stack).stem.removeprefix("Pulumi.")
    layout = local_layout(workdir, host=args.host, client_port=args.port, monitoring_port=args.http_port)
    lock = WorkdirLock(workdir, f"python -m streams dev --stack {args.stack}, nats://{args.host}:{args.port}")
    try:
        with lock:
            return _serve(args, stack, layout, workdir)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(args, stack, layout, workdir: Path) -> int:
    from dataclasses import replace

    from streams.jetstream import close_all_clients
    from streams.local.apply import apply_catalog, undeclared  # the providers (and Pulumi's SDK) only for `dev`
    from streams.local.users import AUTH_FOLDER, write_local_auth

    settings = stack.settings
    if settings.tls.enabled:
        print("warning: homelab-nats:tls is on in the stack, but make dev has no certificate: it serves plain "
              "connections on this machine", file=sys.stderr)
        settings = replace(settings, tls=replace(settings.tls, enabled=False))
    catalog, buckets, users = stack.catalog, stack.buckets, stack.users
    login = None
    if users:
        include, passwords = write_local_auth(workdir, users, f"nats://{layout.host}:{layout.client_port}")
        layout = replace(layout, auth_include=include)
        login = (settings.admin_user, passwords[settings.admin_user])
    server = start_server(settings, layout, workdir)
    with server:
        try:
            applied = apply_catalog(catalog, server.client_url, jetstream_servers=settings.replicas, login=login,
                                    buckets=buckets)
            leftovers = undeclared(catalog, server.client_url, login=login, buckets=buckets)
        except Exception as exc:  # the server went away, or it refused what the catalog validation let through
            print(f"error: applying the stream catalog failed: {exc}", file=sys.stderr)
            close_all_clients()
            return 1
        close_all_clients()
        # From here on the other commands of this checkout find this server (streams/cli/target.py).
        running = write_running_dev(workdir, args.stack, server.client_url, server.monitoring_url)
        refused = [item for item in applied if item.action == "refused"]
        for item in applied:
            print(item.line(), file=sys.stderr if item.action == "refused" else sys.stdout)
        if refused:
            names = " ".join(item.name for item in refused if item.kind == "stream") or "STREAM"
            print(f"make dev keeps serving the last good state: what was refused is as it was, everything else is "
                  f"applied. To go ahead anyway, back up first, e.g. `.venv/bin/python -m streams backup {names} "
                  f"--to /tmp/nats-backup --server {server.client_url}`, then set allowDataLoss: true in the stack "
                  "(or revert the change) and run make dev again.", file=sys.stderr, flush=True)
        for line in leftovers:
            print(f"not declared: {line}; make dev leaves it in place")
        details = {**connection_details(settings, users, buckets), **external_urls(args.host, args.port, args.http_port)}
        details["jetstreamLimits"]["storeDir"] = str(Path(layout.store_dir) / "jetstream")
        print(json.dumps(details, indent=2))
        print(f"NATS is running from {workdir} (log: {server.log_path}). Ctrl-C stops it.")
        print("`.venv/bin/python -m streams check|report|backup|restore` of this checkout find it by themselves while "
              "it runs; for the nats CLI and other tools, in another shell:")
        print(f"  export NATS_URL={server.client_url} NATS_MONITOR_URL={server.monitoring_url}", flush=True)
        if users:
            folder = workdir / AUTH_FOLDER
            print(f"Auth is on, as in the cluster. Log in as a user from its file in {folder} (mode 0600), e.g. the "
                  f"admin:\n  set -a; . {folder / (settings.admin_user + '.env')}; set +a\n"
                  f"and the others: {', '.join(u.name + '.env' for u in users if u.name != settings.admin_user)}",
                  flush=True)
        try:
            return _foreground(args, server, refused)
        finally:
            running.unlink(missing_ok=True)


def _foreground(args, server, refused: list) -> int:
    """Serve until Ctrl-C or SIGTERM (unless --once); the exit code."""
    if not args.once:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                if server.process.poll() is not None:
                    print(f"nats-server exited: {server.log_tail()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    print("stopping nats-server", flush=True)
    # --once is for scripts: a refusal is a failure there; in the foreground the server kept serving.
    return 1 if args.once and refused else 0
