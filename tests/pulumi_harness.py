"""Runs `__main__.py` in-process under Pulumi's mocks with a stack's real config.

Records every resource the program declares (type, name, inputs, options' parent), the stack
exports and the warnings it logs. No Pulumi CLI, no cluster.
"""
from __future__ import annotations

import asyncio
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pulumi
import yaml
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]


# What `pulumi config set --secret` would add to the stack file; the engine decrypts it for the program.
TEST_SECRETS = {f"{PROJECT}:backupAccessKeyId": "test-access-key",
                f"{PROJECT}:backupSecretAccessKey": "test-secret-key-never-in-plaintext"}


def stack_config(stack: str, *, with_secrets: bool = True) -> dict:
    """`Pulumi.<stack>.yaml`'s config as the engine hands it to a program: objects JSON-encoded,
    plus the test secrets (marked secret by run_program)."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = encode_config(doc.get("config") or {})
    return {**config, **TEST_SECRETS} if with_secrets else config


def encode_config(config: dict) -> dict:
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}


def generated_password(resource_name: str) -> str:
    """The password the mocks' RandomPassword `resource_name` makes (tests look for it where it must not be)."""
    import hashlib
    return "gen" + hashlib.sha256(resource_name.encode()).hexdigest()[:29]


@dataclass
class DeclaredResource:
    type: str
    name: str
    inputs: dict
    parent: str | None


@dataclass
class ProgramRun:
    resources: list[DeclaredResource] = field(default_factory=list)
    exports: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)   # resource name -> the ResourceOptions it was declared with

    def of_type(self, typ: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, k8s_name: str | None = None) -> DeclaredResource:
        found = [r for r in self.of_type(typ)
                 if k8s_name is None or r.inputs.get("metadata", {}).get("name") == k8s_name]
        assert len(found) == 1, f"expected one {typ} {k8s_name or ''}, found {[r.name for r in found]}"
        return found[0]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, run: ProgramRun):
        self.run = run

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.run.resources.append(DeclaredResource(args.typ, args.name, dict(args.inputs), None))
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":  # what the provider makes: a fresh secret
            outputs["result"] = generated_password(args.name)
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_program(config: dict, *, stack: str = "homelab", preview: bool = False,
                secret_keys: tuple[str, ...] = tuple(TEST_SECRETS)) -> ProgramRun:
    """Run __main__.py with `config` (full keys, engine-encoded values). Raises what the program raises."""
    run = ProgramRun()
    # Pulumi's runtime uses the thread's current loop; asyncio.run() elsewhere in the suite clears it.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(RecordingMocks(run), project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    raw_exports: dict = {}

    import components.deployment
    from components.kube import declare

    def recording_declare(cls, name, manifest, opts):
        run.options[name] = opts
        return declare(cls, name, manifest, opts)

    def main():
        with mock.patch.object(components.deployment, "declare", recording_declare), \
                mock.patch.object(pulumi, "export", lambda k, v: raw_exports.__setitem__(k, v)), \
                mock.patch.object(pulumi.log, "warn", lambda msg, *a, **kw: run.warnings.append(msg)):
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    _sync_await(run_pulumi_func(main))
    for key, value in raw_exports.items():
        run.exports[key] = _sync_await(pulumi.Output.from_input(value).future())
    return run


SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi's marker for a secret value on the wire
SIG_KEY = "4dabf18193072939515e22adb298388d"


def is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def as_manifest(resource: DeclaredResource) -> dict:
    """The object as the Kubernetes API would receive it: secrets unwrapped, and integers the engine
    carried as doubles made integers again (protobuf Structs have only doubles)."""
    return _plain(resource.inputs)


def _plain(value):
    if is_secret(value):
        return _plain(value["value"])
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
