"""Turns a manifest dict from `render.manifests` into a pulumi-kubernetes resource, unchanged."""
from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s


def declare(resource_cls, name: str, manifest: dict, opts: pulumi.ResourceOptions):
    """Create `resource_cls` with every top-level field of `manifest` except apiVersion and kind.

    The dicts keep Kubernetes' camelCase keys; pulumi-kubernetes passes them through as written.
    """
    fields = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    if resource_cls is k8s.apiextensions.CustomResource:
        fields.update(api_version=manifest["apiVersion"], kind=manifest["kind"])
    renamed = {"stringData": "string_data"}
    return resource_cls(name, opts=opts, **{renamed.get(k, k): v for k, v in fields.items()})
