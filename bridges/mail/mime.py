"""Email ⇄ chat text: parse incoming RFC 5322 mail into something readable in a chat
client, and build the outgoing mail for a chat message.

Everything here is pure (no I/O) and must survive hostile input: a broken MIME tree, an
unknown charset or a malformed header yields replacement characters or a missing field,
never an exception, because one bad mail must not stall a user's whole mailbox.
"""

from __future__ import annotations

import base64
import codecs
import email
import email.header
import email.parser
import email.policy
import email.utils
import functools
import hashlib
import mimetypes
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, Message
from pathlib import Path
from typing import IO, Any, cast

from bridges.address import AddressError
from bridges.mail import addresses

_MSGID_RE = re.compile(r"<[^<>\s]+>")


class _ParsePolicy(email.policy.EmailPolicy):
    """The default policy, but each header value is parsed once.

    The stdlib parses a header anew on every access, and reading one mail asks for
    Content-Type alone nine times: over half of all parsing time. Header objects are
    immutable, so equal (name, value) pairs, within a mail and across mails (every
    `text/plain; charset="utf-8"`), share one.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if type(value) is not str:  # a header object already, or something unhashable
            return email.policy.default.header_fetch_parse(name, value)
        return _parsed_header(name, value)


@functools.lru_cache(maxsize=4096)
def _parsed_header(name: str, value: str) -> Any:
    return email.policy.default.header_fetch_parse(name, value)


_PARSE_POLICY = _ParsePolicy()
# 7bit makes the generator QP/base64-encode non-ASCII bodies and RFC 2047-encode headers,
# so the mail passes any relay without relying on 8BITMIME or SMTPUTF8.
_SEND_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_MIME_TOKEN_RE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}")
"""A type or subtype as RFC 6838 §4.2 allows: anything else (spaces, controls, a line
break a server put in its Content-Type) is sent as application/octet-stream."""


@dataclass(frozen=True)
class Attachment:
    """A part the chat side cannot show as text, announced by name, type and size;
    `note` says what becomes of it (it follows as a file, it is too large, ...)."""

    filename: str
    content_type: str
    size: int
    note: str = ""


@dataclass(frozen=True)
class IncomingMail:
    """The parts of a received mail that a chat message carries."""

    sender: str | None
    display_name: str | None
    subject: str | None
    body: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    date: datetime | None
    attachments: tuple[Attachment, ...] = ()

    @property
    def thread_root(self) -> str | None:
        """The Message-ID that starts this conversation: what every reply has in common."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id

    @property
    def reply_references(self) -> tuple[str, ...]:
        """The References chain a reply to this mail carries (RFC 5322 §3.6.4)."""
        chain = self.references or ((self.in_reply_to,) if self.in_reply_to else ())
        return (*chain, self.message_id) if self.message_id else chain


def is_message_id(text: str) -> bool:
    """Whether `text` is one `<id@host>` Message-ID (and so a mail's stanza id)."""
    return _MSGID_RE.fullmatch(text) is not None


def thread_key(message_id: str) -> str:
    """A short, stable, opaque id for a Message-ID: XMPP thread and record key."""
    return hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


MAX_MULTIPARTS = 100
"""Most multipart containers a mail may declare before only its headers are read.

The stdlib parser recurses once per nesting level: a crafted mail nested 1,500 deep
raised RecursionError, and retrying it for ever wedged the mailbox. Counting the
boundaries first bounds depth and part count before any parsing happens."""
MAX_HEADER_BYTES = 64 * 1024
"""Longest header block parsed; beyond it, headers are read from its start only."""
_BOUNDARY_RE = re.compile(rb"boundary\s*=", re.IGNORECASE)
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")


class UnreadableMail(ValueError):
    """A mail whose body the gateway refuses or fails to parse; its headers still count."""


def parse_incoming(raw: bytes) -> IncomingMail:
    """Parse a whole message as fetched from IMAP; never raises on bad input.

    A mail too complex or too broken to parse still arrives: the headers that could be
    read, and a line saying the body could not be, with its size.
    """
    try:
        header_end = _HEADER_END_RE.search(raw)
        if (header_end.start() if header_end else len(raw)) > MAX_HEADER_BYTES:
            raise UnreadableMail(f"its header is over {human_size(MAX_HEADER_BYTES)}")
        if len(_BOUNDARY_RE.findall(raw)) > MAX_MULTIPARTS:
            raise UnreadableMail(f"it has more than {MAX_MULTIPARTS} multipart sections")
        msg = cast(EmailMessage, email.message_from_bytes(raw, policy=_PARSE_POLICY))
        body_part = _body_part(msg)
        body = _part_text(body_part) if body_part is not None else ""
        return _incoming(msg, body, tuple(_attachments(msg, body_part)))
    except Exception as exc:  # RecursionError included: nothing may stall the mailbox
        reason = str(exc) if isinstance(exc, UnreadableMail) else type(exc).__name__
        return _headers_only(raw, reason)


