"""What every part of the stack model names a bad value with: the project, the config key as `pulumi config set`
spells it, and the error that carries it. A leaf: it imports nothing of the project."""
from __future__ import annotations

PROJECT = "homelab-nats"


class SettingsError(ValueError):
    """A stack config value that cannot be used. The message names the key."""


def config_key(path: str) -> str:
    return f"{PROJECT}:{path}"
