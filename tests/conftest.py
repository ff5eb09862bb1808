"""Shared fixtures: real nats-servers on free loopback ports, stopped by the tests."""
from __future__ import annotations

import pytest

from components.local_server import LocalServer, local_layout, start_server
from components.settings import load_settings
from tests.test_settings import homelab_raw


@pytest.fixture
def homelab_settings():
    return load_settings(homelab_raw())


@pytest.fixture
def nats_server(tmp_path, homelab_settings):
    """A nats-server running the homelab's rendered nats.conf (paths and ports remapped)."""
    servers: list[LocalServer] = []

    def start(settings=None, workdir=None, **layout_args) -> LocalServer:
        wd = workdir or tmp_path / f"server{len(servers)}"
        layout = local_layout(wd, **layout_args)
        server = start_server(settings or homelab_settings, layout, wd)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
