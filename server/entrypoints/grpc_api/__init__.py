"""The gRPC API: servicers, the call wrapper, error statuses and the server process."""
