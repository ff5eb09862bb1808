"""Reads this project's stack config from the Pulumi runtime into the plain mapping `load_settings` takes."""
from __future__ import annotations

import json

import pulumi
import pulumi.runtime.config as runtime_config

from components.settings import PROJECT


def read_stack_config() -> dict:
    """Every `homelab-nats:*` key of the running stack, decoded (objects and lists from JSON).

    Listing the keys (rather than asking for known ones) lets `load_settings` reject typos such as
    `jetStream.fileStore` instead of silently using a default.
    """
    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(PROJECT)
    raw = {}
    for full_key in sorted(k for k in keys if k.startswith(prefix)):
        key = full_key[len(prefix):]
        if runtime_config.is_config_secret(full_key):
            continue  # secrets (connection credentials) are read by the stream provider's configure only
        text = config.get(key)
        try:
            raw[key] = json.loads(text)
        except (TypeError, ValueError):
            raw[key] = text  # a plain string value such as `namespace: nats`
    return raw


def read_backup_credentials():
    """The backup CronJob's S3 keys, as Pulumi secrets. Missing keys fail preview with the command to fix it."""
    from components.deployment import BackupCredentials
    from components.settings import SettingsError, config_key

    config = pulumi.Config(PROJECT)
    values = {}
    for key in ("backupAccessKeyId", "backupSecretAccessKey"):
        value = config.get_secret(key)
        if value is None:
            raise SettingsError(f"{config_key(key)}: missing; backups.enabled needs S3 credentials: "
                                f"`pulumi config set --secret {key} …`")
        values[key] = value
    return BackupCredentials(values["backupAccessKeyId"], values["backupSecretAccessKey"])
