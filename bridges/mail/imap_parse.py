"""Reading IMAP FETCH responses: parenthesised lists, strings, literals, BODYSTRUCTURE.

aioimaplib hands a FETCH answer over as lines (bytes) with each literal's bytes as a
separate bytearray right after the line that announced it (`{123}`). A batched FETCH of
many mails, and a BODYSTRUCTURE whose file names come as literals, need a real reader
of that syntax (RFC 3501 §4 and §7.4.2), which this module is; it never raises on
garbage, since a server's odd answer must not stall a mailbox.
"""

from __future__ import annotations

import email.header
import email.utils
import itertools
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Value = str | bytes | None | list["Value"]
"""An atom or quoted string (str), a literal (bytes), NIL (None) or a list."""

_FETCH_START_RE = re.compile(rb"^(?:\* )?\d+ FETCH \(", re.IGNORECASE)


_TOKEN_RE = re.compile(
    rb"""[ \r\n]*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}"""
    rb"""|([^ \r\n()"{\[\]]*(?:\[[^\]]*\][^ \r\n()"{]*)?))"""
)
"""One token: `(`, `)`, a quoted string, a literal's `{n}`, or an atom (which may hold
a bracketed section with spaces, `BODY[HEADER.FIELDS (A B)]<0>`)."""
_UNQUOTE_RE = re.compile(rb"\\(.)")


class _Reader:
    """Values of one response: text pieces with literals spliced in where announced."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)

    def value(self) -> Value:
        """The first value; raises ValueError on a truncated or malformed response."""
        stack: list[list[Value]] = []
        index, pos = 0, 0
        while index < len(self.pieces):
            text = self.pieces[index]
            found = _TOKEN_RE.match(text, pos)
            if found is None:
                raise ValueError("end of response")
            pos = found.end()
            opened, closed, quoted, literal, atom = found.groups()
            item: Value
            if opened:
                stack.append([])
                continue
            if closed:
                if not stack:
                    raise ValueError("unexpected )")
                item = stack.pop()
            elif quoted is not None:
                item = _UNQUOTE_RE.sub(rb"\1", quoted).decode("utf-8", "replace")
            elif literal is not None:
                if index + 1 >= len(self.pieces):
                    raise ValueError("literal without data")
                item = bytes(self.pieces[index + 1])
                index, pos = index + 2, 0
            elif atom:
                decoded = atom.decode("utf-8", "replace")
                item = None if decoded.upper() == "NIL" else decoded
            else:
                raise ValueError(f"unexpected {text[pos : pos + 10]!r}")
            if not stack:
                return item
            stack[-1].append(item)
        raise ValueError("end of response")


def fetch_records(lines: Sequence[bytes | bytearray]) -> list[dict[str, Value]]:
    """Each `* n FETCH (...)` of a response as {item name (upper case): value}."""
    records: list[dict[str, Value]] = []
    groups: list[list[bytes]] = []
    after_literal = False
    for line in lines:
        if isinstance(line, bytearray):
            if groups:
                groups[-1].append(bytes(line))
                after_literal = True
            continue
        if _FETCH_START_RE.match(line):
            groups.append([line[line.index(b"(") :]])
        elif groups and after_literal:
            groups[-1].append(line)  # what follows a literal: more items, or the `)`
        after_literal = False
    for pieces in groups:
        try:
            items = _Reader(pieces).value()
        except ValueError:
            continue
        if not isinstance(items, list):
            continue
        record: dict[str, Value] = {}
        for name, value in zip(items[::2], items[1::2], strict=False):
            if isinstance(name, str):
                record[_item_name(name)] = value
        records.append(record)
    return records


def _item_name(name: str) -> str:
    """`BODY[2]<0>` and `body[2]` name the same item: upper case, no origin octet."""
    return re.sub(r"<\d+>$", "", name).upper()


def as_int(value: Value) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class Part:
    """One leaf of a BODYSTRUCTURE: what an attachment needs to be fetched and named."""

    section: str
    content_type: str
    encoding: str
    size: int
    """Encoded octets, as the server stores the part."""
    filename: str | None
    disposition: str | None
    content_id: str | None = None

    @property
    def is_text_body(self) -> bool:
        """A text/plain or text/html part that is a rendering of the mail's text."""
        return (
            self.content_type in ("text/plain", "text/html")
            and self.filename is None
            and self.disposition != "attachment"
        )


