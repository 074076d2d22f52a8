"""Process entry point: `python -m payment_service` (or `tickettoken-payment`)."""

from __future__ import annotations

from meshkit.server import run_service
from payment_service.app import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
