"""Kit unit tests: no servers, no network."""
