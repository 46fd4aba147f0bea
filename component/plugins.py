"""Finding bridge classes: by entry point name, or by a `module:Class` import path.

Entry points (group `xmpp_gateway.bridges`) let a third-party network plug in by
installing a package; the import path form lets an operator or a test use a bridge
that is not packaged, without any edit to the component.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from bridges.base import Bridge

ENTRY_POINT_GROUP = "xmpp_gateway.bridges"


class PluginError(Exception):
    """A bridge that cannot be loaded; the text says which and why."""


def available_bridges() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_bridge_class(spec: str) -> type[Bridge]:
    """Resolve `spec` (an entry point name or `package.module:Class`) to a Bridge subclass."""
    try:
        if ":" in spec:
            module_name, _, attr = spec.partition(":")
            found = getattr(importlib.import_module(module_name), attr)
        else:
            matches = entry_points(group=ENTRY_POINT_GROUP, name=spec)
            if not matches:
                known = ", ".join(available_bridges()) or "none installed"
                raise PluginError(f"no bridge named {spec!r} (available: {known})")
            found = next(iter(matches)).load()
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load bridge {spec!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Bridge)):
        raise PluginError(f"{spec!r} is not a Bridge subclass")
    return found
