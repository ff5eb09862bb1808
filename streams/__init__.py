"""JetStream streams and consumers as Pulumi resources, and the tools that operate them.

Kept free of import side effects: the dynamic provider is pickled by reference to this package and
imported in the provider process.
"""
