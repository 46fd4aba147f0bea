"""Encryption of legacy credentials at rest.

Fernet (from `cryptography`, Apache-2.0/BSD) gives authenticated encryption with a key
an operator can generate and paste into the config; MultiFernet lets them rotate keys
by listing the old ones, which are still accepted for reading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretsUnreadable(Exception):
    """Stored secrets were written with a key the config no longer has."""


def generate_key() -> str:
    """A fresh key for `secret_key` in the config file."""
    return Fernet.generate_key().decode("ascii")


def check_key(key: str) -> None:
    """Raise ValueError with a readable reason when `key` is not a Fernet key."""
    try:
        Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(
            "must be 32 url-safe base64-encoded bytes; create one with `xmpp-gateway generate-key`"
        ) from exc


class SecretBox:
    """Seals a mapping of secret strings into one opaque token, and opens it again."""

    def __init__(self, key: str, old_keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in (key, *old_keys)])

    def seal(self, secrets: Mapping[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(dict(secrets)).encode()).decode("ascii")

    def open(self, token: str) -> dict[str, str]:
        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except InvalidToken as exc:
            raise SecretsUnreadable("stored secrets do not match any configured key") from exc
        return opened
