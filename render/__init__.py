"""Pure text and dicts made from the stack: nats.conf, the auth file, every Kubernetes object, the scripts that run in
the images, and the connection details the stack exports. No Pulumi, no network."""
