"""The HTTP tracking gateway: open pixel, click redirects, honeypot and the JSON product-view API."""
