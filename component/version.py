"""The installed gateway's version, for `--version` and XEP-0092 answers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def software_version() -> str:
    """The version of the installed distribution ("unknown" when run from a bare tree)."""
    try:
        return version("xmpp-gateway")
    except PackageNotFoundError:
        return "unknown"
