"""Assembles the gRPC server: storage, use cases, servicers, health checking and reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The typeshed stubs of grpcio-health-checking lack the `aio` alias of the asyncio servicer.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from sqlalchemy import Engine

from server.adapters.database.email_event_store import SqlEmailEventStore
from server.adapters.database.engine import PoolSettings, create_database_engine, normalize_database_url
from server.adapters.database.flow_trigger_store import SqlFlowTriggerStore
from server.adapters.database.migrations import ensure_schema_current
from server.adapters.database.repository import SqlStore
from server.adapters.network_data import load_network_directory, oldest_source_age_days
from server.domain.classification import BotClassifier, load_user_agent_matcher
from server.domain.errors import StorageUnavailable
from server.entrypoints.grpc_api.binding import ServiceBinder
from server.entrypoints.grpc_api.flow_triggers import FlowTriggerServicer
from server.entrypoints.grpc_api.servicers import ContactServicer, TrackingServicer
from server.entrypoints.link_settings import GatewayAuthenticator, parse_signing_keys
from server.entrypoints.settings import Settings
from server.usecases.contacts import ContactDirectory
from server.usecases.email_events import EmailEventRecorder
from server.usecases.flow_triggers import FlowTriggerFeed
from server.usecases.group_commit import GroupCommit, GroupCommitSettings
from server.usecases.product_views import ProductViewTracker
from server.usecases.tracking_links import LinkSettings, TrackingLinks
from server.usecases.workspaces import Authenticator
from topmail.tracking.v1 import contact_service_pb2, flow_trigger_service_pb2, tracking_service_pb2

logger = logging.getLogger(__name__)

CONTACT_SERVICE = contact_service_pb2.DESCRIPTOR.services_by_name["ContactService"]
TRACKING_SERVICE = tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"]
FLOW_TRIGGER_SERVICE = flow_trigger_service_pb2.DESCRIPTOR.services_by_name["FlowTriggerService"]
SERVICES = (CONTACT_SERVICE, TRACKING_SERVICE, FLOW_TRIGGER_SERVICE)


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_classifier(network_data_dir: str = "") -> BotClassifier:
    """Load the network data and user-agent patterns once, and log which data is in use and its age."""
    networks = load_network_directory(Path(network_data_dir) if network_data_dir else None)
    user_agents = load_user_agent_matcher()
    today = utc_now().date()
    for source in networks.sources:
        logger.info(
            "network data loaded",
            extra={
                "source": source.name,
                "category": source.category.value,
                "provider": source.provider,
                "prefixes": source.prefix_count,
                "retrieved_on": source.retrieved_on.isoformat(),
                "age_days": (today - source.retrieved_on).days,
            },
        )
    classifier = BotClassifier(networks, user_agents)
    logger.info(
        "bot classifier ready",
        extra={
            "classifier_version": classifier.version,
            "prefixes": len(networks),
            "oldest_network_data_days": oldest_source_age_days(networks.sources, today),
        },
    )
    return classifier


@dataclass
class GrpcApp:
    """A started gRPC server and what it owns; `stop` releases all of it."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    executor: ThreadPoolExecutor
    engine: Engine
    port: int
    flow_triggers: FlowTriggerServicer
    pruning: asyncio.Task[None]
    group_commits: tuple[GroupCommit[Any, Any], ...]

    async def stop(self, grace_seconds: float) -> None:
        """Report NOT_SERVING, end trigger streams, let other calls finish within the grace period, then close."""
        await self.health.enter_graceful_shutdown()
        self.pruning.cancel()
        self.flow_triggers.close()
        await self.server.stop(grace_seconds)
        # Batches that started before or during the grace period still commit.
        for group_commit in self.group_commits:
            await group_commit.close()
        self.executor.shutdown(wait=True)
        self.engine.dispose()


