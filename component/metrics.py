"""Prometheus metrics: what an operator graphs and alerts on.

prometheus-client (Apache-2.0) is the reference implementation of the exposition
format; its HTTP server runs in a thread, off the event loop. Labels stay bounded: the
bridge name, a stanza kind, an error condition or an event class, never a JID.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

STANZAS_IN = Counter(
    "xmpp_gateway_stanzas_received", "Stanzas received from the XMPP server", ["bridge", "kind"]
)
STANZA_ERRORS = Counter(
    "xmpp_gateway_stanza_errors", "Stanzas answered with an error", ["bridge", "condition"]
)
EVENTS_OUT = Counter(
    "xmpp_gateway_events_delivered", "Legacy events delivered to XMPP users", ["bridge", "event"]
)
REGISTRATIONS = Counter(
    "xmpp_gateway_registrations", "Registration attempts by outcome", ["bridge", "outcome"]
)
SESSIONS = Gauge("xmpp_gateway_sessions", "Running legacy sessions", ["bridge"])
ONLINE_USERS = Gauge(
    "xmpp_gateway_online_users", "Registered users with a resource online", ["bridge"]
)
LINK_UP = Gauge("xmpp_gateway_link_up", "1 while the component is connected", ["bridge"])
ACTIVE = Gauge(
    "xmpp_gateway_active", "1 while this instance serves, 0 while it stands by (hot standby)"
)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics over HTTP on `host:port`."""
    start_http_server(port, addr=host)
