"""The network list file format: writing, reading and the errors for malformed files."""

from __future__ import annotations

import ipaddress
from datetime import date
from pathlib import Path

import pytest

from server.adapters.network_data import NetworkDataError, load_network_directory, oldest_source_age_days
from server.adapters.network_data.loader import format_network_file, read_network_file
from server.domain.classification.networks import NetworkCategory, NetworkMatch, NetworkSource

VALID_FILE = """# network-data v1
# name: example
# category: datacenter
# provider: example
# source_url: https://example.com/ranges.json
# retrieved_on: 2026-11-30
# prefix_count: 2
# note: test file
45.32.0.0/21
2600:3c00::/32
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_reads_header_and_prefixes(tmp_path: Path) -> None:
    listed = read_network_file(write(tmp_path, "example", VALID_FILE))

    assert listed.source == NetworkSource(
        name="example",
        category=NetworkCategory.DATACENTER,
        provider="example",
        source_url="https://example.com/ranges.json",
        retrieved_on=date(2026, 11, 30),
        prefix_count=2,
    )
    assert listed.networks == (ipaddress.ip_network("45.32.0.0/21"), ipaddress.ip_network("2600:3c00::/32"))
    assert listed.details == {"note": "test file"}


def test_loader_builds_directory_from_folder(tmp_path: Path) -> None:
    write(tmp_path, "example", VALID_FILE)

    directory = load_network_directory(tmp_path)

    assert directory.lookup(ipaddress.ip_address("45.32.1.1")) == (NetworkMatch(NetworkCategory.DATACENTER, "example"),)
    assert directory.lookup(ipaddress.ip_address("45.32.8.1")) == ()
    assert [source.name for source in directory.sources] == ["example"]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NetworkDataError, match="no network list files"):
        load_network_directory(tmp_path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("# network-data v1\n", "# some other format\n", "line 1 must be"),
        ("# prefix_count: 2", "# prefix_count: 3", "truncated"),
        ("# name: example", "# name: other", "must match the file name"),
        ("# category: datacenter", "# category: cloud", "is not one of"),
        ("# retrieved_on: 2026-11-30", "# retrieved_on: 30.11.2026", "not a YYYY-MM-DD date"),
        ("# provider: example\n", "", "header is missing"),
        ("# note: test file", "# colour: blue", "unknown header key"),
        ("45.32.0.0/21", "45.32.0.1/21", "invalid prefix"),
        ("45.32.0.0/21", "not-a-prefix", "invalid prefix"),
        ("2600:3c00::/32\n", "2600:3c00::/32\n# late: header\n", "header line after the first prefix"),
    ],
)
def test_malformed_file_is_rejected(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in VALID_FILE
    path = write(tmp_path, "example", VALID_FILE.replace(old, new))

    with pytest.raises(NetworkDataError, match=message):
        read_network_file(path)


def test_one_bad_file_fails_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path, "example", VALID_FILE)
    write(tmp_path, "broken", VALID_FILE.replace("# name: example", "# name: broken").replace("45.32.0.0", "x"))

    with pytest.raises(NetworkDataError, match=r"broken\.txt"):
        load_network_directory(tmp_path)


def test_format_round_trips_through_reader(tmp_path: Path) -> None:
    networks = [ipaddress.ip_network("45.32.0.0/21"), ipaddress.ip_network("2600:3c00::/32")]
    text = format_network_file(
        name="example",
        category=NetworkCategory.DATACENTER,
        provider="example",
        source_url="https://example.com/ranges.json",
        retrieved_on=date(2026, 11, 30),
        networks=networks,
        details={"note": "test file"},
    )

    assert text == VALID_FILE
    assert read_network_file(write(tmp_path, "example", text)).networks == tuple(networks)


def test_format_merges_adjacent_and_nested_prefixes() -> None:
    networks = [
        ipaddress.ip_network("45.32.0.0/22"),
        ipaddress.ip_network("45.32.4.0/22"),
        ipaddress.ip_network("45.32.1.0/24"),
    ]

    text = format_network_file(
        name="example",
        category=NetworkCategory.DATACENTER,
        provider="example",
        source_url="https://example.com/ranges.json",
        retrieved_on=date(2026, 11, 30),
        networks=networks,
    )

    assert text.endswith("# prefix_count: 1\n45.32.0.0/21\n")


def test_format_cuts_special_purpose_blocks_out() -> None:
    networks = [
        ipaddress.ip_network("198.51.100.0/24"),  # documentation: dropped whole
        ipaddress.ip_network("192.0.0.0/22"),  # contains 192.0.0.0/24 and 192.0.2.0/24
        ipaddress.ip_network("2001:db8::/32"),  # documentation: dropped whole
        ipaddress.ip_network("2002::/16"),  # 6to4: dropped whole
    ]

    text = format_network_file(
        name="example",
        category=NetworkCategory.DATACENTER,
        provider="example",
        source_url="https://example.com/ranges.json",
        retrieved_on=date(2026, 11, 30),
        networks=networks,
    )

    prefixes = [line for line in text.splitlines() if not line.startswith("#")]
    assert prefixes == ["192.0.1.0/24", "192.0.3.0/24"]


def test_format_rejects_multiline_header_value() -> None:
    with pytest.raises(NetworkDataError, match="single line"):
        format_network_file(
            name="example",
            category=NetworkCategory.DATACENTER,
            provider="example",
            source_url="https://example.com/ranges.json",
            retrieved_on=date(2026, 11, 30),
            networks=[ipaddress.ip_network("45.32.0.0/21")],
            details={"note": "first line\nsecond line"},
        )


def test_format_rejects_unknown_detail_key() -> None:
    with pytest.raises(NetworkDataError, match="unknown header keys"):
        format_network_file(
            name="example",
            category=NetworkCategory.DATACENTER,
            provider="example",
            source_url="https://example.com/ranges.json",
            retrieved_on=date(2026, 11, 30),
            networks=[ipaddress.ip_network("45.32.0.0/21")],
            details={"colour": "blue"},
        )


def test_oldest_source_age_counts_days_from_oldest() -> None:
    sources = [
        NetworkSource("a", NetworkCategory.DATACENTER, "a", "https://a.example", date(2026, 11, 1), 1),
        NetworkSource("b", NetworkCategory.DATACENTER, "b", "https://b.example", date(2026, 10, 2), 1),
    ]

    assert oldest_source_age_days(sources, date(2026, 11, 1)) == 30


def test_oldest_source_age_needs_sources() -> None:
    with pytest.raises(ValueError, match="no network sources"):
        oldest_source_age_days([], date(2026, 11, 1))
