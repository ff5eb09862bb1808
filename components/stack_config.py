"""Reads this project's stack config into the plain mapping `load_settings` takes: from the Pulumi
runtime (the program), or from `Pulumi.<stack>.yaml` itself (the local mode and the CLI)."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import yaml

from stack.settings import PROJECT, SettingsError


class _StrictLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping: YAML keeps the last silently, Pulumi refuses the file."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark,
                                       f"the key {key!r} is given twice (first on line {seen[key] + 1})",
                                       key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_stack_file(path: Path) -> dict:
    """The `config:` of a stack file, with every key. A YAML error or a duplicate key names the file and line."""
    try:
        doc = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        raise SettingsError(f"{where}: {exc.problem or exc.context}; fix the file (YAML) and try again") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path.name}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config") or {}, dict):
        raise SettingsError(f"{path.name}: expected a `config:` mapping of keys to values")
    return doc.get("config") or {}


def near_miss_namespaces(keys) -> list[str]:
    """Warnings for keys whose namespace is almost ours (`homelab-nat:streams`): Pulumi keeps such keys
    for a project that does not exist, so the setting would be silently ignored."""
    warnings = []
    for key in sorted(keys):
        namespace, _, rest = str(key).partition(":")
        if rest and namespace != PROJECT and difflib.SequenceMatcher(None, namespace, PROJECT).ratio() >= 0.8:
            warnings.append(f"config key {key!r} is in namespace {namespace!r}, not {PROJECT!r}, so this project "
                            f"ignores it; did you mean {PROJECT}:{rest}? (`pulumi config rm {key}` and set it again)")
    return warnings


# Pulumi is imported where the program needs it, not at import: the command-line tools read stack files
# through this module and should not carry the Pulumi SDK in memory.


def all_config_keys() -> set[str]:
    """Every config key of the running stack, of every namespace."""
    import pulumi.runtime.config as runtime_config

    return set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())


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
        if runtime_config.is_config_secret(full_key):
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

    from components.deployment import BackupCredentials
    from stack.settings import BACKUP_SECRET_KEYS

    config = pulumi.Config(PROJECT)
    values = {key: config.get_secret(key) for key in BACKUP_SECRET_KEYS}
    if any(v is None for v in values.values()):
        return None
    return BackupCredentials(values["backupAccessKeyId"], values["backupSecretAccessKey"])


def present_backup_keys() -> set[str]:
    import pulumi

    from stack.settings import BACKUP_SECRET_KEYS

    config = pulumi.Config(PROJECT)
    return {key for key in BACKUP_SECRET_KEYS if config.get(key) is not None}


def read_admin_password():
    """The admin user's password (homelab-nats:natsPassword, a secret) when auth is on; the provider logs in with
    the same key. Refused in words when missing: the server would have an admin no one can log in as."""
    import pulumi

    from stack.settings import SettingsError, config_key

    password = pulumi.Config(PROJECT).get_secret("natsPassword")
    if password is None:
        raise SettingsError(f"{config_key('auth.enabled')} is true but {config_key('natsPassword')} is not set: it is "
                            "the admin user's password (the stream provider logs in with it). Set it with "
                            "`pulumi config set --secret natsPassword <password>` (e.g. from `openssl rand -hex 24`)")
    return password
