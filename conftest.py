"""Checkout-level conftest: the plugin itself is installed (entry point `pgbackup_verify`).

A site adds its own target or fixtures here, e.g.::

    from pgbackup_verify import fixtures as factories
    target = factories.target_from_file("targets/staging.toml")  # the checks below this file use it

and extends the suite through the hooks in `pgbackup_verify.hooks` (a concern, a report field,
a Kuma routing rule).

Benchmarks and the package sources are never collected as checks.
"""

collect_ignore = ["benchmarks", "src", "build", "node_modules"]
