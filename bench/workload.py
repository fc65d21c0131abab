"""Request mixes that look like production traffic: many contacts and messages, browsers and bots.

Every generator takes a seeded `random.Random`, so two runs send the same mix.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

from google.type import money_pb2

from server.adapters.network_data.loader import DATA_DIR, load_network_directory, read_network_file
from topmail.tracking.v1 import email_event_pb2, tracking_service_pb2

# User agents of people reading mail or following links (desktop and mobile browsers, Outlook).
BROWSER_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
)
# User agents of HTTP libraries, crawlers, link previewers and headless browsers, and an empty one.
BOT_USER_AGENTS = (
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "",
)
BOT_USER_AGENT_SHARE = 0.25
DATACENTER_IP_SHARE = 0.20
PREFETCH_HEADER_SHARE = 0.02
# Blocks that consumer ISPs announce; addresses that any bundled list contains are skipped.
RESIDENTIAL_BLOCKS = ("24.0.0.0/8", "73.0.0.0/8", "86.0.0.0/8", "90.0.0.0/8", "98.0.0.0/8", "174.0.0.0/8")
DATACENTER_LISTS = ("aws.txt", "google_cloud.txt", "azure.txt", "digitalocean.txt")
# The first runs click messages of the first campaigns. The run on the large table gets new campaigns,
# so that its messages have no earlier clicks or opens either.
CAMPAIGNS = tuple(f"newsletter-2026-{week:02d}" for week in range(1, 21))
# The memory soak spreads its clicks over many messages, so that repeated requests make no bursts.
SOAK_CAMPAIGNS = tuple(f"soak-2026-{number:03d}" for number in range(100))
LATER_CAMPAIGNS = tuple(f"newsletter-2026-{week:02d}" for week in range(21, 41))
PRODUCT_COUNT = 500


@dataclass(frozen=True, slots=True)
class BenchContact:
    """A contact that the bench created through CreateContact."""

    contact_id: str
    email: str


def contact_email(index: int) -> str:
    return f"shopper-{index:06d}@bench.example.com"


class AddressPool:
    """Client IP addresses: residential ones outside every bundled list, and datacenter ones inside them."""

    def __init__(self, rng: random.Random, size: int = 2000) -> None:
        directory = load_network_directory()
        residential: list[str] = []
        blocks = [ipaddress.IPv4Network(block) for block in RESIDENTIAL_BLOCKS]
        while len(residential) < size:
            block = rng.choice(blocks)
            address = block[rng.randrange(1, block.num_addresses - 1)]
            if not directory.lookup(address):
                residential.append(str(address))
        datacenter: list[str] = []
        networks = [
            network
            for name in DATACENTER_LISTS
            for network in read_network_file(DATA_DIR / name).networks
            if network.version == 4 and network.num_addresses >= 4
        ]
        while len(datacenter) < size // 4:
            network = rng.choice(networks)
            datacenter.append(str(network[rng.randrange(1, network.num_addresses - 1)]))
        self.residential = tuple(residential)
        self.datacenter = tuple(datacenter)

    def pick(self, rng: random.Random) -> str:
        pool = self.datacenter if rng.random() < DATACENTER_IP_SHARE else self.residential
        return rng.choice(pool)


def pick_user_agent(rng: random.Random) -> str:
    agents = BOT_USER_AGENTS if rng.random() < BOT_USER_AGENT_SHARE else BROWSER_USER_AGENTS
    return rng.choice(agents)


def product_view_bodies(rng: random.Random, contacts: Sequence[BenchContact], count: int) -> tuple[bytes, ...]:
    """Serialize `count` TrackProductView requests for random contacts (by e-mail) and products."""
    bodies = []
    for _ in range(count):
        contact = rng.choice(contacts)
        product = rng.randrange(PRODUCT_COUNT)
        request = tracking_service_pb2.TrackProductViewRequest(
            email=contact.email,
            product_id=f"prod-{product:05d}",
            product_name=f"Wireless Headphones Model {product}",
            product_url=f"https://shop.example.com/products/{product}",
            image_url=f"https://cdn.shop.example.com/images/{product}.jpg",
            price=money_pb2.Money(currency_code="EUR", units=10 + product % 300, nanos=990_000_000),
            category="Electronics",
            brand="AudioCo",
            sku=f"SKU-{product:05d}-BLK",
            session_id=f"session-{rng.getrandbits(48):012x}",
        )
        bodies.append(request.SerializeToString())
    return tuple(bodies)


def click_bodies(
    rng: random.Random,
    contacts: Sequence[BenchContact],
    addresses: AddressPool,
    count: int,
    campaigns: Sequence[str] = CAMPAIGNS,
) -> tuple[bytes, ...]:
    """Serialize `count` RecordEmailEvent clicks spread over one message per contact and campaign."""
    bodies = []
    for _ in range(count):
        contact_index = rng.randrange(len(contacts))
        campaign = rng.choice(campaigns)
        link = rng.randrange(1, 6)
        headers = {"Sec-Purpose": "prefetch"} if rng.random() < PREFETCH_HEADER_SHARE else {}
        request = tracking_service_pb2.RecordEmailEventRequest(
            contact_id=contacts[contact_index].contact_id,
            message_id=f"{campaign}-{contact_index:06d}",
            campaign_id=campaign,
            event_type=email_event_pb2.EMAIL_EVENT_TYPE_CLICKED,
            client_ip=addresses.pick(rng),
            user_agent=pick_user_agent(rng),
            http_method="GET",
            request_headers=headers,
            link_url=f"https://shop.example.com/collections/{campaign}/{link}?utm_medium=email",
            link_id=f"{link}-{campaign[-2:]}",
        )
        bodies.append(request.SerializeToString())
    return tuple(bodies)


def newsletter_html(message_index: int, link_count: int) -> str:
    """Return a small newsletter body with `link_count` product links."""
    links = "\n".join(
        f'<p><a href="https://shop.example.com/products/{message_index % PRODUCT_COUNT}-{link}">Product {link}</a></p>'
        for link in range(1, link_count + 1)
    )
    return f"<!doctype html><html><body><h1>New this week</h1>\n{links}\n</body></html>"


def click_batch_bodies(
    rng: random.Random,
    contacts: Sequence[BenchContact],
    addresses: AddressPool,
    batches: int,
    events_per_batch: int,
    campaigns: Sequence[str],
) -> tuple[bytes, ...]:
    """Serialize RecordEmailEvents requests of `events_per_batch` clicks each, from `click_bodies`."""
    clicks = click_bodies(rng, contacts, addresses, batches * events_per_batch, campaigns)
    bodies = []
    for start in range(0, len(clicks), events_per_batch):
        request = tracking_service_pb2.RecordEmailEventsRequest()
        for click in clicks[start : start + events_per_batch]:
            request.requests.add().MergeFromString(click)
        bodies.append(request.SerializeToString())
    return tuple(bodies)
