"""Prometheus metrics: what an operator graphs and alerts on.

prometheus-client (Apache-2.0) is the reference implementation of the exposition
format; its HTTP server runs in a thread, off the event loop. Labels stay bounded: the
bridge name, a stanza kind, an error condition or an event class, never a JID.

The library (~4 MiB resident) is imported only when `metrics.port` is configured:
`serve_metrics` makes each family below real, and until then counting does nothing.
Gateways are built after it runs, so the children they look up once are the real ones.
"""

from __future__ import annotations

from typing import Any


class _Uncounted:
    """A child of a metric nobody collects."""

    def inc(self, amount: float = 1) -> None:
        """Nothing to count into."""

    def set(self, value: float) -> None:
        """Nothing to set."""


_UNCOUNTED = _Uncounted()


class Family:
    """A labelled Counter or Gauge, real once `serve_metrics` ran."""

    def __init__(self, kind: str, name: str, documentation: str, labels: list[str]) -> None:
        self._spec = (kind, name, documentation, labels)
        self._real: Any = None

    def labels(self, *values: str) -> Any:
        return _UNCOUNTED if self._real is None else self._real.labels(*values)

    def set(self, value: float) -> None:
        """For a family without labels (`ACTIVE`, `SLOT`)."""
        (_UNCOUNTED if self._real is None else self._real).set(value)

    def make_real(self) -> None:
        import prometheus_client

        kind, name, documentation, labels = self._spec
        if self._real is None:
            self._real = getattr(prometheus_client, kind)(name, documentation, labels)


STANZAS_IN = Family(
    "Counter",
    "xmpp_gateway_stanzas_received",
    "Stanzas received from the XMPP server",
    ["bridge", "kind"],
)
STANZA_ERRORS = Family(
    "Counter",
    "xmpp_gateway_stanza_errors",
    "Stanzas answered with an error",
    ["bridge", "condition"],
)
EVENTS_OUT = Family(
    "Counter",
    "xmpp_gateway_events_delivered",
    "Legacy events delivered to XMPP users",
    ["bridge", "event"],
)
REGISTRATIONS = Family(
    "Counter",
    "xmpp_gateway_registrations",
    "Registration attempts by outcome",
    ["bridge", "outcome"],
)
SESSIONS = Family("Gauge", "xmpp_gateway_sessions", "Running legacy sessions", ["bridge"])
ONLINE_USERS = Family(
    "Gauge", "xmpp_gateway_online_users", "Registered users with a resource online", ["bridge"]
)
LINK_UP = Family("Gauge", "xmpp_gateway_link_up", "1 while the component is connected", ["bridge"])
ACTIVE = Family(
    "Gauge",
    "xmpp_gateway_active",
    "1 while this instance serves, 0 while it stands by (hot standby)",
    [],
)
SLOT = Family(
    "Gauge",
    "xmpp_gateway_slot",
    "The slot (cluster.slots) this instance holds while it serves, -1 while it stands by",
    [],
)
OWNED_USERS = Family(
    "Gauge",
    "xmpp_gateway_owned_users",
    "Users whose legacy sessions this instance owns (cluster.slots above 1)",
    ["bridge"],
)
FAMILIES = (
    *(STANZAS_IN, STANZA_ERRORS, EVENTS_OUT, REGISTRATIONS),
    *(SESSIONS, ONLINE_USERS, LINK_UP, ACTIVE, SLOT, OWNED_USERS),
)


def serve_metrics(host: str, port: int) -> None:
    """Count from now on, and expose /metrics over HTTP on `host:port`."""
    from prometheus_client import start_http_server

    for family in FAMILIES:
        family.make_real()
    start_http_server(port, addr=host)
