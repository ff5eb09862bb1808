"""The stack's users on this machine (`make dev` with `homelab-nats:auth.enabled`): the same users and
permissions the cluster gets (stack/users.py), with passwords generated here once and kept in
`<workdir>/auth/` (mode 0600, never printed): `auth.conf` for the server, and one `<user>.env` per user
holding NATS_URL, NATS_USER, NATS_PASSWORD and NATS_INBOX_PREFIX, as the cluster's user Secrets do.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from render.auth_conf import render_auth_conf
from render.manifests import is_mqtt_device
from stack.users import SYSTEM, ServerUser

AUTH_FOLDER = "auth"
LOCAL_AUTH_FILE = f"{AUTH_FOLDER}/auth.conf"   # relative to the workdir; what nats.conf includes


def _write_private(path: Path, text: str) -> None:
    """Written readable by the owner only, from the first byte (no window with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def local_passwords(workdir: Path, users: tuple[ServerUser, ...]) -> dict[str, str]:
    """Each user's password: kept from earlier runs, made for new users (letters and digits, as in the cluster)."""
    folder = workdir / AUTH_FOLDER
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = folder / "passwords.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    passwords = {u.name: known.get(u.name) or secrets.token_hex(16) for u in users}
    if passwords != known:
        _write_private(store, json.dumps(passwords, indent=2) + "\n")
    return passwords


def write_local_auth(workdir: Path, users: tuple[ServerUser, ...], client_url: str, *,
                     cluster: bool = False, mqtt: dict | None = None) -> tuple[str, dict[str, str]]:
    """Writes auth.conf and the users' env files; returns the include path (relative to nats.conf in `workdir`)
    and the passwords. A cluster has the system user too (`sys.env`), as the deployment has (nats-user-sys). An
    MQTT device's file holds what its Secret holds, with `mqtt`'s host and port (render.manifests.mqtt_connection)."""
    accounts = (*users, ServerUser(SYSTEM)) if cluster else users
    passwords = local_passwords(workdir, accounts)
    folder = workdir / AUTH_FOLDER
    _write_private(workdir / LOCAL_AUTH_FILE, render_auth_conf(users, passwords,
                                                          system_password=passwords.get(SYSTEM) if cluster else None))
    for user in accounts:
        if is_mqtt_device(user):
            lines = [f"{k}={v}" for k, v in (mqtt or {}).items()] + [
                f"MQTT_USER={user.name}", f"MQTT_CLIENT_ID={user.name}", f"MQTT_PASSWORD={passwords[user.name]}"]
            _write_private(folder / f"{user.name}.env", "\n".join(lines) + "\n")
            continue
        lines = [f"NATS_URL={client_url}", f"NATS_USER={user.name}", f"NATS_PASSWORD={passwords[user.name]}"]
        if user.inbox_prefix:
            lines.append(f"NATS_INBOX_PREFIX={user.inbox_prefix}")
        _write_private(folder / f"{user.name}.env", "\n".join(lines) + "\n")
    return LOCAL_AUTH_FILE, passwords


def local_system_login(workdir: Path) -> dict | None:
    """A local cluster's system user (written by write_local_auth with cluster=True), as nats.connect options."""
    store = workdir / AUTH_FOLDER / "passwords.json"
    password = json.loads(store.read_text()).get(SYSTEM) if store.exists() else None
    return {"user": SYSTEM, "password": password} if password else None
