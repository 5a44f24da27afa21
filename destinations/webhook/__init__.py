"""The generic Webhook destination: proves the engine needs no change for a second destination."""
