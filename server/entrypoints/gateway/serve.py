"""Running the gateway under uvicorn with the service's settings."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import uvicorn

from server.adapters.spool import SqliteSpool
from server.entrypoints.gateway.app import GatewayConfig, TrackingGateway
from server.entrypoints.gateway.client_address import parse_trusted_proxies
from server.entrypoints.gateway.recording import GrpcHitSink, HitRecorder
from server.entrypoints.link_settings import MIN_GATEWAY_SECRET_LENGTH, parse_signing_keys
from server.entrypoints.settings import Settings

logger = logging.getLogger(__name__)


def build_gateway(settings: Settings, *, replay_interval_seconds: float = 1.0) -> TrackingGateway:
    """Build the gateway from settings; raise ValueError naming a missing or invalid setting."""
    keyring = parse_signing_keys(settings.link_signing_keys)
    if keyring is None:
        raise ValueError("the gateway needs --link-signing-keys (TOPMAIL_LINK_SIGNING_KEYS)")
    if len(settings.gateway_secret) < MIN_GATEWAY_SECRET_LENGTH:
        raise ValueError(
            f"the gateway needs --gateway-secret (TOPMAIL_GATEWAY_SECRET) of at least {MIN_GATEWAY_SECRET_LENGTH} characters"
        )
    config = GatewayConfig(
        keyring=keyring,
        trusted_proxies=parse_trusted_proxies(settings.trusted_proxies),
        max_body_bytes=settings.max_body_bytes,
    )
    spool = SqliteSpool(Path(settings.spool_path), settings.spool_max_hits)

    def connect() -> tuple[grpc.aio.Channel, HitRecorder]:
        channel = grpc.aio.insecure_channel(settings.grpc_target)
        recorder = HitRecorder(
            GrpcHitSink(channel, settings.gateway_secret), spool, replay_interval_seconds=replay_interval_seconds
        )
        return channel, recorder

    return TrackingGateway(config, connect)


def split_listen_address(listen: str) -> tuple[str, int]:
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"invalid listen address {listen!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def gateway_server(gateway: TrackingGateway, settings: Settings) -> uvicorn.Server:
    """Return the uvicorn server for the gateway, listening on `settings.gateway_listen`."""
    host, port = split_listen_address(settings.gateway_listen)
    config = uvicorn.Config(
        gateway,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # The gateway reads X-Forwarded-For itself, from configured trusted proxies only.
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    return uvicorn.Server(config)


def serve_gateway(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; uvicorn finishes open requests, then the recorder spools what is left."""
    gateway = build_gateway(settings)
    logger.info("gateway listening", extra={"listen": settings.gateway_listen, "grpc_target": settings.grpc_target})
    asyncio.run(gateway_server(gateway, settings).serve())
