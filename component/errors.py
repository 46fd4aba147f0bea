"""Turning failures into the stanza errors RFC 6120 defines, instead of silence or a crash.

slixmpp answers any exception that escapes a handler: an `XMPPError` with its own
condition, anything else with `undefined-condition` and a logged traceback. The helpers
here map the bridge's exceptions onto `XMPPError` so the user reads what went wrong.
"""

from __future__ import annotations

from typing import Any, cast

from slixmpp.exceptions import XMPPError
from slixmpp.stanza.error import Error

from bridges.address import AddressError
from bridges.base import BridgeError

# RFC 6120 §8.3.3: the error type that goes with each condition we use.
_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "wait",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "undefined-condition": "cancel",
}


# slixmpp's Error stanza silently drops a condition missing from its set, and its set
# lacks RFC 6120's policy-violation: without it an oversized message was refused with an
# empty <error/>, which clients read as feature-not-implemented or not at all.
Error.conditions = Error.conditions | set(_ERROR_TYPES)


def error_type(condition: str) -> str:
    """The error type RFC 6120 pairs with `condition`."""
    return _ERROR_TYPES.get(condition, "cancel")


def stanza_error(condition: str, text: str = "") -> XMPPError:
    """An XMPPError of the right type; an unknown condition becomes undefined-condition."""
    if condition not in _ERROR_TYPES:
        condition = "undefined-condition"
    # The conditions and types are RFC 6120's, checked above; slixmpp types them as Literals.
    return XMPPError(cast(Any, condition), text, etype=cast(Any, error_type(condition)), clear=True)


EXPECTED = (AddressError, BridgeError, NotImplementedError)
"""Refusals a bridge raises on purpose: answered without a traceback in the log."""


def from_exception(exc: Exception) -> XMPPError:
    """The stanza error for a bridge failure (unknown failures keep their text out)."""
    match exc:
        case XMPPError():
            return exc
        case AddressError() | BridgeError():
            return stanza_error(exc.condition, exc.text)
        case NotImplementedError():
            return stanza_error(
                "feature-not-implemented", str(exc) or "not supported by this network"
            )
        case _:
            return stanza_error("internal-server-error", "the gateway failed to handle this")


def registration_text(component_jid: str) -> str:
    """What a registration-required error says: where to register, as an XEP-0147 URI
    (`xmpp:mail.example.org?register`) that clients open as the registration form."""
    return f"Register with {component_jid} first: xmpp:{component_jid}?register"
