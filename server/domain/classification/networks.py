"""Network categories and the prefix directory that finds the published networks containing an IP."""

from __future__ import annotations

import bisect
import enum
import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkCategory(enum.Enum):
    """Kind of operator behind a network, as far as bot classification is concerned."""

    SECURITY_SCANNER = "security_scanner"
    DATACENTER = "datacenter"
    APPLE_PRIVACY_PROXY = "apple_privacy_proxy"
    MAIL_IMAGE_PROXY = "mail_image_proxy"


@dataclass(frozen=True, slots=True)
class NetworkPrefix:
    """One published prefix with the operator and category it belongs to."""

    network: IPNetwork
    category: NetworkCategory
    provider: str


@dataclass(frozen=True, slots=True)
class NetworkMatch:
    """A category and provider whose published prefixes contain a looked-up address."""

    category: NetworkCategory
    provider: str


@dataclass(frozen=True, slots=True)
class NetworkSource:
    """Origin and age of one loaded prefix list."""

    name: str
    category: NetworkCategory
    provider: str
    source_url: str
    retrieved_on: date
    prefix_count: int


class NetworkDirectory:
    """Sorted prefix intervals per IP version, looked up by binary search.

    Building costs O(n log n); a lookup costs O(log n + k) for k matching prefixes.
    Prefixes may overlap, so each interval keeps every prefix that covers it.
    """

    def __init__(self, prefixes: Iterable[NetworkPrefix], sources: Iterable[NetworkSource] = ()) -> None:
        self.sources: tuple[NetworkSource, ...] = tuple(sources)
        self._tables = {4: _IntervalTable(), 6: _IntervalTable()}
        grouped: dict[int, list[NetworkPrefix]] = {4: [], 6: []}
        for prefix in prefixes:
            grouped[prefix.network.version].append(prefix)
        for version, members in grouped.items():
            self._tables[version] = _IntervalTable.build(members)

    def lookup(self, address: IPAddress) -> tuple[NetworkMatch, ...]:
        """Return every category and provider whose prefixes contain the address."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return self._tables[address.version].lookup(int(address))

    def __len__(self) -> int:
        return sum(table.prefix_count for table in self._tables.values())


class _IntervalTable:
    """Disjoint address intervals, each with the matches of all prefixes covering it."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.matches: list[tuple[NetworkMatch, ...]] = []
        self.prefix_count = 0

    @classmethod
    def build(cls, prefixes: list[NetworkPrefix]) -> _IntervalTable:
        table = cls()
        table.prefix_count = len(prefixes)

        # Sweep over the interval boundaries; between two boundaries the covering set is constant.
        boundaries: set[int] = set()
        for prefix in prefixes:
            boundaries.add(int(prefix.network.network_address))
            boundaries.add(int(prefix.network.broadcast_address) + 1)
        points = sorted(boundaries)

        openings: dict[int, list[NetworkMatch]] = {}
        closings: dict[int, list[NetworkMatch]] = {}
        for prefix in prefixes:
            match = NetworkMatch(prefix.category, prefix.provider)
            openings.setdefault(int(prefix.network.network_address), []).append(match)
            closings.setdefault(int(prefix.network.broadcast_address) + 1, []).append(match)

        active: dict[NetworkMatch, int] = {}
        for start, end in itertools.pairwise(points):
            for match in closings.get(start, ()):
                active[match] -= 1
                if active[match] == 0:
                    del active[match]
            for match in openings.get(start, ()):
                active[match] = active.get(match, 0) + 1
            if not active:
                continue
            covering = tuple(sorted(active, key=lambda m: (m.category.value, m.provider)))
            if table.matches and table.ends[-1] == start - 1 and table.matches[-1] == covering:
                table.ends[-1] = end - 1
                continue
            table.starts.append(start)
            table.ends.append(end - 1)
            table.matches.append(covering)
        return table

    def lookup(self, value: int) -> tuple[NetworkMatch, ...]:
        index = bisect.bisect_right(self.starts, value) - 1
        if index < 0 or value > self.ends[index]:
            return ()
        return self.matches[index]
