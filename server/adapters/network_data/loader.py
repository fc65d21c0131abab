"""Read and write the network list files in data/ and build a NetworkDirectory from them."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from server.domain.classification.networks import (
    IPNetwork,
    NetworkCategory,
    NetworkDirectory,
    NetworkPrefix,
    NetworkSource,
)

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
FILE_SUFFIX = ".txt"
FORMAT_LINE = "# network-data v1"

# Header keys every file must carry, in the order they are written.
REQUIRED_KEYS = ("name", "category", "provider", "source_url", "retrieved_on", "prefix_count")
# Header keys a file may carry to describe its data further, in the order they are written.
OPTIONAL_KEYS = ("upstream_url", "published_on", "licence", "note")

# Blocks from the IANA IPv4 and IPv6 Special-Purpose Address Registries that no
# public client sends from, plus multicast and the reserved 240.0.0.0/4. Vendor
# lists sometimes carry them. The copy of Vultr's geofeed in iporigin 1.1.2 lists
# 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 and 2002::/16. The table
# is written out because ipaddress.is_global differs between Python patch releases.
SPECIAL_PURPOSE_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/32",
        "2001:2::/48",
        "2001:10::/28",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


class NetworkDataError(ValueError):
    """A network list file is missing, malformed or inconsistent with its header."""


@dataclass(frozen=True, slots=True)
class NetworkListFile:
    """The contents of one data file: where the list comes from and its prefixes."""

    source: NetworkSource
    networks: tuple[IPNetwork, ...]
    details: Mapping[str, str] = field(default_factory=dict)


def load_network_directory(data_dir: Path | None = None) -> NetworkDirectory:
    """Read every network list file in data_dir once and index all prefixes for lookup.

    The directory carries one NetworkSource per file, so callers can report which
    lists are loaded and how old they are. Raises NetworkDataError when the folder
    contains no list file or any file is malformed. A partial directory is never returned.
    """
    folder = DATA_DIR if data_dir is None else data_dir
    paths = sorted(folder.glob(f"*{FILE_SUFFIX}"))
    if not paths:
        raise NetworkDataError(f"no network list files (*{FILE_SUFFIX}) found in {folder}")

    sources: list[NetworkSource] = []
    prefixes: list[NetworkPrefix] = []
    for path in paths:
        listed = read_network_file(path)
        sources.append(listed.source)
        category = listed.source.category
        provider = listed.source.provider
        prefixes.extend(NetworkPrefix(network, category, provider) for network in listed.networks)

    directory = NetworkDirectory(prefixes, sources)
    logger.info(
        "loaded network data",
        extra={"data_dir": str(folder), "source_count": len(sources), "prefix_count": len(prefixes)},
    )
    return directory


def oldest_source_age_days(sources: Iterable[NetworkSource], today: date) -> int:
    """Return how many days before today the oldest of the sources was retrieved.

    Raises ValueError when sources is empty, because an empty directory has no age.
    """
    retrieved = [source.retrieved_on for source in sources]
    if not retrieved:
        raise ValueError("no network sources given. Load the network data before computing its age.")
    return (today - min(retrieved)).days


def read_network_file(path: Path) -> NetworkListFile:
    """Parse one network list file and check its prefixes against its header."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise NetworkDataError(f"cannot read network list file {path}: {error}") from error
    return parse_network_file(text, path)


