"""`python -m streams dev`: the homelab on this machine.

Starts a real nats-server with the nats.conf rendered from `Pulumi.<stack>.yaml` by the same
renderer the cluster gets (only paths, listen address and ports remapped), prints the connection
details the stack exports (with local addresses) and stays in the foreground until Ctrl-C.
Data lives under `.local/<stack>/` and survives restarts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from render.manifests import mqtt_connection
from render.outputs import connection_details, external_urls, mqtt_details
from stack.catalog import CatalogError
from stack.errors import SettingsError
from stack.loader import ROOT, load_stack, stack_file_path
from streams.cli.target import write_running_dev
from streams.local.server import (
    LocalServerError,
    WorkdirLock,
    local_cluster_layouts,
    local_layout,
    start_cluster,
    start_server,
)


def add_parser(sub) -> None:
    p = sub.add_parser("dev", help="run the stack's NATS locally (rendered config, stream catalog)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default="homelab", help="stack file to use: Pulumi.<STACK>.yaml (default homelab), "
                                                       "or a path to a stack file")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4222, help="client port (default 4222)")
    p.add_argument("--http-port", type=int, default=8222, help="monitoring port (default 8222)")
    p.add_argument("--servers", type=int, default=1, choices=(1, 3),
                   help="1 (default), or 3: a JetStream cluster of three local servers (nodes n0, n1, n2) on --port, "
                        "--port+1, --port+2, likewise --http-port and --route-port")
    p.add_argument("--route-port", type=int, default=6222, help="with --servers 3, the first node's cluster port "
                                                                    "(default 6222)")
    p.add_argument("--mqtt-port", type=int, default=1883, help="MQTT port, when the stack turns MQTT on (default "
                                                                  "1883; with --servers 3, counted up likewise)")
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
    if args.servers == 1:
        layouts = [local_layout(workdir, host=args.host, client_port=args.port, monitoring_port=args.http_port,
                                mqtt_port=args.mqtt_port)]
    else:
        layouts = local_cluster_layouts(workdir, args.servers, host=args.host, client_port=args.port,
                                        monitoring_port=args.http_port, route_port=args.route_port,
                                        mqtt_port=args.mqtt_port)
    lock = WorkdirLock(workdir, f"python -m streams dev --stack {args.stack}, nats://{args.host}:{args.port}")
    try:
        with lock:
            return _serve(args, stack, layouts, workdir)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(args, stack, layouts: list, workdir: Path) -> int:
    from dataclasses import replace

    from streams.jetstream import close_all_clients
    from streams.local.apply import apply_catalog, undeclared  # the providers (and Pulumi's SDK) only for `dev`
    from streams.local.grow import grow, needs_growing
    from streams.local.users import AUTH_FOLDER, local_system_login, write_local_auth

    settings = stack.settings
    if settings.tls.enabled:
        print("warning: homelab-nats:tls is on in the stack, but make dev has no certificate: it serves plain "
              "connections on this machine", file=sys.stderr)
        settings = replace(settings, tls=replace(settings.tls, enabled=False))
    catalog, buckets, users = stack.catalog, stack.buckets, stack.users
    login = None
    cluster = len(layouts) > 1
    urls = ",".join(f"nats://{layout.host}:{layout.client_port}" for layout in layouts)
    if users:   # with auth off, start_cluster writes the cluster's system user alone
        include, passwords = write_local_auth(workdir, users, urls, cluster=cluster,
                                              mqtt=mqtt_connection(settings, args.host, layouts[0].mqtt_port))
        # Each node's nats.conf is in its own folder (workdir/n0, …) in a cluster: the include climbs one level.
        layouts = [replace(layout, auth_include=("../" if cluster else "") + include) for layout in layouts]
        login = (settings.admin_user, passwords[settings.admin_user])
    servers = start_cluster(settings, layouts, workdir) if cluster else [start_server(settings, layouts[0], workdir)]
    server = servers[0]
    with contextlib.ExitStack() as running_servers:
        for each in servers:
            running_servers.callback(each.stop)
        try:
            if cluster and needs_growing(workdir):
                # The single server's streams come into the cluster by snapshot and restore, never by restarting
                # it with a cluster block (that deletes them: streams/local/grow.py).
                grow(settings, workdir, urls, login={"user": login[0], "password": login[1]} if login else None,
                     system=local_system_login(workdir))
            applied = apply_catalog(catalog, server.client_url, jetstream_servers=len(servers), login=login,
                                    buckets=buckets)
            leftovers = undeclared(catalog, server.client_url, login=login, buckets=buckets)
        except Exception as exc:  # the server went away, or it refused what the catalog validation let through
            print(f"error: applying the stream catalog failed: {exc}", file=sys.stderr)
            close_all_clients()
            return 1
        close_all_clients()
        # From here on the other commands of this checkout find this server (streams/cli/target.py).
        running = write_running_dev(workdir, args.stack, urls, server.monitoring_url)
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
        details["jetstreamLimits"]["storeDir"] = str(Path(layouts[0].store_dir) / "jetstream")
        if cluster:
            details["clientUrl"] = urls
        if settings.mqtt.enabled:
            details["mqtt"] = mqtt_details(settings, args.host, layouts[0].mqtt_port)
        print(json.dumps(details, indent=2))
        what = f"a cluster of {len(servers)} servers ({', '.join(str(s.layout.server_name) for s in servers)})" \
            if cluster else "NATS"
        print(f"{what} is running from {workdir} (logs: {', '.join(str(s.log_path) for s in servers)}). "
              "Ctrl-C stops it.")
        print("`.venv/bin/python -m streams check|report|backup|restore` of this checkout find it by themselves while "
              "it runs; for the nats CLI and other tools, in another shell:")
        print(f"  export NATS_URL={urls} NATS_MONITOR_URL={server.monitoring_url}", flush=True)
        if users:
            folder = workdir / AUTH_FOLDER
            print(f"Auth is on, as in the cluster. Log in as a user from its file in {folder} (mode 0600), e.g. the "
                  f"admin:\n  set -a; . {folder / (settings.admin_user + '.env')}; set +a\n"
                  f"and the others: {', '.join(u.name + '.env' for u in users if u.name != settings.admin_user)}",
                  flush=True)
        try:
            return _foreground(args, servers, refused)
        finally:
            running.unlink(missing_ok=True)


def _foreground(args, servers: list, refused: list) -> int:
    """Serve until Ctrl-C or SIGTERM (unless --once); the exit code."""
    if not args.once:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                for server in servers:
                    if server.process.poll() is not None:
                        print(f"nats-server {server.layout.server_name} exited: {server.log_tail()}", file=sys.stderr)
                        return 1
        except KeyboardInterrupt:
            pass
    print("stopping nats-server", flush=True)
    # --once is for scripts: a refusal is a failure there; in the foreground the server kept serving.
    return 1 if args.once and refused else 0