def _incoming(msg: Message, body: str, attachments: tuple[Attachment, ...]) -> IncomingMail:
    display_name, sender = _sender(msg)
    in_reply_to = _message_ids(_header(msg, "In-Reply-To"))
    return IncomingMail(
        sender=sender,
        display_name=display_name,
        subject=_clean_subject(_header(msg, "Subject")),
        body=body,
        message_id=next(iter(_message_ids(_header(msg, "Message-ID"))), None),
        in_reply_to=in_reply_to[-1] if in_reply_to else None,
        references=_message_ids(_header(msg, "References")),
        date=_date(_header(msg, "Date")),
        attachments=attachments,
    )


def _headers_only(raw: bytes, reason: str) -> IncomingMail:
    """What can be said of a mail whose body cannot be read."""
    notice = (
        f"[The body of this mail ({human_size(len(raw))}) could not be read: {reason}. "
        "Open it in a mail client.]"
    )
    try:
        head = raw[:MAX_HEADER_BYTES]
        msg = email.parser.BytesHeaderParser(policy=_PARSE_POLICY).parsebytes(head)
        return _incoming(msg, notice, ())
    except Exception:
        return IncomingMail(None, None, None, notice, None, None, (), None)


def render_text(mail: IncomingMail, *, max_chars: int, following: int = 0) -> str:
    """The chat body: the text, cut at `max_chars` with a marker, then the attachments
    (`following` of them come as messages of their own after this one)."""
    text = mail.body.strip("\n")
    if len(text) > max_chars:
        cut = text[:max_chars].rstrip()
        text = f"{cut}\n\n[… truncated: {len(text) - max_chars} more characters not shown]"
    if mail.attachments:
        lines = [
            f"- {a.filename} ({a.content_type}, {human_size(a.size)})"
            + (f": {a.note}" if a.note else "")
            for a in mail.attachments
        ]
        if following:
            files = "1 file follows" if following == 1 else f"{following} files follow"
            heading = f"Attachments ({files} as messages of their own):"
        else:
            heading = "Attachments:"
        note = heading + "\n" + "\n".join(lines)
        text = f"{text}\n\n{note}" if text else note
    return text or "(empty message)"