def body_parts(structure: Value) -> list[Part]:
    """The leaves of a BODYSTRUCTURE, in order, with their section numbers.

    An attached mail (message/rfc822) is one leaf, not descended into; a structure that
    makes no sense yields what could be read before it.
    """
    return list(_walk(structure, ""))


def _walk(node: Value, section: str) -> Iterator[Part]:
    if not isinstance(node, list) or not node:
        return
    if isinstance(node[0], list):  # multipart: children, then the subtype
        # the parts come first; after the subtype, lists are extension data
        children = list(itertools.takewhile(lambda child: isinstance(child, list), node))
        for number, child in enumerate(children, start=1):
            yield from _walk(child, f"{section}.{number}" if section else str(number))
        return
    part = _leaf(node, section or "1")
    if part is not None:
        yield part


def _leaf(node: list[Value], section: str) -> Part | None:
    if len(node) < 7:
        return None
    maintype, subtype = _lower(node[0]) or "application", _lower(node[1]) or "octet-stream"
    params = _params(node[2])
    size = as_int(node[6]) or 0
    content_type = f"{maintype}/{subtype}"
    # extension data: after `lines` for text/*, after envelope, body, lines for message/rfc822
    extension = 8 if maintype == "text" else 7
    if content_type == "message/rfc822":
        extension = 10
    disposition: str | None = None
    disposition_params: dict[str, str] = {}
    if len(node) > extension + 1 and isinstance(node[extension + 1], list):
        found = node[extension + 1]
        assert isinstance(found, list)
        if found and isinstance(found[0], str):
            disposition = found[0].lower()
            disposition_params = _params(found[1]) if len(found) > 1 else {}
    filename = _filename(disposition_params) or _filename(params, key="name")
    content_id = node[3] if isinstance(node[3], str) else None
    return Part(
        section=section,
        content_type=content_type,
        encoding=_lower(node[5]) or "7bit",
        size=size,
        filename=filename,
        disposition=disposition,
        content_id=content_id,
    )


def _lower(value: Value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.lower() if isinstance(value, str) else None


def _params(value: Value) -> dict[str, str]:
    """A parameter list `("name" "value" ...)`; keys lower-cased."""
    if not isinstance(value, list):
        return {}
    params: dict[str, str] = {}
    for key, item in zip(value[::2], value[1::2], strict=False):
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        if isinstance(key, str) and isinstance(item, str):
            params[key.lower()] = item
    return params


def _filename(params: dict[str, str], key: str = "filename") -> str | None:
    """The file name in `params`: RFC 2231 (`filename*`, continuations) or RFC 2047."""
    if f"{key}*" in params or f"{key}*0" in params or f"{key}*0*" in params:
        pieces: list[str] = []
        encoded = False
        if f"{key}*" in params:
            pieces, encoded = [params[f"{key}*"]], True
        else:
            number = 0
            while True:
                if f"{key}*{number}*" in params:
                    pieces.append(params[f"{key}*{number}*"])
                    encoded = encoded or number == 0
                elif f"{key}*{number}" in params:
                    pieces.append(params[f"{key}*{number}"])
                else:
                    break
                number += 1
        joined = "".join(pieces)
        if encoded:
            charset, _, text = joined.partition("'")
            text = text.partition("'")[2] if "'" in text else text
            try:
                return urllib.parse.unquote_to_bytes(text).decode(charset or "utf-8", "replace")
            except LookupError:
                return urllib.parse.unquote(text)
        return joined
    value = params.get(key)
    if value is None:
        return None
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value
