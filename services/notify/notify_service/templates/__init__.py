"""The templates the service ships for the purchase journey, seeded at start
(NOTIFY_SEED_TEMPLATES) when the database has no version of them yet.

`catalog.json` lists each template (id, channel, category, required variables); its parts live
in `<id>/<locale>.subject`, `<id>/<locale>.txt` and `<id>/<locale>.html` (any may be absent:
a missing text part is derived from the HTML when rendering).
"""

from __future__ import annotations

import json
from importlib import resources

from notify_service.domain.model import Category, Channel, Template


def _read(folder: resources.abc.Traversable, name: str) -> str:
    path = folder / name
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def shipped() -> list[Template]:
    root = resources.files(__name__)
    catalog = json.loads((root / "catalog.json").read_text(encoding="utf-8"))
    found: list[Template] = []
    for entry in catalog:
        folder = root / entry["id"]
        for locale in entry["locales"]:
            found.append(
                Template(
                    id=entry["id"],
                    channel=Channel(entry["channel"]),
                    locale=locale,
                    category=Category(entry["category"]),
                    name=entry["name"],
                    description=entry["description"],
                    subject_template=_read(folder, f"{locale}.subject").strip(),
                    body_text_template=_read(folder, f"{locale}.txt"),
                    body_html_template=_read(folder, f"{locale}.html"),
                    required_variables=tuple(entry["required_variables"]),
                    source="shipped",
                )
            )
    return found
