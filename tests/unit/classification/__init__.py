"""Unit tests of the bot classifier."""
