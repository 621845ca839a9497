"""Checkout-level conftest: the plugin itself is installed (entry point `pgbackup_verify`).

A site adds its own targets or fixtures here, e.g.::

    from pgbackup_verify import fixtures as factories
    staging_target = factories.target_from_file("targets/staging.toml")

Benchmarks and the package sources are never collected as checks.
"""

collect_ignore = ["benchmarks", "src", "build", "node_modules"]
