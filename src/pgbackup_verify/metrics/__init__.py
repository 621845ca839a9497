"""Prometheus metrics of every run: names (names.py), the registry built from the outcome fold (collect.py),
what earlier runs left (state.py), node_exporter's textfile (textfile.py), the Pushgateway (push.py), plugin."""
