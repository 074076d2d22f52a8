"""The public HTTP port: provider receipts (same code as HandleProviderWebhook) and the
one-click unsubscribe link."""
