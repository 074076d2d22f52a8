"""Process entry point: `python -m nft_service` (or `tickettoken-nft`)."""

from __future__ import annotations

from meshkit.server import run_service
from nft_service.app import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
