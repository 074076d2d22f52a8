"""One module per group of use cases; each owns its transactions. Shared steps that several use
cases call: `events` (building and staging events), `consent` (unsubscribes and the suppression
list), `metrics`."""
