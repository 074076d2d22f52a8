"""Writers and readers by (provider, entity type). Writers and readers are stateless (everything
per call comes in the `SyncContext`): each provider module under `sync/writers/` and
`sync/readers/` registers its instances at import, e.g.
`register_writer(SquareCatalogWriter())`; `load()` imports them all (the engine calls it once)."""

from __future__ import annotations

import importlib
import pkgutil

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import Reader, Writer

WRITERS: dict[tuple[Provider, EntityType], Writer] = {}
READERS: dict[tuple[Provider, EntityType], Reader] = {}


def register_writer(writer: Writer) -> Writer:
    WRITERS[(writer.provider, writer.entity)] = writer
    return writer


def register_reader(reader: Reader) -> Reader:
    READERS[(reader.provider, reader.entity)] = reader
    return reader


def load() -> None:
    """Import every module of the writers and readers packages (they register themselves)."""
    for package in ("integration_service.sync.writers", "integration_service.sync.readers"):
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{package}.{info.name}")
