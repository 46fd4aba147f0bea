"""SASL for IRC (IRCv3 `sasl` 3.1/3.2): EXTERNAL, SCRAM-SHA-256 and PLAIN.

The server names its mechanisms in the cap value (`sasl=PLAIN,SCRAM-SHA-256`); the
client tries the best one it has credentials for and falls back to the next on 904.
SCRAM is preferred over PLAIN because the password never crosses the wire and the
server proves it knows it too; EXTERNAL (a TLS client certificate) needs no password
at all. The exchange itself is kept free of I/O so it is checked against RFC 7677's
test vectors.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 400
"""AUTHENTICATE payloads are sent and received in 400-byte base64 pieces."""
MAX_ITERATIONS = 100_000
"""A hostile server asking for millions of PBKDF2 rounds must not cost minutes of CPU."""
MIN_ITERATIONS = 4096
"""RFC 7677 §4: fewer rounds than this are too weak to accept."""


class SaslError(Exception):
    """The server's side of the exchange is broken or could not be verified."""


def mechanisms_to_try(offered: str | None, password: bool, certificate: bool) -> list[str]:
    """The mechanisms we have credentials for, best first, among those offered.

    `offered` is the `sasl` cap value: a list for SASL 3.2, empty for 3.1 servers,
    which name none; those get PLAIN, the one every such server has.
    """
    ours = [
        *(["EXTERNAL"] if certificate else []),
        *(["SCRAM-SHA-256", "PLAIN"] if password else []),
    ]
    if not offered:
        return [m for m in ours if m == "PLAIN"]
    names = {name.strip().upper() for name in offered.split(",")}
    return [m for m in ours if m in names]


def encode_chunks(payload: bytes) -> Iterator[str]:
    """AUTHENTICATE arguments for one response: base64 in 400-byte pieces, `+` ending a
    payload that fills its last piece exactly (or standing for an empty one)."""
    text = base64.b64encode(payload).decode()
    for start in range(0, len(text), CHUNK):
        yield text[start : start + CHUNK]
    if len(text) % CHUNK == 0:
        yield "+"


@dataclass
class Incoming:
    """Collects a server challenge that arrives in several AUTHENTICATE lines."""

    parts: list[str] = field(default_factory=list)

    def add(self, piece: str) -> bytes | None:
        """The whole challenge once its last piece is in, else None."""
        if piece != "+":
            self.parts.append(piece)
            if len(piece) == CHUNK:
                if len(self.parts) > 16:  # 6 KB of challenge: no mechanism of ours needs it
                    raise SaslError("the server's SASL challenge is too long")
                return None
        text, self.parts = "".join(self.parts), []
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise SaslError("the server's SASL challenge is not base64") from None


class Mechanism:
    """One client side of an exchange; `respond` answers each server challenge."""

    name: str

    async def respond(self, challenge: bytes) -> bytes:
        raise NotImplementedError


class Plain(Mechanism):
    name = "PLAIN"

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    async def respond(self, challenge: bytes) -> bytes:
        return f"{self.user}\0{self.user}\0{self.password}".encode()


class External(Mechanism):
    """The TLS client certificate is the credential; the (empty) authzid is all we send."""

    name = "EXTERNAL"

    async def respond(self, challenge: bytes) -> bytes:
        return b""


class ScramSha256(Mechanism):
    """RFC 5802 with SHA-256 (RFC 7677), without channel binding (`n,,`)."""

    name = "SCRAM-SHA-256"

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user = user.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.nonce = nonce or secrets.token_urlsafe(24)
        self.first_bare = f"n={self.user},r={self.nonce}"
        self.server_signature: bytes | None = None
        self.step = 0

    async def respond(self, challenge: bytes) -> bytes:
        self.step += 1
        if self.step == 1:
            return b"n,," + self.first_bare.encode()
        if self.step == 2:
            return await self._prove(challenge)
        if self.step == 3:
            self._verify(challenge)
            return b""
        raise SaslError("the server kept the SCRAM exchange going after it ended")

    async def _prove(self, challenge: bytes) -> bytes:
        server_first = _text(challenge)
        values = _attributes(server_first)
        nonce, salt, rounds = values.get("r", ""), values.get("s", ""), values.get("i", "")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise SaslError("the server's SCRAM nonce does not extend ours")
        if not rounds.isdigit() or not MIN_ITERATIONS <= int(rounds) <= MAX_ITERATIONS:
            raise SaslError(f"the server asks for {rounds[:20]!r} SCRAM iterations")
        try:
            salt_bytes = base64.b64decode(salt, validate=True)
        except ValueError:
            raise SaslError("the server's SCRAM salt is not base64") from None
        # Off the event loop: even the capped rounds take tens of milliseconds.
        salted = await asyncio.to_thread(
            hashlib.pbkdf2_hmac, "sha256", self.password, salt_bytes, int(rounds)
        )
        client_key = _hmac(salted, b"Client Key")
        final_bare = f"c=biws,r={nonce}"
        auth = f"{self.first_bare},{server_first},{final_bare}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth)
        return f"{final_bare},p={base64.b64encode(proof).decode()}".encode()

    def _verify(self, challenge: bytes) -> None:
        values = _attributes(_text(challenge))
        if "e" in values:
            raise SaslError(f"the server refused the SCRAM proof: {values['e'][:100]}")
        try:
            given = base64.b64decode(values.get("v", ""), validate=True)
        except ValueError:
            given = b""
        assert self.server_signature is not None
        if not hmac.compare_digest(given, self.server_signature):
            raise SaslError("the server could not prove it knows the SCRAM password")


def mechanism(name: str, user: str, password: str) -> Mechanism:
    if name == "EXTERNAL":
        return External()
    if name == "SCRAM-SHA-256":
        return ScramSha256(user, password)
    return Plain(user, password)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise SaslError("the server's SCRAM message is not UTF-8") from None


def _attributes(message: str) -> dict[str, str]:
    """`r=...,s=...,i=...` → {"r": ..., ...}; the first of a repeated attribute wins."""
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            out.setdefault(key, value)
    return out
