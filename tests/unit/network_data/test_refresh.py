"""Refresh against a local HTTP server that serves fake vendor documents; no test reaches the internet."""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from server.adapters.network_data import DATA_DIR, load_network_directory
from server.adapters.network_data.loader import read_network_file
from server.adapters.network_data.refresh import (
    VENDOR_SOURCES,
    RefreshResult,
    RefreshStatus,
    main,
    refresh_sources,
)
from server.domain.classification.networks import NetworkCategory, NetworkMatch
from tests.unit.network_data.vendor_server import running_vendor_server, vendor_urls

TODAY = date(2026, 12, 1)
TIMEOUT_SECONDS = 5.0


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_vendor_server() as url:
        yield url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the bundled data, so refresh has old files to keep or replace."""
    folder = tmp_path / "data"
    shutil.copytree(DATA_DIR, folder)
    return folder


def local_urls(base_url: str, **replacements: str) -> dict[str, str]:
    """Return an override for every vendor source, so a refresh never falls back to a vendor URL."""
    urls = vendor_urls(base_url)
    assert set(urls) == {source.name for source in VENDOR_SOURCES}
    for name, path in replacements.items():
        urls[name] = f"{base_url}{path}"
    return urls


def by_name(results: list[RefreshResult]) -> dict[str, RefreshResult]:
    return {result.name: result for result in results}


def test_refresh_updates_every_vendor_file(base_url: str, data_dir: Path) -> None:
    results = by_name(
        refresh_sources(data_dir, url_overrides=local_urls(base_url), timeout_seconds=TIMEOUT_SECONDS, today=TODAY)
    )

    for source in VENDOR_SOURCES:
        assert results[source.name].status is RefreshStatus.UPDATED, results[source.name].message
    assert results["fortinet_sandbox"].status is RefreshStatus.SKIPPED
    assert list(data_dir.glob(".*.tmp")) == []

    directory = load_network_directory(data_dir)
    expected = {
        "40.107.218.12": NetworkMatch(NetworkCategory.SECURITY_SCANNER, "microsoft"),
        "172.224.226.5": NetworkMatch(NetworkCategory.APPLE_PRIVACY_PROXY, "apple"),
        "52.4.12.34": NetworkMatch(NetworkCategory.DATACENTER, "aws"),
        "66.249.83.210": NetworkMatch(NetworkCategory.MAIL_IMAGE_PROXY, "google"),
        "20.33.1.1": NetworkMatch(NetworkCategory.DATACENTER, "microsoft"),
        "62.209.50.7": NetworkMatch(NetworkCategory.SECURITY_SCANNER, "proofpoint"),
    }
    for address, match in expected.items():
        assert match in directory.lookup(ipaddress.ip_address(address)), address
    assert directory.lookup(ipaddress.ip_address("203.0.113.7")) == ()


def test_refreshed_file_records_source_and_dates(base_url: str, data_dir: Path) -> None:
    refresh_sources(
        data_dir,
        url_overrides=local_urls(base_url),
        only=["aws", "azure", "vultr"],
        timeout_seconds=TIMEOUT_SECONDS,
        today=TODAY,
    )

    aws = read_network_file(data_dir / "aws.txt")
    assert aws.source.source_url == f"{base_url}/aws/ip-ranges.json"
    assert aws.source.retrieved_on == TODAY
    assert aws.details["published_on"] == "2026-11-30"
    assert [str(network) for network in aws.networks] == ["3.5.140.0/22", "52.4.0.0/14", "2600:1f18::/33"]

    azure = read_network_file(data_dir / "azure.txt")
    assert azure.source.source_url == f"{base_url}/download/7/1/d/ServiceTags_Public_20261130.json"
    assert azure.details["published_on"] == "2026-11-30"
    assert [str(network) for network in azure.networks] == ["20.33.0.0/16", "20.34.0.0/15", "2603:1000::/40"]

    vultr = read_network_file(data_dir / "vultr.txt")
    assert [str(network) for network in vultr.networks] == ["45.32.0.0/21"]


def test_refresh_keeps_only_exchange_online_protection(base_url: str, data_dir: Path) -> None:
    refresh_sources(
        data_dir, url_overrides=local_urls(base_url), only=["microsoft_eop"], timeout_seconds=TIMEOUT_SECONDS
    )

    networks = [str(network) for network in read_network_file(data_dir / "microsoft_eop.txt").networks]
    assert networks == ["40.92.0.0/15", "40.107.0.0/16", "104.47.0.0/17", "2a01:111:f403::/48"]


@pytest.mark.parametrize(
    ("name", "path", "reason"),
    [
        ("aws", "/missing/ip-ranges.json", "HTTP 404"),
        ("google_cloud", "/broken/not-json", "cannot parse"),
        ("aws", "/broken/aws-without-prefixes", "cannot parse"),
        ("digitalocean", "/broken/empty.csv", "no prefixes"),
        ("linode", "/broken/host-bits.csv", "invalid prefix"),
        ("vultr", "/broken/only-documentation.json", "no prefixes outside special-purpose ranges"),
        ("azure", "/broken/azure-page-without-link", "no ServiceTags_Public_YYYYMMDD.json link"),
    ],
)
def test_failed_source_keeps_old_file(base_url: str, data_dir: Path, name: str, path: str, reason: str) -> None:
    target = data_dir / f"{name}.txt"
    before = target.read_bytes()

    results = refresh_sources(
        data_dir,
        url_overrides=local_urls(base_url, **{name: path}),
        only=[name],
        timeout_seconds=TIMEOUT_SECONDS,
        today=TODAY,
    )

    assert [result.status for result in results] == [RefreshStatus.FAILED]
    assert reason in results[0].message
    assert "The old file was kept." in results[0].message
    assert results[0].prefix_count == read_network_file(target).source.prefix_count
    assert target.read_bytes() == before
    assert list(data_dir.glob(".*.tmp")) == []


def test_unreachable_server_fails_and_others_still_update(base_url: str, data_dir: Path) -> None:
    # Bind and close a socket to get a local port that nothing listens on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    urls = local_urls(base_url)
    urls["oracle_cloud"] = f"http://127.0.0.1:{closed_port}/public_ip_ranges.json"
    before = (data_dir / "oracle_cloud.txt").read_bytes()

    results = by_name(
        refresh_sources(
            data_dir,
            url_overrides=urls,
            only=["oracle_cloud", "proofpoint"],
            timeout_seconds=TIMEOUT_SECONDS,
            today=TODAY,
        )
    )

    assert results["oracle_cloud"].status is RefreshStatus.FAILED
    assert "download of" in results["oracle_cloud"].message
    assert (data_dir / "oracle_cloud.txt").read_bytes() == before
    assert results["proofpoint"].status is RefreshStatus.UPDATED


def test_failed_source_without_old_file(base_url: str, tmp_path: Path) -> None:
    results = refresh_sources(
        tmp_path,
        url_overrides=local_urls(base_url, aws="/missing/ip-ranges.json"),
        only=["aws"],
        timeout_seconds=TIMEOUT_SECONDS,
    )

    assert results[0].status is RefreshStatus.FAILED
    assert results[0].prefix_count is None
    assert "no old file to keep" in results[0].message
    assert not (tmp_path / "aws.txt").exists()


def test_unknown_source_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source names"):
        refresh_sources(tmp_path, url_overrides={"mimecast": "http://127.0.0.1:9/"})
    with pytest.raises(ValueError, match="unknown source names"):
        refresh_sources(tmp_path, only=["mimecast"])


def test_non_http_url_is_rejected(data_dir: Path) -> None:
    results = refresh_sources(data_dir, url_overrides={"aws": "file:///etc/passwd"}, only=["aws"])

    assert results[0].status is RefreshStatus.FAILED
    assert "unsupported URL scheme" in results[0].message


def test_command_line_reports_each_source(base_url: str, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = main(
        [
            "--data-dir",
            str(data_dir),
            "--only",
            "proofpoint",
            "--source-url",
            f"proofpoint={base_url}/proofpoint/support",
            "--timeout",
            str(TIMEOUT_SECONDS),
        ]
    )

    assert exit_code == 0
    assert capsys.readouterr().out.startswith("proofpoint: updated, 2 prefixes")


def test_command_line_exits_1_when_a_source_fails(
    base_url: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = main(
        [
            "--data-dir",
            str(data_dir),
            "--only",
            "proofpoint",
            "--source-url",
            f"proofpoint={base_url}/missing/page",
        ]
    )

    assert exit_code == 1
    assert "proofpoint: failed, 7 prefixes: HTTP 404" in capsys.readouterr().out


def test_command_line_rejects_malformed_source_url(data_dir: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--data-dir", str(data_dir), "--source-url", "proofpoint"])

    assert stopped.value.code == 2
