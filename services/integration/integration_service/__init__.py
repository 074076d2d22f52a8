"""TicketToken Mesh integration service (tickettoken.integration.v1.IntegrationService)."""
