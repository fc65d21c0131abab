"""Download the vendors' published network lists and rewrite the files in data/.

Run as ``python -m server.adapters.network_data.refresh --data-dir DIR``. Each
source is fetched from its vendor URL, parsed, and written atomically (a
temporary file in the same folder, then a rename). A source that fails to
download or parse keeps its old file, and the run reports every source.
"""

from __future__ import annotations

import argparse
import csv
import enum
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from server.adapters.network_data.loader import (
    DATA_DIR,
    FILE_SUFFIX,
    NetworkDataError,
    collapse_networks,
    format_network_file,
    read_network_file,
    remove_special_purpose,
)
from server.domain.classification.networks import IPNetwork, NetworkCategory

logger = logging.getLogger(__name__)

USER_AGENT = "topmail-network-data-refresh/1"
DEFAULT_TIMEOUT_SECONDS = 60.0
# The cap bounds memory if a server sends an unexpected body. It is an estimate with
# wide headroom over the largest list, Apple's egress CSV of about 287,000 rows.
MAX_RESPONSE_BYTES = 128 * 1024 * 1024


class RefreshError(Exception):
    """A vendor list could not be downloaded or parsed."""


class RefreshStatus(enum.Enum):
    """Outcome of refreshing one data file."""

    UPDATED = "updated"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """Report for one data file after a refresh run: its status, prefix count and message."""

    name: str
    status: RefreshStatus
    prefix_count: int | None
    message: str


@dataclass(frozen=True, slots=True)
class ParsedList:
    """Prefixes read from one vendor document, with the vendor's own date when it has one."""

    networks: list[IPNetwork]
    published_on: date | None = None


@dataclass(frozen=True, slots=True)
class VendorSource:
    """One vendor list: where to download it, how to parse it and how to label its prefixes.

    When discover is set, url names a page whose text contains the link to the
    list itself, and discover extracts that link from the page.
    """

    name: str
    category: NetworkCategory
    provider: str
    url: str
    parse: Callable[[bytes], ParsedList]
    licence: str
    note: str
    discover: Callable[[bytes, str], str] | None = None


Fetch = Callable[[str], bytes]


def refresh_sources(
    data_dir: Path | None = None,
    *,
    sources: Sequence[VendorSource] | None = None,
    url_overrides: Mapping[str, str] | None = None,
    only: Iterable[str] | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    today: date | None = None,
) -> list[RefreshResult]:
    """Download, parse and atomically rewrite each vendor list, and return one result per data file.

    url_overrides maps a source name to a URL to use instead of the vendor URL.
    Data files that no vendor source produces (lists copied by hand from web
    pages) are reported as skipped and left untouched. Raises ValueError for an
    override or an `only` entry that names no source.
    """
    folder = DATA_DIR if data_dir is None else data_dir
    chosen_sources = list(VENDOR_SOURCES if sources is None else sources)
    known_names = {source.name for source in chosen_sources}
    overrides = dict(url_overrides or {})
    selected_names = set(only) if only is not None else None
    _check_names(set(overrides) | (selected_names or set()), known_names)
    retrieved_on = today if today is not None else datetime.now(UTC).date()

    def fetch(url: str) -> bytes:
        return fetch_url(url, timeout_seconds)

    results: list[RefreshResult] = []
    for source in chosen_sources:
        if selected_names is not None and source.name not in selected_names:
            continue
        url = overrides.get(source.name, source.url)
        results.append(refresh_source(source, url, folder, fetch, retrieved_on))

    if selected_names is None:
        results.extend(_report_manual_files(folder, known_names))
    return results


def refresh_source(source: VendorSource, url: str, folder: Path, fetch: Fetch, retrieved_on: date) -> RefreshResult:
    """Refresh one data file from url, keeping the old file when anything fails."""
    path = folder / f"{source.name}{FILE_SUFFIX}"
    old_count = _existing_prefix_count(path)
    logger.info("refreshing network list", extra={"source": source.name, "url": url})
    try:
        list_url, parsed = _download_and_parse(source, url, fetch)
        text = format_network_file(
            name=source.name,
            category=source.category,
            provider=source.provider,
            source_url=list_url,
            retrieved_on=retrieved_on,
            networks=parsed.networks,
            details=_details(source, parsed),
        )
        write_atomically(path, text)
    except (RefreshError, NetworkDataError, OSError) as error:
        outcome = "The old file was kept." if old_count is not None else "There was no old file to keep."
        logger.error(
            "network list refresh failed",
            extra={"source": source.name, "url": url, "error": str(error)},
        )
        return RefreshResult(source.name, RefreshStatus.FAILED, old_count, f"{error}. {outcome}")

    new_count = read_network_file(path).source.prefix_count
    was = f" (was {old_count})" if old_count is not None else ""
    logger.info("network list refreshed", extra={"source": source.name, "prefix_count": new_count})
    return RefreshResult(source.name, RefreshStatus.UPDATED, new_count, f"{new_count} prefixes{was} from {list_url}")


