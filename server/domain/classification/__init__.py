"""Bot classification of e-mail events: pure functions over facts and loaded network data."""
