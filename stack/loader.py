"""The stack, parsed once: `Pulumi.<stack>.yaml` read strictly (for the command-line tools and tests), and every stack
config (from that file, or from Pulumi's runtime in `__main__.py`) turned into one `Stack`: settings, stream catalog,
buckets, the streams the backups take, the users, and the warnings preview shows. No Pulumi, no network."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stack.buckets import BucketSpec, load_all_buckets
from stack.catalog import StreamSpec, catalog_warnings, load_catalog
from stack.errors import PROJECT, SettingsError, config_key
from stack.settings import Settings, load_settings
from stack.users import ServerUser, plan_users


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


ROOT = Path(__file__).resolve().parent.parent   # the project: Pulumi.<stack>.yaml lives here


def stack_file_path(stack: str, root: Path = ROOT) -> Path:
    """`stack` names `Pulumi.<stack>.yaml` in the project; a path to a .yaml file is taken as it is."""
    if stack.endswith((".yaml", ".yml")):
        return Path(stack)
    return root / f"Pulumi.{stack}.yaml"


def read_stack_file(stack: str, root: Path = ROOT, warn=None) -> dict:
    """`Pulumi.<stack>.yaml`'s config for this project, keys without the project prefix. Keys under a
    namespace close to ours are passed to `warn` (they would be ignored)."""
    path = stack_file_path(stack, root)
    if not path.exists():
        raise SettingsError(f"no stack file {path.name}; pick a stack with --stack (e.g. homelab)")
    config = load_stack_file(path)
    if warn is not None:
        for warning in near_miss_namespaces(config):
            warn(f"{path.name}: {warning}")
    prefix = f"{PROJECT}:"
    return {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class Stack:
    settings: Settings
    catalog: tuple[StreamSpec, ...]
    buckets: tuple[BucketSpec, ...]
    backup_streams: tuple[str, ...]    # what the backups take: backups.streams, else every file-backed stream
    users: tuple[ServerUser, ...]      # empty while auth is off
    warnings: tuple[str, ...]          # valid but probably wrong: preview shows them


def build_stack(raw: Mapping[str, Any]) -> Stack:
    """The whole stack from its config (unprefixed keys, decoded values), validated as `pulumi preview` validates
    it; raises SettingsError or CatalogError naming the key."""
    settings = load_settings(raw)
    limits = settings.jetstream.store_limits
    catalog = load_catalog(raw.get("streams"), max_replicas=settings.replicas, store_limits=limits)
    buckets = load_all_buckets(raw, streams=catalog, max_replicas=settings.replicas, store_limits=limits)
    streams = backup_streams(settings, catalog, buckets)
    users = plan_users(settings.auth, catalog, streams, admin=settings.admin_user, buckets=buckets,
                       mqtt_enabled=settings.mqtt.enabled)
    warnings = (*settings.warnings, *catalog_warnings(catalog, jetstream_servers=settings.replicas),
                *backup_stream_warnings(settings, catalog))
    return Stack(settings, tuple(catalog), tuple(buckets), tuple(streams), tuple(users), tuple(warnings))


def load_stack(stack: str, warn=None) -> Stack:
    """`Pulumi.<stack>.yaml` (a name or a path) as a Stack."""
    return build_stack(read_stack_file(stack, warn=warn))


def backup_streams(settings: Settings, catalog, buckets=()) -> list[str]:
    """The streams the backups take: the configured list, else every file-backed stream of the catalog and every
    file-backed bucket's stream (KV_<name>, OBJ_<name>; memory streams cannot be snapshotted)."""
    if settings.backups.streams is not None:
        return list(settings.backups.streams)
    return [spec.name for spec in catalog if spec.config.get("storage", "file") == "file"] + \
        [b.stream_name for b in buckets if b.config.get("storage", "file") == "file"]


def backup_stream_warnings(settings: Settings, catalog) -> list[str]:
    """`backups.streams` against the catalog: a memory stream is an error (the server cannot snapshot one, so
    every run would fail); a name the stack does not declare is a warning (it may be a stream made outside
    Pulumi; if it does not exist, every run reports it failed)."""
    if settings.backups.streams is None:
        return []
    declared = {spec.name: spec for spec in catalog}
    warnings = []
    for name in settings.backups.streams:
        spec = declared.get(name)
        if spec is None:
            warnings.append(f"{config_key('backups.streams')}: {name!r} is not a stream this stack declares; the "
                            "nightly backup will fail for it unless it exists on the server")
        elif spec.config.get("storage", "file") == "memory":
            raise SettingsError(f"{config_key('backups.streams')}: {name!r} is a memory stream, which the server "
                                "cannot snapshot; remove it from the list (or make the stream file-backed)")
    return warnings