def fetch_url(url: str, timeout_seconds: float) -> bytes:
    """Return the body of an HTTP(S) GET, raising RefreshError on any failure or an oversized body."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise RefreshError(f"unsupported URL scheme in {url!r}. Use http or https.")
    # The scheme check above satisfies ruff's S310 rule, because file: and custom schemes never reach urllib.
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
            body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise RefreshError(f"HTTP {error.code} from {url}") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        # URLError and TimeoutError are OSErrors. HTTPException covers a truncated body,
        # and ValueError a URL that urllib cannot split into host and path.
        raise RefreshError(f"download of {url} failed: {error!r}") from error
    if len(body) > MAX_RESPONSE_BYTES:
        raise RefreshError(f"response from {url} exceeds {MAX_RESPONSE_BYTES} bytes")
    return body


def write_atomically(path: Path, text: str) -> None:
    """Replace path with text so that readers see either the old or the new file, never a partial one."""
    # The temporary file sits in the same folder, so os.replace is a rename within one file system.
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise


def _download_and_parse(source: VendorSource, url: str, fetch: Fetch) -> tuple[str, ParsedList]:
    list_url = url
    if source.discover is not None:
        list_url = source.discover(fetch(url), url)
    body = fetch(list_url)
    try:
        parsed = source.parse(body)
    except RefreshError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, csv.Error) as error:
        # A vendor that changes its format shows up here. JSON errors are ValueErrors,
        # a missing field is a KeyError, and an unexpected shape a TypeError or AttributeError.
        raise RefreshError(f"cannot parse the list from {list_url}: {error!r}") from error
    usable = remove_special_purpose(collapse_networks(parsed.networks))
    if not usable:
        raise RefreshError(f"the list from {list_url} contains no prefixes outside special-purpose ranges")
    published_on = parsed.published_on if parsed.published_on is not None else _date_in_url(list_url)
    return list_url, ParsedList(usable, published_on)


_URL_DATE = re.compile(r"_(\d{4})(\d{2})(\d{2})\.json$")


def _date_in_url(url: str) -> date | None:
    # Azure names its weekly Service Tags file ServiceTags_Public_YYYYMMDD.json.
    match = _URL_DATE.search(urllib.parse.urlsplit(url).path)
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def _details(source: VendorSource, parsed: ParsedList) -> dict[str, str]:
    details = {"licence": source.licence, "note": source.note}
    if parsed.published_on is not None:
        details["published_on"] = parsed.published_on.isoformat()
    return details


def _existing_prefix_count(path: Path) -> int | None:
    if not path.exists():
        return None
    try:
        return read_network_file(path).source.prefix_count
    except NetworkDataError:
        return None


def _report_manual_files(folder: Path, known_names: set[str]) -> list[RefreshResult]:
    results = []
    for path in sorted(folder.glob(f"*{FILE_SUFFIX}")):
        if path.stem in known_names:
            continue
        count = _existing_prefix_count(path)
        message = "no machine-readable vendor list, so update this file by hand from its source_url"
        results.append(RefreshResult(path.stem, RefreshStatus.SKIPPED, count, message))
    return results


def _check_names(names: set[str], known_names: set[str]) -> None:
    unknown = sorted(names - known_names)
    if unknown:
        raise ValueError(f"unknown source names {unknown}. Known sources: {sorted(known_names)}")


# --- Parsers, one per vendor format -------------------------------------------------


def _network(text: object) -> IPNetwork:
    if not isinstance(text, str):
        raise RefreshError(f"expected a prefix string, got {text!r}")
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as error:
        raise RefreshError(f"invalid prefix {text!r}: {error}") from error


def _json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))


def _iso_date(text: object) -> date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def parse_aws(body: bytes) -> ParsedList:
    """Parse ip-ranges.json: every IPv4 and IPv6 prefix of every AWS service."""
    document = _json(body)
    networks = [_network(row["ip_prefix"]) for row in document["prefixes"]]
    networks += [_network(row["ipv6_prefix"]) for row in document.get("ipv6_prefixes", [])]
    # createDate reads YYYY-MM-DD-hh-mm-ss.
    return ParsedList(networks, _iso_date(document.get("createDate")))


def parse_google_json(body: bytes) -> ParsedList:
    """Parse Google's prefix lists (cloud.json and the crawler and fetcher lists)."""
    document = _json(body)
    networks: list[IPNetwork] = []
    for row in document["prefixes"]:
        prefix = row.get("ipv4Prefix") or row.get("ipv6Prefix")
        if prefix is None:
            raise RefreshError(f"prefix entry without ipv4Prefix or ipv6Prefix: {row!r}")
        networks.append(_network(prefix))
    return ParsedList(networks, _iso_date(document.get("creationTime")))


