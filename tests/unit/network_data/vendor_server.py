"""A local HTTP server that serves fake vendor documents in each vendor's real format.

The prefixes in these documents are test values, not vendor data. Each document
keeps the field names and layout of the real list, so the refresh parsers run
against the same shapes they meet in production.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class Document:
    """One response the server sends for a path."""

    body: bytes
    content_type: str = "application/json"
    status: HTTPStatus = HTTPStatus.OK


AWS_IP_RANGES = {
    "syncToken": "1764525005",
    "createDate": "2026-11-30-18-10-05",
    "prefixes": [
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON", "network_border_group": "x"},
        {"ip_prefix": "52.4.0.0/14", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
        {"ip_prefix": "52.4.0.0/14", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f18::/33", "region": "us-east-1", "service": "EC2", "network_border_group": "x"},
    ],
}

GOOGLE_CLOUD = {
    "syncToken": "1764500000000",
    "creationTime": "2026-11-29T23:00:00.000000",
    "prefixes": [
        {"ipv4Prefix": "34.80.0.0/15", "service": "Google Cloud", "scope": "asia-east1"},
        {"ipv6Prefix": "2600:1900::/35", "service": "Google Cloud", "scope": "us-central1"},
    ],
}

AZURE_SERVICE_TAGS = {
    "changeNumber": 400,
    "cloud": "Public",
    "values": [
        {
            "name": "AzureCloud",
            "id": "AzureCloud",
            "properties": {
                "changeNumber": 300,
                "region": "",
                "regionId": 0,
                "platform": "Azure",
                "systemService": "",
                "addressPrefixes": ["20.33.0.0/16", "20.34.0.0/15", "2603:1000::/40"],
                "networkFeatures": ["API", "NSG"],
            },
        },
        {
            "name": "AzureFrontDoor.Frontend",
            "id": "AzureFrontDoor.Frontend",
            "properties": {"changeNumber": 5, "addressPrefixes": ["13.107.246.0/24"]},
        },
    ],
}

ORACLE_RANGES = {
    "last_updated_timestamp": "2026-11-28T10:00:00.123456",
    "regions": [
        {"region": "us-phoenix-1", "cidrs": [{"cidr": "129.146.0.0/21", "tags": ["OCI"]}]},
        {"region": "eu-frankfurt-1", "cidrs": [{"cidr": "130.61.0.0/16", "tags": ["OCI", "OSN"]}]},
    ],
}

DIGITALOCEAN_CSV = b"5.101.96.0/21,NL,NL-NH,Amsterdam,1098 XH\n2a03:b0c0::/32,NL,NL-NH,Amsterdam,1098 XH\n"

LINODE_GEOFEED = (
    b"# Linode geofeed, RFC 8805\n"
    b"# prefix,country,region,city,postcode\n"
    b"45.33.0.0/17,US,US-TX,Richardson,\n"
    b"2600:3c00::/32,US,US-TX,Richardson,\n"
)

VULTR_GEOFEED = {
    "description": "Vultr geofeed",
    "asn": 20473,
    "email": "noc@example.com",
    "updated": "2026-11-30",
    "subnets": [
        {"ip_prefix": "45.32.0.0/21", "alpha2code": "US", "region": "US-NJ", "city": "Piscataway", "postal_code": ""},
        # The real feed lists documentation prefixes too; refresh must drop them.
        {"ip_prefix": "203.0.113.0/24", "alpha2code": "US", "region": "", "city": "", "postal_code": ""},
    ],
}

APPLE_EGRESS_CSV = b"172.224.226.0/27,US,US-CA,Los Angeles,\n2a02:26f7:b3c0:4000::/64,US,US-CA,Los Angeles,\n"

GOOGLE_USER_TRIGGERED = {
    "creationTime": "2026-11-30T12:00:00.000000",
    "prefixes": [{"ipv4Prefix": "66.249.83.192/27"}, {"ipv6Prefix": "2001:4860:4801:2008::/64"}],
}

MICROSOFT_ENDPOINTS = [
    {"id": 1, "serviceArea": "Exchange", "urls": ["outlook.office.com"], "ips": ["40.96.0.0/13"], "tcpPorts": "443"},
    {
        "id": 9,
        "serviceArea": "Exchange",
        "urls": ["*.protection.outlook.com"],
        "ips": ["40.92.0.0/15", "40.107.0.0/16", "2a01:111:f403::/48"],
        "tcpPorts": "443",
    },
    {
        "id": 10,
        "serviceArea": "Exchange",
        "urls": ["*.mail.protection.outlook.com"],
        "ips": ["40.92.0.0/15", "40.107.0.0/16", "104.47.0.0/17"],
        "tcpPorts": "25",
    },
    {"id": 56, "serviceArea": "Common", "urls": ["login.microsoftonline.com"], "ips": ["20.190.128.0/18"]},
]

PROOFPOINT_PAGE = (
    b"<html><body><p>Ports 443/tcp, 80/tcp and 53/udp+tcp need to be open to all of the following IP ranges: "
    b"CIDR: 62.209.50.0/24 CIDR: 67.231.144.0/20</p></body></html>"
)


def _json_document(value: object) -> Document:
    return Document(json.dumps(value).encode("utf-8"))


def vendor_documents(base_url: str) -> dict[str, Document]:
    """Return the fake vendor documents by path; base_url lets the Azure page link to this server."""
    service_tags_path = "/download/7/1/d/ServiceTags_Public_20261130.json"
    azure_page = f'<html><a href="{base_url}{service_tags_path}" class="download">Download</a></html>'.encode()
    return {
        "/aws/ip-ranges.json": _json_document(AWS_IP_RANGES),
        "/google/cloud.json": _json_document(GOOGLE_CLOUD),
        "/azure/details.aspx": Document(azure_page, "text/html"),
        service_tags_path: _json_document(AZURE_SERVICE_TAGS),
        "/oracle/public_ip_ranges.json": _json_document(ORACLE_RANGES),
        "/digitalocean/google.csv": Document(DIGITALOCEAN_CSV, "text/csv"),
        "/linode/": Document(LINODE_GEOFEED, "text/plain"),
        "/vultr/geofeed.json": _json_document(VULTR_GEOFEED),
        "/apple/egress-ip-ranges.csv": Document(APPLE_EGRESS_CSV, "text/csv"),
        "/google/user-triggered-fetchers-google.json": _json_document(GOOGLE_USER_TRIGGERED),
        "/microsoft/endpoints/worldwide": _json_document(MICROSOFT_ENDPOINTS),
        "/proofpoint/support": Document(PROOFPOINT_PAGE, "text/html"),
        # Broken documents for the failure tests.
        "/broken/not-json": Document(b"{this is not json", "application/json"),
        "/broken/aws-without-prefixes": _json_document({"syncToken": "1", "createDate": "2026-11-30-00-00-00"}),
        "/broken/empty.csv": Document(b"", "text/csv"),
        "/broken/host-bits.csv": Document(b"45.33.0.1/17,US,US-TX,Richardson,\n", "text/csv"),
        "/broken/only-documentation.json": _json_document({"subnets": [{"ip_prefix": "198.51.100.0/24"}]}),
        "/broken/azure-page-without-link": Document(b"<html>no download link</html>", "text/html"),
    }


def vendor_urls(base_url: str) -> dict[str, str]:
    """Return a URL override for every vendor source, pointing at the fake documents."""
    return {
        "aws": f"{base_url}/aws/ip-ranges.json",
        "google_cloud": f"{base_url}/google/cloud.json",
        "azure": f"{base_url}/azure/details.aspx",
        "oracle_cloud": f"{base_url}/oracle/public_ip_ranges.json",
        "digitalocean": f"{base_url}/digitalocean/google.csv",
        "linode": f"{base_url}/linode/",
        "vultr": f"{base_url}/vultr/geofeed.json",
        "apple_private_relay": f"{base_url}/apple/egress-ip-ranges.csv",
        "gmail_image_proxy": f"{base_url}/google/user-triggered-fetchers-google.json",
        "microsoft_eop": f"{base_url}/microsoft/endpoints/worldwide",
        "proofpoint": f"{base_url}/proofpoint/support",
    }


class _VendorHandler(BaseHTTPRequestHandler):
    documents: Mapping[str, Document] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        document = self.documents.get(path)
        if document is None:
            document = Document(b"not found", "text/plain", HTTPStatus.NOT_FOUND)
        self.send_response(document.status)
        self.send_header("Content-Type", document.content_type)
        self.send_header("Content-Length", str(len(document.body)))
        self.end_headers()
        self.wfile.write(document.body)

    def log_message(self, format: str, *args: object) -> None:
        # Requests are not logged: pytest output stays readable.
        return


@contextmanager
def running_vendor_server() -> Iterator[str]:
    """Serve the fake vendor documents on 127.0.0.1 at an ephemeral port and yield the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VendorHandler)
    host, port = server.server_address[0], server.server_address[1]
    base_url = f"http://{host!s}:{port}"
    handler = type("Handler", (_VendorHandler,), {"documents": vendor_documents(base_url)})
    server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
