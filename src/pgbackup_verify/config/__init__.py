"""The configuration room: target files (loader, sections), run settings and the concern registry.

`from pgbackup_verify.config import Target, load_target, ConfigError` is the one import for callers.
"""

from pgbackup_verify.config.loader import *  # noqa: F403 - the loader's public names are this package's
from pgbackup_verify.config.loader import __all__ as __all__