def parse_azure_service_tags(body: bytes) -> ParsedList:
    """Parse the Azure Service Tags file and keep the AzureCloud tag, which covers all public Azure regions."""
    document = _json(body)
    for value in document["values"]:
        if value.get("name") == "AzureCloud":
            prefixes = value["properties"]["addressPrefixes"]
            return ParsedList([_network(prefix) for prefix in prefixes])
    raise RefreshError("the Service Tags file has no AzureCloud tag")


_SERVICE_TAGS_LINK = re.compile(r"""https?://[^"'\s<>]+/ServiceTags_Public_(\d{8})\.json""")


def discover_azure_service_tags(page: bytes, page_url: str) -> str:
    """Return the link to the current Service Tags file from Microsoft's download page.

    Microsoft renames the file every week, so it is found on the page. Only links
    on download.microsoft.com or on the page's own host are accepted.
    """
    page_host = urllib.parse.urlsplit(page_url).hostname
    for match in _SERVICE_TAGS_LINK.finditer(page.decode("utf-8", "replace")):
        link = match.group(0)
        host = urllib.parse.urlsplit(link).hostname
        if host in ("download.microsoft.com", page_host):
            return link
    raise RefreshError(f"no ServiceTags_Public_YYYYMMDD.json link found on {page_url}")


def parse_oracle(body: bytes) -> ParsedList:
    """Parse Oracle Cloud's public_ip_ranges.json."""
    document = _json(body)
    networks = [_network(cidr["cidr"]) for region in document["regions"] for cidr in region["cidrs"]]
    return ParsedList(networks, _iso_date(document.get("last_updated_timestamp")))


def parse_geofeed_csv(body: bytes) -> ParsedList:
    """Parse an RFC 8805 geofeed (prefix,country,region,city,postcode), as DigitalOcean, Linode and Apple publish."""
    networks: list[IPNetwork] = []
    for row in csv.reader(io.StringIO(body.decode("utf-8"))):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        networks.append(_network(row[0]))
    return ParsedList(networks)


def parse_vultr(body: bytes) -> ParsedList:
    """Parse Vultr's JSON geofeed from geofeed.constant.com."""
    document = _json(body)
    return ParsedList([_network(row["ip_prefix"]) for row in document["subnets"]])


def parse_microsoft_eop(body: bytes) -> ParsedList:
    """Parse the Microsoft 365 endpoints web service and keep Exchange Online Protection.

    Those are the endpoint sets whose URLs end in protection.outlook.com.
    """
    document = _json(body)
    networks: list[IPNetwork] = []
    for endpoint_set in document:
        urls = endpoint_set.get("urls", [])
        if any(url.endswith("protection.outlook.com") for url in urls):
            networks.extend(_network(prefix) for prefix in endpoint_set.get("ips", []))
    return ParsedList(networks)


_PROOFPOINT_CIDR = re.compile(r"CIDR:\s*([0-9A-Fa-f.:]+/\d{1,3})")


def parse_proofpoint(body: bytes) -> ParsedList:
    """Parse Proofpoint's support page, which lists its networks as 'CIDR: a.b.c.d/n'."""
    text = body.decode("utf-8", "replace")
    return ParsedList([_network(prefix) for prefix in _PROOFPOINT_CIDR.findall(text)])


_LICENCE_NOT_STATED = "not recorded here; check the vendor's terms of use"

