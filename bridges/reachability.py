"""Which hosts users may make the gateway connect to.

A gateway that connects wherever a user says is a port scanner and a relay into the
operator's own network. Bridges resolve a user-supplied host first and refuse one that
lands on loopback, private or link-local addresses unless the operator allowed it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket


async def resolved_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in resolver order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """Whether `address` is on the public Internet (not loopback, private, link-local)."""
    return ipaddress.ip_address(address).is_global