MAX_FILENAME_BYTES = 200
"""Longest file name (UTF-8) handed to the upload service; longer ones are shortened,
keeping the extension, since file systems stop at 255 bytes and URLs grow with it."""
_UNSAFE_CHARS_RE = re.compile("[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_EXTENSION_RE = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def safe_filename(name: str | None, content_type: str) -> str:
    """A file name that is safe to store and show, from a sender-chosen one.

    Only the last path component counts (`../../etc/passwd` is `passwd`), control and
    bidirectional-override characters go (an RTL override makes `exe.pdf` read as
    `fdp.exe`), and the name is cut to `MAX_FILENAME_BYTES` keeping its extension. An
    empty result becomes `attachment` with an extension for the content type.
    """
    text = _UNSAFE_CHARS_RE.sub("", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = " ".join(text.split()).strip(". ")
    if not text:
        extension = mimetypes.guess_extension(content_type) or ".bin"
        return f"attachment{extension}"
    if len(text.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return text
    found = _EXTENSION_RE.search(text)
    extension = found.group(0) if found else ""
    stem = text[: len(text) - len(extension)]
    budget = MAX_FILENAME_BYTES - len(extension.encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
    return f"{stem}{extension}"


OutgoingFile = tuple[str, str, bytes]
"""A file to attach to a mail: name, content type, data."""


def build_outgoing(
    *,
    sender: str,
    display_name: str | None,
    to: str,
    subject: str,
    text: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> EmailMessage:
    """A UTF-8 text/plain mail whose lines and headers stay within RFC 5322 limits
    (`write_with_files` adds the files it attaches, when it is submitted).

    Raises ValueError when an address cannot be put in a header (e.g. a CR/LF in it).
    """
    msg = EmailMessage(policy=_SEND_POLICY)
    msg["From"] = _Mailbox(_one_line(display_name or ""), sender)
    msg["To"] = _Mailbox("", to)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(references or (in_reply_to,))
    _set_text(msg, text)
    return msg


def with_files(raw: bytes, attachments: Sequence[OutgoingFile], links: Sequence[str]) -> bytes:
    """The text-only mail `raw` (from `build_outgoing`) with `attachments` added and
    `links` (files that could not be fetched) appended to its text; headers, Message-ID
    included, stay as they were."""
    msg = email.message_from_bytes(raw, policy=_SEND_POLICY)
    text = str(msg.get_content()).replace("\r\n", "\n").rstrip("\n")
    if links:
        text = "\n".join([text, *links]) if text.strip() else "\n".join(links)
    _set_text(msg, text)
    _attach(msg, attachments)
    return to_bytes(msg)


SpooledFile = tuple[str, str, Path]
"""A file to attach that waits on disk: name, content type, path."""
_BASE64_BLOCK = 57 * 4096
"""Bytes encoded at a time: whole 76-character base64 lines (57 bytes each)."""


def write_with_files(
    raw: bytes, files: Sequence[SpooledFile], links: Sequence[str], out: IO[bytes]
) -> None:
    """`with_files` written to `out`, each file base64-encoded from disk block by block,
    so a mail attaching a large file is never whole in memory.

    The mail is composed with a short random marker as each file's content; the
    marker's base64 line is then replaced by the file's own lines as they are written.
    """
    token = secrets.token_hex(12)
    markers = [f"spooled-file-{token}-{number}".encode() for number in range(len(files))]
    placeholders = [
        (name, kind, marker) for (name, kind, _), marker in zip(files, markers, strict=True)
    ]
    rest = with_files(raw, placeholders, links)
    for marker, (_name, _kind, path) in zip(markers, files, strict=True):
        before, found, rest = rest.partition(base64.b64encode(marker) + b"\r\n")
        if not found:  # the email package changed how it writes a part's base64
            raise ValueError("could not place an attachment in the mail")
        out.write(before)
        with path.open("rb") as source:
            while block := source.read(_BASE64_BLOCK):
                out.write(base64.encodebytes(block).replace(b"\n", b"\r\n"))
    out.write(rest)


def _set_text(msg: EmailMessage, text: str) -> None:
    msg.set_content(text.replace("\r\n", "\n").replace("\r", "\n"), charset="utf-8")


def _attach(msg: EmailMessage, attachments: Sequence[OutgoingFile]) -> None:
    """Each file as a part of its own, under a safe name and a leaf MIME type."""
    for name, content_type, data in attachments:
        maintype, _, subtype = content_type.lower().partition("/")
        valid = _MIME_TOKEN_RE.fullmatch(maintype) and _MIME_TOKEN_RE.fullmatch(subtype)
        if not valid or maintype in ("multipart", "message"):
            maintype, subtype = "application", "octet-stream"
        filename = safe_filename(name, f"{maintype}/{subtype}")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)


def quoted(text: str) -> str:
    """`text` as a mail quote: every line starts with `>` (a client's reply fallback
    usually does already; one that does not is quoted here)."""
    lines = text.strip("\n").split("\n")
    return "\n".join(line if line.startswith(">") else f"> {line}" for line in lines)


class _Mailbox(HeaderAddress):
    """A header address written with `addr_spec` exactly as given (already canonical).

    CPython's `Address.addr_spec` re-quotes the local part only when it holds a special
    character, so `"a..b"@x` or `".a"@x` would go out unquoted, as another address.
    """

    def __init__(self, display_name: str, addr_spec: str) -> None:
        super().__init__(display_name=display_name, addr_spec=addr_spec)
        self._spec = addr_spec

    @property
    def addr_spec(self) -> str:
        return self._spec


def to_bytes(msg: EmailMessage) -> bytes:
    """The wire form (CRLF line ends) for SMTP and IMAP APPEND."""
    return msg.as_bytes(policy=_SEND_POLICY)


# -- parsing helpers ---------------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    """A decoded header value, falling back to a lenient decode of the raw bytes."""
    try:
        value = msg.get(name)
        return None if value is None else str(value)
    except Exception:  # the header registry chokes on some malformed headers
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        return None if raw is None else _decode_words(str(raw))


def _decode_words(raw: str) -> str:
    """RFC 2047 decode without trusting the declared charsets."""
    parts = []
    for chunk, charset in email.header.decode_header(raw):
        if isinstance(chunk, str):
            parts.append(chunk)
        else:
            parts.append(chunk.decode(_codec(charset), errors="replace"))
    return "".join(parts)


def _sender(msg: Message) -> tuple[str | None, str | None]:
    """(display name, canonical address) of From, else Sender, else Reply-To.

    The address is read from the header registry's parse (which unquotes local parts
    and knows the obsolete syntax), else leniently from the raw text; a mailbox that is
    no valid address is skipped rather than shown as a sender nobody can answer.
    """
    for name in ("From", "Sender", "Reply-To"):
        for display, local, domain in _mailboxes(msg, name):
            try:
                return (display.strip() or None), addresses.canonical(local, domain)
            except AddressError:
                continue
    return None, None


def _mailboxes(msg: Message, name: str) -> list[tuple[str, str, str]]:
    """(display name, local part, domain) of each mailbox in header `name`."""
    try:
        header = msg.get(name)
        found = [
            (_utf8(a.display_name), _utf8(a.username), _utf8(a.domain))
            for a in getattr(header, "addresses", ())
        ]
    except Exception:  # the header registry chokes on some malformed headers
        found = []
    if found or header is None:
        return found
    display, addr = email.utils.parseaddr(_utf8(_header(msg, name) or ""))
    try:
        return [(display, *addresses.split(addr))]
    except AddressError:
        return []


def _utf8(text: str) -> str:
    """Raw 8-bit header text (RFC 6532), which the parser keeps as surrogate escapes in
    address headers, decoded as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _clean_subject(subject: str | None) -> str | None:
    if subject is None:
        return None
    return " ".join(subject.split()) or None


def _message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID_RE.findall(value)) if value else ()


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _codec(charset: str | None) -> str:
    """A codec Python knows for `charset`; unknown or missing ones read as UTF-8."""
    if not charset:
        return "utf-8"
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return "utf-8"
    # Mail that says ASCII often is not; UTF-8 decodes ASCII identically.
    return "utf-8" if name == "ascii" else name


def _body_part(msg: EmailMessage) -> Message | None:
    """The part to show: text/plain preferred over HTML, as a mail client would."""
    try:
        return msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        return None


def _part_text(part: Message) -> str:
    """Decoded text of a leaf part (QP/base64 and charset), HTML rendered as text."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = payload.decode(_codec(part.get_content_charset()), errors="replace")
    if part.get_content_subtype() == "html":
        text = _html_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "plain" and _param(part, "format") == "flowed":
        text = _unflow(text, delsp=_param(part, "delsp") == "yes")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    return value.lower() if isinstance(value, str) else ""


def _unflow(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676), so paragraphs wrap
    in the chat window instead of breaking at the sender's 72 columns."""
    out: list[str] = []
    paragraph: str | None = None
    paragraph_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):  # space-stuffing (§4.4)
            content = content[1:]
        flowed = content.endswith(" ") and content != "-- "  # "-- " is the signature mark
        if flowed and delsp:
            content = content[:-1]
        if paragraph is not None and depth != paragraph_depth:  # quote depth changed
            out.append(_quoted(paragraph_depth, paragraph))
            paragraph = None
        paragraph = content if paragraph is None else paragraph + content
        paragraph_depth = depth
        if not flowed:
            out.append(_quoted(depth, paragraph))
            paragraph = None
    if paragraph is not None:
        out.append(_quoted(paragraph_depth, paragraph))
    return "\n".join(out)


def _quoted(depth: int, text: str) -> str:
    return f"{'>' * depth} {text}" if depth else text


def _html_to_text(html: str) -> str:
    """Readable text of an HTML body: blocks on their own lines, no markup or scripts,
    and no <title> (newsletters repeat the subject there). html_text (with lxml, ~9 MiB
    resident) is imported by the first HTML mail."""
    import html_text

    try:
        tree = html_text.parse_html(html)
        for title in tree.xpath("//title"):
            title.drop_tree()
        return str(html_text.extract_text(tree, guess_layout=True))
    except Exception:  # lxml refuses some garbage; show it rather than nothing
        return re.sub(r"<[^>]*>", "", html)


def _leaves(part: Message) -> Iterator[Message]:
    """Leaf parts in order, not descending into attached messages."""
    if part.is_multipart() and not (isinstance(part, EmailMessage) and part.is_attachment()):
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                if isinstance(child, Message):
                    yield from _leaves(child)
        return
    yield part


def _attachments(msg: Message, body: Message | None) -> Iterator[Attachment]:
    """Every part that is neither the body nor an alternative rendering of text."""
    for part in _leaves(msg):
        if part is body:
            continue
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        is_attachment = isinstance(part, EmailMessage) and part.is_attachment()
        if part.get_content_maintype() == "text" and not filename and not is_attachment:
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else len(str(part.get_payload()))
        yield Attachment(
            filename=_one_line(filename or "(unnamed)"),
            content_type=part.get_content_type(),
            size=size,
        )


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _one_line(text: str) -> str:
    """Header-safe: no CR/LF (header injection) and no runs of whitespace."""
    return " ".join(text.split())
