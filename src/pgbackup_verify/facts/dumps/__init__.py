"""The dump files: the inventory of the backup directory, streaming gzip and plain-SQL scans,
custom-format TOCs, and the dump source the drill restores."""
