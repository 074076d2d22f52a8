"""The public HTTP port: the OAuth callback and the providers' webhooks, calling the same use
cases as the gRPC methods of the same name."""
