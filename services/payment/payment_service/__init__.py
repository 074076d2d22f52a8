"""TicketToken Mesh payment service (tickettoken.payment.v1.PaymentService)."""