VENDOR_SOURCES: tuple[VendorSource, ...] = (
    VendorSource(
        name="aws",
        category=NetworkCategory.DATACENTER,
        provider="aws",
        url="https://ip-ranges.amazonaws.com/ip-ranges.json",
        parse=parse_aws,
        licence=_LICENCE_NOT_STATED,
        note="all IPv4 and IPv6 prefixes of ip-ranges.json, every service and region",
    ),
    VendorSource(
        name="google_cloud",
        category=NetworkCategory.DATACENTER,
        provider="google",
        url="https://www.gstatic.com/ipranges/cloud.json",
        parse=parse_google_json,
        licence=_LICENCE_NOT_STATED,
        note="Google Cloud external ranges that customers' resources use (cloud.json)",
    ),
    VendorSource(
        name="azure",
        category=NetworkCategory.DATACENTER,
        provider="microsoft",
        url="https://www.microsoft.com/en-us/download/details.aspx?id=56519",
        parse=parse_azure_service_tags,
        discover=discover_azure_service_tags,
        licence=_LICENCE_NOT_STATED,
        note="prefixes of the AzureCloud service tag from the Azure Service Tags (Public Cloud) file",
    ),
    VendorSource(
        name="oracle_cloud",
        category=NetworkCategory.DATACENTER,
        provider="oracle",
        url="https://docs.oracle.com/en-us/iaas/tools/public_ip_ranges.json",
        parse=parse_oracle,
        licence=_LICENCE_NOT_STATED,
        note="all regions and tags of public_ip_ranges.json",
    ),
    VendorSource(
        name="digitalocean",
        category=NetworkCategory.DATACENTER,
        provider="digitalocean",
        url="https://www.digitalocean.com/geo/google.csv",
        parse=parse_geofeed_csv,
        licence=_LICENCE_NOT_STATED,
        note="DigitalOcean's geofeed; only the prefix column is kept",
    ),
    VendorSource(
        name="linode",
        category=NetworkCategory.DATACENTER,
        provider="linode",
        url="https://geoip.linode.com/",
        parse=parse_geofeed_csv,
        licence=_LICENCE_NOT_STATED,
        note="Linode's geofeed; only the prefix column is kept",
    ),
    VendorSource(
        name="vultr",
        category=NetworkCategory.DATACENTER,
        provider="vultr",
        url="https://geofeed.constant.com/?json",
        parse=parse_vultr,
        licence=_LICENCE_NOT_STATED,
        note="Vultr's JSON geofeed; documentation and other special-purpose prefixes it lists are removed",
    ),
    VendorSource(
        name="apple_private_relay",
        category=NetworkCategory.APPLE_PRIVACY_PROXY,
        provider="apple",
        url="https://mask-api.icloud.com/egress-ip-ranges.csv",
        parse=parse_geofeed_csv,
        licence=_LICENCE_NOT_STATED,
        note="iCloud Private Relay egress ranges; only the prefix column is kept, adjacent prefixes are merged",
    ),
    VendorSource(
        name="gmail_image_proxy",
        category=NetworkCategory.MAIL_IMAGE_PROXY,
        provider="google",
        url="https://developers.google.com/static/crawling/ipranges/user-triggered-fetchers-google.json",
        parse=parse_google_json,
        licence=_LICENCE_NOT_STATED,
        note=(
            "Google publishes no list for the Gmail image proxy alone; this is Google's list of Google-owned "
            "user-triggered fetcher ranges, whose reverse DNS names match google-proxy-*.google.com"
        ),
    ),
    VendorSource(
        name="microsoft_eop",
        category=NetworkCategory.SECURITY_SCANNER,
        provider="microsoft",
        url=f"https://endpoints.office.com/endpoints/worldwide?clientrequestid={uuid.uuid4()}",
        parse=parse_microsoft_eop,
        licence=_LICENCE_NOT_STATED,
        note="Exchange Online Protection: the endpoint sets for *.protection.outlook.com",
    ),
    VendorSource(
        name="proofpoint",
        category=NetworkCategory.SECURITY_SCANNER,
        provider="proofpoint",
        url="https://proofpoint.my.site.com/support/PPSup_SupportInfo",
        parse=parse_proofpoint,
        licence="not stated on the page",
        note=(
            "Proofpoint lists these networks as the ones its appliances must reach for updates, Secure Share "
            "and the hosted key service, so they are Proofpoint-operated; Proofpoint does not say that URL "
            "scanning runs from them"
        ),
    ),
)


# --- Command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a refresh from the command line and return 1 when any source failed, else 0.

    Invalid arguments end the process with status 2 through argparse.
    """
    parser = argparse.ArgumentParser(
        prog="python -m server.adapters.network_data.refresh",
        description="Download the vendors' network lists and rewrite the data files atomically.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help=f"folder with the network list files (default: {DATA_DIR})",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="refresh only this source; repeat for several (default: all sources)",
    )
    parser.add_argument(
        "--source-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="download source NAME from URL instead of the vendor URL; repeat for several",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"timeout per HTTP request in seconds (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    arguments = parser.parse_args(argv)

    overrides: dict[str, str] = {}
    for item in arguments.source_url:
        name, separator, url = item.partition("=")
        if not separator or not name or not url:
            parser.error(f"--source-url expects NAME=URL, got {item!r}")
        overrides[name] = url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        results = refresh_sources(
            arguments.data_dir,
            url_overrides=overrides,
            only=arguments.only,
            timeout_seconds=arguments.timeout,
        )
    except ValueError as error:
        parser.error(str(error))

    for result in results:
        count = "-" if result.prefix_count is None else str(result.prefix_count)
        print(f"{result.name}: {result.status.value}, {count} prefixes: {result.message}")
    failed = [result.name for result in results if result.status is RefreshStatus.FAILED]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
