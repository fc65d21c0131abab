"""Adapters to the outside world: the database and loaded data files."""
