"""Tracking rules, validation and classification, free of I/O and of transport types."""
