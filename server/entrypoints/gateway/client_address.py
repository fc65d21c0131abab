"""The client IP of a gateway request, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from server.domain.classification.networks import IPAddress, IPNetwork


def parse_trusted_proxies(text: str) -> tuple[IPNetwork, ...]:
    """Parse comma-separated IPs and CIDR networks; raise ValueError naming a bad entry."""
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy {entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _parse_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[IPNetwork, ...]) -> str:
    """Return the client IP as text, or "" when unknown.

    The direct peer is the client unless it is a trusted proxy. Then X-Forwarded-For is read
    from right to left, skipping trusted proxies, and the first other address is the client.
    Addresses left of it could be forged by the client, so they are never used.
    """
    peer_address = _parse_address(peer) if peer else None
    if peer_address is None:
        return ""
    if not _is_trusted(peer_address, trusted):
        return str(peer_address)
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    client = peer_address
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None:
            break
        client = address
        if not _is_trusted(address, trusted):
            break
    return str(client)
