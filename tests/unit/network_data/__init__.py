"""Tests for the published network lists and their refresh."""
