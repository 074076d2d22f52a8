"""TicketToken Mesh notify service (tickettoken.notify.v1.NotifyService)."""
