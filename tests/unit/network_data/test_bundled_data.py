"""The network lists shipped in data/: every file parses and the known addresses classify as published."""

from __future__ import annotations

import ipaddress
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from server.adapters.network_data import DATA_DIR, load_network_directory, oldest_source_age_days
from server.adapters.network_data.loader import (
    FILE_SUFFIX,
    SPECIAL_PURPOSE_NETWORKS,
    NetworkListFile,
    read_network_file,
)
from server.domain.classification.networks import NetworkCategory, NetworkDirectory, NetworkMatch

DATA_FILES = sorted(DATA_DIR.glob(f"*{FILE_SUFFIX}"))


@pytest.fixture(scope="module")
def directory() -> NetworkDirectory:
    return load_network_directory()


@pytest.fixture(scope="module")
def bundled_files() -> list[NetworkListFile]:
    return [read_network_file(path) for path in DATA_FILES]


def test_data_folder_has_files() -> None:
    assert len(DATA_FILES) >= 4


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda path: path.name)
def test_bundled_file_parses(path: Path) -> None:
    listed = read_network_file(path)

    assert listed.source.name == path.stem
    assert listed.source.prefix_count == len(listed.networks)
    assert listed.source.prefix_count > 0
    assert listed.source.source_url.startswith("https://")
    assert listed.source.retrieved_on <= date.today()
    assert "licence" in listed.details
    assert "note" in listed.details


def test_every_category_has_prefixes(bundled_files: list[NetworkListFile]) -> None:
    counts: Counter[NetworkCategory] = Counter()
    for listed in bundled_files:
        counts[listed.source.category] += listed.source.prefix_count

    for category in NetworkCategory:
        assert counts[category] > 0, f"no prefixes for {category.value}"


def test_bundled_prefixes_avoid_special_purpose_blocks(bundled_files: list[NetworkListFile]) -> None:
    for listed in bundled_files:
        for network in listed.networks:
            overlapping = [block for block in SPECIAL_PURPOSE_NETWORKS if network.overlaps(block)]
            assert overlapping == [], f"{listed.source.name} lists {network}, which overlaps {overlapping}"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # Exchange Online Protection, 40.107.0.0/16 in Microsoft's endpoint sets 9 and 10.
        ("40.107.218.12", NetworkMatch(NetworkCategory.SECURITY_SCANNER, "microsoft")),
        # iCloud Private Relay egress.
        ("172.224.226.5", NetworkMatch(NetworkCategory.APPLE_PRIVACY_PROXY, "apple")),
        # 52.4.0.0/14 is listed with service EC2, region us-east-1, in ip-ranges.json.
        ("52.4.12.34", NetworkMatch(NetworkCategory.DATACENTER, "aws")),
        # Google-owned user-triggered fetchers, 66.249.83.192/27.
        ("66.249.83.210", NetworkMatch(NetworkCategory.MAIL_IMAGE_PROXY, "google")),
    ],
)
def test_published_address_matches(directory: NetworkDirectory, address: str, expected: NetworkMatch) -> None:
    matches = directory.lookup(ipaddress.ip_address(address))

    assert expected in matches


@pytest.mark.parametrize("address", ["203.0.113.7", "198.51.100.50", "2001:db8::7", "192.0.2.1", "10.1.2.3"])
def test_documentation_and_private_addresses_match_nothing(directory: NetworkDirectory, address: str) -> None:
    assert directory.lookup(ipaddress.ip_address(address)) == ()


def test_ipv4_mapped_address_matches_as_ipv4(directory: NetworkDirectory) -> None:
    matches = directory.lookup(ipaddress.ip_address("::ffff:40.107.218.12"))

    assert NetworkMatch(NetworkCategory.SECURITY_SCANNER, "microsoft") in matches


def test_directory_reports_one_source_per_file(directory: NetworkDirectory) -> None:
    names = [source.name for source in directory.sources]

    assert names == [path.stem for path in DATA_FILES]
    assert len(directory) == sum(source.prefix_count for source in directory.sources)


def test_sources_carry_retrieval_dates(directory: NetworkDirectory) -> None:
    for source in directory.sources:
        assert isinstance(source.retrieved_on, date), source.name

    oldest = min(source.retrieved_on for source in directory.sources)
    assert oldest_source_age_days(directory.sources, oldest) == 0
    assert oldest_source_age_days(directory.sources, date(2030, 1, 1)) == (date(2030, 1, 1) - oldest).days


def test_readme_lists_every_file_with_its_count(bundled_files: list[NetworkListFile]) -> None:
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("|")]

    for listed in bundled_files:
        file_name = f"`{listed.source.name}{FILE_SUFFIX}`"
        row = next((line for line in rows if file_name in line), None)
        assert row is not None, f"README.md has no table row for {file_name}"
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert f"{listed.source.prefix_count:,}" in cells, f"README.md row for {file_name} has a stale prefix count"
        assert listed.source.retrieved_on.isoformat() in row, f"README.md row for {file_name} has a stale date"
