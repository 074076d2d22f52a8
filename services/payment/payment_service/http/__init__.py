"""The payment service's public HTTP port: provider webhooks."""
