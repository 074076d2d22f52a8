"""Process entry point: `python -m integration_service` (or `tickettoken-integration`)."""

from __future__ import annotations

from integration_service.app import DEFINITION
from meshkit.server import run_service


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
