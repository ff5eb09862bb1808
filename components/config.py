"""The stack's config and secrets as the Pulumi runtime hands them to `__main__.py`: every `homelab-nats:*` key,
and the secrets read apart (the admin's password, the backup keys). The parsing is stack/loader.py's."""
from __future__ import annotations

import json

from components.deployment import BackupCredentials
from stack.errors import PROJECT, SettingsError, config_key
from stack.settings import BACKUP_SECRET_KEYS

# Pulumi is imported where the program needs it, not at import: the command-line tools read stack files
# through this module and should not carry the Pulumi SDK in memory.


def all_config_keys() -> set[str]:
    """Every config key of the running stack, of every namespace."""
    import pulumi.runtime.config as runtime_config

    return set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())


# Keys whose value is part of the stack's shape even when a leaf of it is a secret: a key-value entry's value set with
# `pulumi config set --secret --path 'homelab-nats:keyValues.<bucket>.entries.<key>' …` makes the whole key secret.
READ_WHEN_SECRET = ("keyValues",)


def is_secret_key(key: str) -> bool:
    """Whether `homelab-nats:<key>` holds a secret (anything read from it stays secret)."""
    import pulumi.runtime.config as runtime_config

    return bool(runtime_config.is_config_secret(f"{PROJECT}:{key}"))


def read_stack_config() -> dict:
    """Every `homelab-nats:*` key of the running stack, decoded (objects and lists from JSON).

    Listing the keys (rather than asking for known ones) lets `load_settings` reject typos such as
    `jetStream.fileStore` instead of silently using a default.
    """
    import pulumi
    import pulumi.runtime.config as runtime_config

    prefix = f"{PROJECT}:"
    keys = all_config_keys()
    config = pulumi.Config(PROJECT)
    raw = {}
    for full_key in sorted(k for k in keys if k.startswith(prefix)):
        key = full_key[len(prefix):]
        if runtime_config.is_config_secret(full_key) and key not in READ_WHEN_SECRET:
            continue  # secrets (connection credentials) are read by the stream provider's configure only
        text = config.get(key)
        try:
            raw[key] = json.loads(text)
        except (TypeError, ValueError):
            raw[key] = text  # a plain string value such as `namespace: nats`
    return raw


def read_backup_credentials():
    """The backup CronJob's S3 keys as Pulumi secrets, or None while either is missing (the program then
    warns and leaves the CronJob out: `stack.settings.backup_credentials_warning`)."""
    import pulumi


    config = pulumi.Config(PROJECT)
    values = {key: config.get_secret(key) for key in BACKUP_SECRET_KEYS}
    if any(v is None for v in values.values()):
        return None
    return BackupCredentials(values["backupAccessKeyId"], values["backupSecretAccessKey"])


def present_backup_keys() -> set[str]:
    import pulumi


    config = pulumi.Config(PROJECT)
    return {key for key in BACKUP_SECRET_KEYS if config.get(key) is not None}


def read_admin_password():
    """The admin user's password (homelab-nats:natsPassword, a secret) when auth is on; the provider logs in with
    the same key. Refused in words when missing: the server would have an admin no one can log in as."""
    import pulumi


    password = pulumi.Config(PROJECT).get_secret("natsPassword")
    if password is None:
        raise SettingsError(f"{config_key('auth.enabled')} is true but {config_key('natsPassword')} is not set: it is "
                            "the admin user's password (the stream provider logs in with it). Set it with "
                            "`pulumi config set --secret natsPassword <password>` (e.g. from `openssl rand -hex 24`)")
    return password
