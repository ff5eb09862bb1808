"""The stack file parsed once: the settings, the stream catalog, the buckets and the users, with the server's rules
that apply to them. Pure: no Pulumi, no network (the tests feed it the stack file; `__main__.py` feeds it Pulumi's
config)."""
