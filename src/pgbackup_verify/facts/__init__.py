"""Facts about a backup host, gathered read-only: library code that imports no pytest.

Each module returns frozen dataclasses (or plain data); the checks in `checks/` assert on them.
"""
