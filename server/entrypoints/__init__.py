"""Entrypoints: the gRPC servicers, the command line and their settings."""
