"""Process entry point: `python -m notify_service` (or `tickettoken-notify`)."""

from __future__ import annotations

from meshkit.server import run_service
from notify_service.app import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