def parse_network_file(text: str, path: Path) -> NetworkListFile:
    """Parse the text of a network list file. The path names the file in errors and sets the expected name."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != FORMAT_LINE:
        raise NetworkDataError(f"{path}: line 1 must be {FORMAT_LINE!r}")

    header: dict[str, str] = {}
    networks: list[IPNetwork] = []
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if networks:
                raise NetworkDataError(f"{path}:{number}: header line after the first prefix")
            key, value = _parse_header_line(line, path, number)
            header[key] = value
            continue
        networks.append(_parse_prefix(line, path, number))

    source = _source_from_header(header, path)
    if source.prefix_count != len(networks):
        raise NetworkDataError(
            f"{path}: header prefix_count is {source.prefix_count} but the file contains {len(networks)} "
            "prefixes, so it is truncated or was edited by hand. Regenerate it with the refresh command."
        )
    details = {key: header[key] for key in OPTIONAL_KEYS if key in header}
    return NetworkListFile(source, tuple(networks), details)


def format_network_file(
    *,
    name: str,
    category: NetworkCategory,
    provider: str,
    source_url: str,
    retrieved_on: date,
    networks: Iterable[IPNetwork],
    details: Mapping[str, str] | None = None,
) -> str:
    """Render a network list file from a vendor's prefixes.

    Special-purpose blocks are cut out (see SPECIAL_PURPOSE_NETWORKS), then
    adjacent and nested prefixes are merged per IP version. Neither step adds an
    address. Raises NetworkDataError for an unknown detail key or a value that
    would break the one-line header format.
    """
    # Merging first keeps the special-purpose scan short for lists of 100,000+ rows.
    merged = collapse_networks(remove_special_purpose(collapse_networks(networks)))
    fields: list[tuple[str, str]] = [
        ("name", name),
        ("category", category.value),
        ("provider", provider),
        ("source_url", source_url),
        ("retrieved_on", retrieved_on.isoformat()),
        ("prefix_count", str(len(merged))),
    ]
    extra = dict(details or {})
    unknown = sorted(set(extra) - set(OPTIONAL_KEYS))
    if unknown:
        raise NetworkDataError(f"unknown header keys {unknown}. Allowed keys: {list(OPTIONAL_KEYS)}")
    fields.extend((key, extra[key]) for key in OPTIONAL_KEYS if key in extra)

    out = [FORMAT_LINE]
    for key, value in fields:
        if "\n" in value or "\r" in value:
            raise NetworkDataError(f"header value for {key!r} must be a single line")
        out.append(f"# {key}: {value}")
    out.extend(str(network) for network in merged)
    return "\n".join(out) + "\n"


def collapse_networks(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Merge adjacent and nested prefixes, IPv4 first, each version sorted by address."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for network in networks:
        if isinstance(network, ipaddress.IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    merged: list[IPNetwork] = []
    merged.extend(ipaddress.collapse_addresses(v4))
    merged.extend(ipaddress.collapse_addresses(v6))
    return merged


def remove_special_purpose(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Return the networks without the addresses that fall in SPECIAL_PURPOSE_NETWORKS."""
    remaining: list[IPNetwork] = []
    pending = list(networks)
    while pending:
        network = pending.pop()
        block = next((block for block in SPECIAL_PURPOSE_NETWORKS if network.overlaps(block)), None)
        if block is None:
            remaining.append(network)
        elif network.prefixlen < block.prefixlen:
            # The vendor prefix is wider than the block: keep the parts around it.
            pending.extend(_exclude(network, block))
    return remaining


def _exclude(network: IPNetwork, block: IPNetwork) -> list[IPNetwork]:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(block, ipaddress.IPv4Network):
        return list(network.address_exclude(block))
    if isinstance(network, ipaddress.IPv6Network) and isinstance(block, ipaddress.IPv6Network):
        return list(network.address_exclude(block))
    return [network]


def _parse_header_line(line: str, path: Path, number: int) -> tuple[str, str]:
    key, separator, value = line.lstrip("#").strip().partition(":")
    key = key.strip()
    if not separator or not key:
        raise NetworkDataError(f"{path}:{number}: header line must read '# key: value'")
    if key not in REQUIRED_KEYS and key not in OPTIONAL_KEYS:
        raise NetworkDataError(f"{path}:{number}: unknown header key {key!r}")
    return key, value.strip()


def _parse_prefix(line: str, path: Path, number: int) -> IPNetwork:
    # strict=True rejects host bits, so a mistyped prefix fails here instead of
    # silently matching a wider range than the vendor published.
    try:
        if ":" in line:
            return ipaddress.IPv6Network(line, strict=True)
        return ipaddress.IPv4Network(line, strict=True)
    except ValueError as error:
        raise NetworkDataError(f"{path}:{number}: invalid prefix {line!r}: {error}") from error


def _source_from_header(header: Mapping[str, str], path: Path) -> NetworkSource:
    missing = [key for key in REQUIRED_KEYS if not header.get(key)]
    if missing:
        raise NetworkDataError(f"{path}: header is missing {missing}")

    name = header["name"]
    if name != path.stem:
        raise NetworkDataError(f"{path}: header name {name!r} must match the file name {path.stem!r}")
    try:
        category = NetworkCategory(header["category"])
    except ValueError as error:
        allowed = [member.value for member in NetworkCategory]
        raise NetworkDataError(f"{path}: category {header['category']!r} is not one of {allowed}") from error
    try:
        retrieved_on = date.fromisoformat(header["retrieved_on"])
    except ValueError as error:
        raise NetworkDataError(f"{path}: retrieved_on {header['retrieved_on']!r} is not a YYYY-MM-DD date") from error
    try:
        prefix_count = int(header["prefix_count"])
    except ValueError as error:
        raise NetworkDataError(f"{path}: prefix_count {header['prefix_count']!r} is not an integer") from error

    return NetworkSource(
        name=name,
        category=category,
        provider=header["provider"],
        source_url=header["source_url"],
        retrieved_on=retrieved_on,
        prefix_count=prefix_count,
    )
