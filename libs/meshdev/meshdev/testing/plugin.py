"""pytest plugin (enabled in pyproject `addopts`): exposes the kit's fixtures to every test."""

from meshkit.testing.databases import *  # noqa: F403
from meshkit.testing.servers import *  # noqa: F403
