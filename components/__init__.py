"""Kubernetes side of homelab-nats.

Pure modules (no Pulumi, no network): `settings` (the typed stack config), `quantities`
(Kubernetes and Go size parsing), `nats_conf` (nats.conf renderer), `manifests` (every Kubernetes
object as a plain dict), `connection` (the connection details the stack exports).
Pulumi components: `deployment.NatsDeployment` and the pieces it builds.

Keep this file free of imports: the dynamic provider process imports `components.settings`
and must not pay for pulumi_kubernetes.
"""
