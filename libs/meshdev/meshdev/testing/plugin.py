"""pytest plugin (enabled in pyproject `addopts`): exposes the dev kit's fixtures to every test."""

from meshdev.testing.databases import *  # noqa: F403
from meshdev.testing.kms import *  # noqa: F403
from meshdev.testing.logs import *  # noqa: F403
from meshdev.testing.servers import *  # noqa: F403
