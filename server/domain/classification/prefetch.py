"""Request headers by which browsers mark prefetch and preview requests."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrefetchMarker:
    """A header name and a token in its value that together mark a prefetch or preview request."""

    header: str
    token: str


PREFETCH_MARKERS: tuple[PrefetchMarker, ...] = (
    # Fetch standard, with values such as "prefetch" or "prefetch;prerender".
    PrefetchMarker("sec-purpose", "prefetch"),
    # Older Chrome prefetches.
    PrefetchMarker("purpose", "prefetch"),
    # Older Firefox link prefetching.
    PrefetchMarker("x-moz", "prefetch"),
    # Safari page previews, such as Top Sites.
    PrefetchMarker("x-purpose", "preview"),
)


def has_prefetch_header(headers: Mapping[str, str], markers: tuple[PrefetchMarker, ...] = PREFETCH_MARKERS) -> bool:
    """Return whether any header marks the request as a prefetch or preview.

    Header names and tokens compare case-insensitively. A value is a list of
    tokens separated by commas or semicolons, as in `Sec-Purpose: prefetch;prerender`.
    """
    tokens_by_header = _tokens_by_header(markers)
    for name, value in headers.items():
        tokens = tokens_by_header.get(name.strip().lower())
        if tokens is None:
            continue
        for part in value.replace(";", ",").split(","):
            if part.strip().lower() in tokens:
                return True
    return False


@functools.cache
def _tokens_by_header(markers: tuple[PrefetchMarker, ...]) -> Mapping[str, frozenset[str]]:
    tokens: dict[str, set[str]] = {}
    for marker in markers:
        tokens.setdefault(marker.header.lower(), set()).add(marker.token.lower())
    return {header: frozenset(values) for header, values in tokens.items()}
