"""The notify service's pure core: typed entities, the status machine, templates, preferences,
quiet hours, retry classification, receipts, masking and unsubscribe tokens. No transport,
database, provider SDK or kit import (tests/notify/unit/test_layout.py holds that)."""
