"""Encryption of legacy credentials at rest.

Fernet (from `cryptography`, Apache-2.0/BSD) gives authenticated encryption with a key
an operator can generate and paste into the config; MultiFernet lets them rotate keys
by listing the old ones, which are still accepted for reading.

`cryptography` (~7 MiB resident, with its own OpenSSL) is imported when a secret is
first sealed or opened: a gateway whose users stored no password never loads it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

KEY_BYTES = 32
"""A Fernet key is 32 bytes (signing and encryption keys), url-safe base64 encoded."""


class SecretsUnreadable(Exception):
    """Stored secrets were written with a key the config no longer has."""


def generate_key() -> str:
    """A fresh key for `secret_key` in the config file."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def check_key(key: str) -> None:
    """Raise ValueError with a readable reason when `key` is not a Fernet key (the
    check Fernet's constructor makes, without loading `cryptography`)."""
    try:
        valid = len(base64.urlsafe_b64decode(key.encode("ascii"))) == KEY_BYTES
    except (binascii.Error, ValueError, UnicodeEncodeError):
        valid = False
    if not valid:
        raise ValueError(
            "must be 32 url-safe base64-encoded bytes; create one with `xmpp-gateway generate-key`"
        )


class SecretBox:
    """Seals a mapping of secret strings into one opaque token, and opens it again."""

    def __init__(self, key: str, old_keys: Sequence[str] = ()) -> None:
        self._keys = (key, *old_keys)
        self._multi: MultiFernet | None = None

    @property
    def _fernet(self) -> MultiFernet:
        if self._multi is None:
            from cryptography.fernet import Fernet, MultiFernet

            self._multi = MultiFernet([Fernet(k.encode("ascii")) for k in self._keys])
        return self._multi

    def seal(self, secrets: Mapping[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(dict(secrets)).encode()).decode("ascii")

    def open(self, token: str) -> dict[str, str]:
        from cryptography.fernet import InvalidToken

        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except InvalidToken as exc:
            raise SecretsUnreadable("stored secrets do not match any configured key") from exc
        return opened