async def start_grpc_app(settings: Settings) -> GrpcApp:
    """Check the schema, build the object graph and start listening; raise SchemaOutdated, OSError or ValueError."""
    if not 0 <= settings.trigger_retention_hours < float("inf"):
        raise ValueError(f"--trigger-retention-hours must be 0 or more, got {settings.trigger_retention_hours}")
    if not 0 < settings.trigger_pruning_interval_seconds < float("inf"):
        raise ValueError(
            f"--trigger-pruning-interval-seconds must be more than 0, got {settings.trigger_pruning_interval_seconds}"
        )
    if settings.write_batch_size < 1:
        raise ValueError(f"--write-batch-size must be at least 1, got {settings.write_batch_size}")
    if settings.batch_writers < 0:
        raise ValueError(f"--batch-writers must be 0 or more, got {settings.batch_writers}")
    engine = create_database_engine(
        settings.database_url, PoolSettings(size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
    )
    try:
        ensure_schema_current(engine)
    except Exception:
        engine.dispose()
        raise
    store = SqlStore(engine)
    contacts = ContactDirectory(store, utc_now)
    classifier = load_classifier(settings.network_data_dir)
    recorder = EmailEventRecorder(SqlEmailEventStore(store), classifier, utc_now)
    product_views = ProductViewTracker(contacts, store, utc_now)
    commit_settings = _group_commit_settings(settings, engine)
    product_view_commits = GroupCommit("product-views", product_views.track_batch, commit_settings)
    email_event_commits = GroupCommit("email-events", recorder.record_batch, commit_settings)
    link_settings = LinkSettings(
        keyring=parse_signing_keys(settings.link_signing_keys),
        gateway_base_url=settings.tracking_base_url or None,
    )
    tracking_links = TrackingLinks(contacts, recorder, link_settings)
    gateway_authenticator = GatewayAuthenticator(settings.gateway_secret)
    feed = FlowTriggerFeed(SqlFlowTriggerStore(store), utc_now)
    executor = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="rpc-worker")
    binder = ServiceBinder(Authenticator(store, cache_ttl_seconds=settings.auth_cache_seconds), executor)

    # SO_REUSEPORT is off so that a port already in use fails loudly instead of being shared.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            binder.bind(CONTACT_SERVICE, ContactServicer(contacts)),
            binder.bind(
                TRACKING_SERVICE,
                TrackingServicer(product_views, recorder, tracking_links, product_view_commits, email_event_commits),
                {"RecordTrackingHits": gateway_authenticator},
            ),
        )
    )
    flow_triggers = FlowTriggerServicer(feed, executor)
    server.add_generic_rpc_handlers((binder.bind(FLOW_TRIGGER_SERVICE, flow_triggers),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service_names = [service.full_name for service in SERVICES]
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    try:
        port = server.add_insecure_port(settings.grpc_listen)
    except RuntimeError as error:
        executor.shutdown(wait=False)
        engine.dispose()
        raise OSError(f"cannot listen on {settings.grpc_listen}: {error}") from error
    await server.start()
    for name in ("", *service_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    pruning = asyncio.ensure_future(prune_flow_triggers_forever(feed, executor, settings))
    return GrpcApp(
        server=server,
        health=health,
        executor=executor,
        engine=engine,
        port=port,
        flow_triggers=flow_triggers,
        pruning=pruning,
        group_commits=(product_view_commits, email_event_commits),
    )


def _group_commit_settings(settings: Settings, engine: Engine) -> GroupCommitSettings:
    writers = settings.batch_writers or (1 if engine.dialect.name == "sqlite" else 2)
    return GroupCommitSettings(max_batch_size=settings.write_batch_size, writers=writers)


async def prune_flow_triggers_forever(feed: FlowTriggerFeed, executor: ThreadPoolExecutor, settings: Settings) -> None:
    """Delete old acknowledged flow triggers every `trigger_pruning_interval_seconds`."""
    retention = timedelta(hours=settings.trigger_retention_hours)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.trigger_pruning_interval_seconds)
        try:
            await loop.run_in_executor(executor, feed.prune, retention)
        except StorageUnavailable:
            logger.warning("flow trigger pruning failed; it runs again at the next interval")


async def serve_until_signalled(settings: Settings) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down gracefully."""
    app = await start_grpc_app(settings)
    database = normalize_database_url(settings.database_url).render_as_string(hide_password=True)
    logger.info(
        "gRPC server started",
        extra={"listen": settings.grpc_listen, "port": app.port, "database": database},
    )
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop_requested.set)
    await stop_requested.wait()
    logger.info("gRPC server stopping", extra={"grace_seconds": settings.shutdown_grace_seconds})
    stopping = asyncio.ensure_future(app.stop(settings.shutdown_grace_seconds))
    # A second signal cancels the calls still running instead of waiting out the grace period.
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, lambda: asyncio.ensure_future(app.server.stop(0)))
    await stopping
    logger.info("gRPC server stopped")
