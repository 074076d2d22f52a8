"""SQL in, typed records out: one module per aggregate. Functions take a connection, so a use
case puts a state change and its events in one transaction."""
