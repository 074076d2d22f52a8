"""Background work: delivery workers (the queue) and housekeeping (one replica at a time)."""
