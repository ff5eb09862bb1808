"""NATS on this machine: a real nats-server started with the rendered config (`server`: `make dev`, the tests,
the backup verifier) and the catalog applied through the provider code without the engine (`apply`)."""
