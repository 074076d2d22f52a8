"""SQL of the integration service: one module per aggregate; functions take a connection so that
a use case's state change and its outbox events share one transaction."""
