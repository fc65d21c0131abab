"""Detection of prefetch and preview request headers."""

from __future__ import annotations

import pytest

from server.domain.classification import has_prefetch_header
from server.domain.classification.prefetch import PrefetchMarker


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Purpose": "prefetch"},
        {"sec-purpose": "prefetch;prerender"},
        {"Sec-Purpose": "prefetch;anonymous-client-ip"},
        {"Purpose": "prefetch"},
        {"X-Moz": "Prefetch"},
        {"X-Purpose": "preview"},
        {"x-purpose": " preview "},
        {"Accept": "text/html", "Purpose": "prefetch"},
    ],
)
def test_prefetch_headers_are_found(headers: dict[str, str]) -> None:
    assert has_prefetch_header(headers) is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Accept": "text/html"},
        {"Sec-Purpose": "prerender"},
        {"Purpose": "preview"},
        {"X-Purpose": "prefetch"},
        {"X-Moz": "prefetched"},
        {"Sec-Fetch-Mode": "navigate"},
        {"User-Agent": "prefetch"},
    ],
)
def test_other_headers_are_not_prefetch(headers: dict[str, str]) -> None:
    assert has_prefetch_header(headers) is False


def test_custom_markers_replace_defaults() -> None:
    markers = (PrefetchMarker("X-Preview", "yes"),)

    assert has_prefetch_header({"x-preview": "YES"}, markers) is True
    assert has_prefetch_header({"Sec-Purpose": "prefetch"}, markers) is False
