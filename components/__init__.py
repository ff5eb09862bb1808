"""Pulumi only: the component resources that turn the rendered objects (render/) into Kubernetes resources, and the
reading of the stack's config and secrets from Pulumi."""
