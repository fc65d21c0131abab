"""Calls to the real server that prepare a run or are timed one by one: contacts, e-mails, statistics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from bench.workload import BenchContact, contact_email, newsletter_html
from topmail.tracking.v1 import (
    contact_service_pb2,
    contact_service_pb2_grpc,
    tracking_service_pb2,
    tracking_service_pb2_grpc,
)

SETUP_CONCURRENCY = 32
GATEWAY_CAMPAIGN = "gateway-campaign"
CALL_TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


def bearer(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


async def _gather_limited(count: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def limited(index: int) -> T:
        async with limit:
            return await call(index)

    return await asyncio.gather(*(limited(index) for index in range(count)))


def create_contacts(target: str, api_key: str, count: int) -> list[BenchContact]:
    """Create `count` contacts through CreateContact and return their ids and addresses."""

    async def create_all() -> list[BenchContact]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = contact_service_pb2_grpc.ContactServiceStub(channel)

            async def create(index: int) -> BenchContact:
                response = await stub.CreateContact(
                    contact_service_pb2.CreateContactRequest(email=contact_email(index)),
                    metadata=bearer(api_key),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                return BenchContact(contact_id=response.contact.id, email=response.contact.email)

            return await _gather_limited(count, create)

    return asyncio.run(create_all())


def tracking_paths(
    target: str, api_key: str, contacts: Sequence[BenchContact], message_count: int, links_per_message: int
) -> tuple[list[str], list[str]]:
    """Instrument one newsletter per message through InstrumentEmail; return its pixel and click paths.

    The paths are taken from the returned HTML, so they carry tokens exactly as the server signed them.
    """
    link = re.compile(r'(?:href|src)="https?://[^/"]+(/[oc]/[^"]+)"')

    async def instrument_all() -> list[list[str]]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)

            async def instrument(index: int) -> list[str]:
                contact = contacts[index % len(contacts)]
                response = await stub.InstrumentEmail(
                    tracking_service_pb2.InstrumentEmailRequest(
                        contact_id=contact.contact_id,
                        message_id=f"gateway-message-{index:06d}",
                        campaign_id=GATEWAY_CAMPAIGN,
                        html=newsletter_html(index, links_per_message),
                    ),
                    metadata=bearer(api_key),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                return link.findall(response.html)

            return await _gather_limited(message_count, instrument)

    paths = [path for message_paths in asyncio.run(instrument_all()) for path in message_paths]
    pixels = [path for path in paths if path.startswith("/o/")]
    clicks = [path for path in paths if path.startswith("/c/")]
    if len(pixels) != message_count or len(clicks) != message_count * links_per_message:
        raise RuntimeError(
            f"InstrumentEmail returned {len(pixels)} pixels and {len(clicks)} click links for {message_count} "
            f"messages; expected one pixel and {links_per_message} links each"
        )
    return pixels, clicks


def time_engagement_stats(target: str, api_key: str, campaign_id: str, calls: int) -> list[float]:
    """Call GetEngagementStats (with bots) for the campaign `calls` times in a row; return seconds per call."""
    durations = []
    with grpc.insecure_channel(target) as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        request = tracking_service_pb2.GetEngagementStatsRequest(campaign_id=campaign_id, include_bots=True)
        for _ in range(calls):
            started = time.perf_counter()
            stub.GetEngagementStats(request, metadata=bearer(api_key), timeout=CALL_TIMEOUT_SECONDS)
            durations.append(time.perf_counter() - started)
    return durations
