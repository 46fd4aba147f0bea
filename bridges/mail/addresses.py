"""Email addresses: one canonical spelling, and its mapping to JID localparts and SMTP.

Every address the mail bridge handles (a sender of incoming mail, a recipient a user
writes to, the user's own address) is kept in one canonical form: the RFC 5322 addr-spec
with the local part quoted exactly when it is not a dot-atom, quoted-pairs only where
needed (`\\"` and `\\\\`), and the domain lower-cased. `"odd one"@remote.test` and
`"odd\\ one"@remote.test` are the same mailbox (RFC 5322 §3.4.1), so both become the
first. Because the canonical form is itself a valid addr-spec, reading it back is exact,
and the XEP-0106 escaped JID made from it round-trips.

Reading is lenient where a user typed the address: a local part that is neither a
dot-atom nor a quoted-string is taken verbatim, so the JID `bob\\20smith\\40example.org`
(`bob smith@example.org`, the README's example) means the local part `bob smith` and
mail goes to `"bob smith"@example.org`.
"""

from __future__ import annotations

import re
import unicodedata

from bridges.address import AddressError

# RFC 5322 §3.2.3 atext, plus non-ASCII (RFC 6532 §3.2).
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# RFC 5322 §3.4.1 domain-literal without folding whitespace: [ *dtext ]
_DOMAIN_LITERAL = re.compile(r"\[[!-Z^-~]*\]")


def canonical(local: str, domain: str) -> str:
    """The canonical addr-spec of `local`@`domain`; AddressError if it names no mailbox.

    Refused: an empty domain or one that is not a dot-atom or domain-literal, and control
    characters anywhere (no SMTP server takes them, RFC 5321 §4.1.2, and a JID cannot
    hold them).
    """
    domain = domain.lower()
    spelled = f"{local}@{domain}"
    if any(unicodedata.category(char) == "Cc" for char in spelled):
        raise AddressError(f"{spelled!r} is not an email address: it holds a control character")
    if not (_DOT_ATOM.fullmatch(domain) or _DOMAIN_LITERAL.fullmatch(domain)):
        raise AddressError(f"{spelled!r} is not an email address: bad domain {domain!r}")
    return f"{quote_local(local)}@{domain}"


def quote_local(local: str) -> str:
    """`local` as RFC 5322 writes it: a dot-atom as is, anything else quoted."""
    if _DOT_ATOM.fullmatch(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split(text: str) -> tuple[str, str]:
    """(local part, domain) of an addr-spec, unquoting a quoted local part.

    The domain is what follows the last `@` (a domain never holds one; a quoted local
    part may). A local part that is not a quoted-string is taken verbatim.
    """
    local, at, domain = text.rpartition("@")
    if not at or not domain:
        raise AddressError(f"{text!r} is not an email address: it needs local@domain")
    quoted = _QUOTED_STRING.fullmatch(local)
    if quoted is not None:
        return _QUOTED_PAIR.sub(r"\1", quoted[1]), domain
    if not local:
        raise AddressError(f"{text!r} is not an email address: nothing before the @")
    return local, domain


def parse(text: str) -> str:
    """The canonical form of the addr-spec `text` (see `split` for what is lenient)."""
    return canonical(*split(text))


def for_smtp(address: str) -> str:
    """`address` as an SMTP envelope and a 7-bit header hold it: domain as IDNA A-labels.

    A non-ASCII local part needs SMTPUTF8 (RFC 6531), which this gateway does not
    send, so such an address is refused with a text that says so.
    """
    local, domain = split(address)
    if not local.isascii():
        raise AddressError(
            f"{address} has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531): "
            "this gateway sends to ASCII local parts only",
            "not-acceptable",
        )
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            text = f"{address}: {domain!r} is not a valid internationalized domain"
            raise AddressError(text, "not-acceptable") from exc
    return f"{quote_local(local)}@{domain}"
