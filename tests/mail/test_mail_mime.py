"""mime.py without daemons: parsing real-world shapes and hostile input, building replies."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridges.mail import mime


def _parse(raw: str | bytes) -> mime.IncomingMail:
    return mime.parse_incoming(raw.encode("latin-1") if isinstance(raw, str) else raw)


def test_plain_mail_fields() -> None:
    mail = _parse(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <Juergen@Example.ORG>\r\n"
        "Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
        "Date: Tue, 03 Nov 2026 10:00:00 +0100\r\n"
        "Message-ID: <m2@example.org>\r\n"
        "In-Reply-To: <m1@example.org>\r\n"
        "References: <m0@example.org> <m1@example.org>\r\n"
        "\r\n"
        "Hallo\r\n"
    )
    assert mail.sender == "Juergen@example.org"  # domain folded, local part kept
    assert mail.display_name == "Jürgen Müller"
    assert mail.subject == "Grüße"
    assert mail.body.strip() == "Hallo"
    assert mail.date is not None and mail.date.utcoffset() is not None
    assert mail.date.hour == 10
    assert mail.thread_root == "<m0@example.org>"
    assert mail.reply_references == ("<m0@example.org>", "<m1@example.org>", "<m2@example.org>")


def test_alternative_prefers_plain_text() -> None:
    msg = EmailMessage()
    msg["From"] = "a@b.test"
    msg.set_content("plain version")
    msg.add_alternative("<p>html <b>version</b></p>", subtype="html")
    mail = mime.parse_incoming(msg.as_bytes())
    assert mail.body.strip() == "plain version"
    assert mail.attachments == ()


def test_html_only_is_rendered_as_text() -> None:
    msg = EmailMessage()
    msg["From"] = "a@b.test"
    msg.set_content(
        "<html><head><title>Weekly news</title><style>p {color: red}</style>"
        "<script>alert(1)</script></head>"
        "<body><p>Hello <b>world</b> &amp; friends</p><ul><li>one</li><li>two</li></ul>"
        "</body></html>",
        subtype="html",
    )
    body = mime.parse_incoming(msg.as_bytes()).body
    assert "Hello world & friends" in body
    assert "one\ntwo" in body
    assert "<" not in body and "color" not in body and "alert" not in body
    assert "Weekly news" not in body


def test_quoted_printable_latin1_and_encoded_subject() -> None:
    mail = _parse(
        "From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.fr>\r\n"
        "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=\r\n"
        "Content-Type: text/plain; charset=ISO-8859-1\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Un caf=E9, s'il vous pla=EEt, avec une tr=E8s longue ligne qui continue =\r\n"
        "sur la suivante.\r\n"
    )
    assert mail.display_name == "André"
    assert mail.subject == "Café crème"
    assert "Un café, s'il vous plaît" in mail.body
    assert "qui continue sur la suivante." in mail.body


def test_base64_body_and_attachments_listed() -> None:
    msg = EmailMessage()
    msg["From"] = "a@b.test"
    msg.set_content("see attached", cte="base64")
    msg.add_attachment(
        b"%PDF" + b"x" * 2044, maintype="application", subtype="pdf", filename="report.pdf"
    )
    msg.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="pic.png")
    mail = mime.parse_incoming(msg.as_bytes())
    assert mail.body.strip() == "see attached"
    assert mail.attachments == (
        mime.Attachment("report.pdf", "application/pdf", 2048),
        mime.Attachment("pic.png", "image/png", 4),
    )
    text = mime.render_text(mail, max_chars=1000)
    assert text.endswith(
        "Attachments:\n- report.pdf (application/pdf, 2.0 KB)\n- pic.png (image/png, 4 bytes)"
    )


def test_forwarded_message_is_one_attachment() -> None:
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner body")
    outer = EmailMessage()
    outer["From"] = "a@b.test"
    outer.set_content("fwd")
    outer.add_attachment(inner, filename="inner.eml")
    mail = mime.parse_incoming(outer.as_bytes())
    assert [a.content_type for a in mail.attachments] == ["message/rfc822"]
    assert "inner body" not in mail.body


def test_long_body_is_truncated_with_marker() -> None:
    mail = _parse("From: a@b.test\r\n\r\n" + "word " * 1000)
    text = mime.render_text(mail, max_chars=200)
    assert text.startswith("word word")
    assert "[… truncated: " in text
    assert len(text) < 300


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage without headers",
        b"From: <<<@@@>>>\r\nSubject: =?x-unknown?q?abc?=\r\nDate: not a date\r\n\r\nbody",
        b"Content-Type: text/plain; charset=x-klingon\r\n\r\n\xff\xfe caf\xe9",
        b"Content-Type: multipart/mixed; boundary=nope\r\n\r\nno boundary ever appears",
        b"Content-Type: multipart/alternative\r\n\r\n--\r\n--\r\n",
        b"Content-Type: text/html\r\n\r\n<<<>>><p<<script",
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
        b"Subject: " + b"\xff" * 50 + b"\r\nFrom: \xe9\xe9 <x@y.z>\r\n\r\n\x00\x01",
        b"Message-ID: <a@b>\r\nReferences: <<<>>> <ok@x> junk\r\n\r\n",
    ],
    ids=[
        "empty",
        "no-headers",
        "bad-from-charset-date",
        "unknown-body-charset",
        "missing-boundary",
        "boundaryless-multipart",
        "broken-html",
        "bad-base64",
        "8bit-garbage-headers",
        "junk-references",
    ],
)
def test_hostile_input_never_raises(raw: bytes) -> None:
    mail = mime.parse_incoming(raw)
    text = mime.render_text(mail, max_chars=500)
    assert isinstance(text, str) and text


def test_unknown_charset_reads_as_utf8_with_replacement() -> None:
    mail = _parse(b"Content-Type: text/plain; charset=x-klingon\r\n\r\ncaf\xc3\xa9 \xff")
    assert mail.body.startswith("café \ufffd")


def test_build_outgoing_reply_is_valid_utf8_mime() -> None:
    msg = mime.build_outgoing(
        sender="alice@example.test",
        display_name="Alice Ærø",
        to="bob@example.org",
        subject="Re: Grüße\r\nBcc: evil@example.org",
        text="Hällo " + "x" * 2000 + "\nzweite Zeile",
        in_reply_to="<m1@example.org>",
        references=["<m0@example.org>", "<m1@example.org>"],
    )
    raw = mime.to_bytes(msg)
    raw.decode("ascii")  # 7-bit clean on the wire
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\nBcc:" not in raw and b"\r\nBcc:" not in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["From"].addresses[0].display_name == "Alice Ærø"
    assert parsed["From"].addresses[0].addr_spec == "alice@example.test"
    assert str(parsed["Subject"]) == "Re: Grüße Bcc: evil@example.org"
    assert parsed["In-Reply-To"] == "<m1@example.org>"
    assert parsed["References"] == "<m0@example.org> <m1@example.org>"
    assert parsed["Message-ID"].endswith("@example.test>")
    assert parsed["Date"]
    body = parsed.get_body()
    assert body is not None
    assert body.get_content_charset() == "utf-8"
    content = body.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert content == "Hällo " + "x" * 2000 + "\nzweite Zeile\n"


def test_with_files_keeps_the_headers_attaches_and_appends_links() -> None:
    msg = mime.build_outgoing(
        sender="alice@example.test",
        display_name="Alice",
        to='"a..b"@example.org',
        subject="Plans",
        text="see both",
        in_reply_to="<m1@example.org>",
    )
    raw = mime.to_bytes(msg)
    data = bytes(range(256)) * 10
    hostile = ("../../\u202egnp.exe", "text/x-evil", data)
    out = mime.with_files(raw, [hostile], ["https://elsewhere.example/x.pdf"])
    out.decode("ascii")

    def headers(mail: bytes) -> list[bytes]:
        block = mail.split(b"\r\n\r\n")[0].split(b"\r\n")
        return [line for line in block if not line.lower().startswith(b"content-")]

    assert headers(out) == headers(raw)  # Message-ID, quoted local part and all
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().splitlines() == ["see both", "https://elsewhere.example/x.pdf"]
    [part] = list(parsed.iter_attachments())
    assert part.get_payload(decode=True) == data
    name = part.get_filename()
    assert name is not None and "/" not in name and "\u202e" not in name


@pytest.mark.parametrize(
    "content_type", ["a/b\r\nBcc: x@example.org", "x y/z", "text/pl\x00ain", "application/"]
)
def test_with_files_sends_a_broken_content_type_as_octet_stream(content_type: str) -> None:
    raw = mime.to_bytes(
        mime.build_outgoing(
            sender="a@example.test", display_name=None, to="b@example.org", subject="s", text="t"
        )
    )
    out = mime.with_files(raw, [("f.bin", content_type, b"data")], [])
    [part] = list(email.message_from_bytes(out, policy=email.policy.default).iter_attachments())
    assert part.get_content_type() == "application/octet-stream"
    assert b"Bcc" not in out


@pytest.mark.parametrize("size", [0, 1, 57, 57 * 4096, 57 * 4096 + 1, 1_000_003])
def test_write_with_files_streams_the_same_mail_as_with_files(size: int, tmp_path: Path) -> None:
    raw = mime.to_bytes(
        mime.build_outgoing(
            sender="a@example.test", display_name=None, to="b@example.org", subject="s", text="t"
        )
    )
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "file"
    path.write_bytes(data)
    out = io.BytesIO()
    files = [("a.bin", "application/octet-stream", path), ("b.pdf", "application/pdf", path)]
    mime.write_with_files(raw, files, ["https://x.example/f"], out)
    streamed = out.getvalue()
    whole = mime.with_files(raw, [(n, t, data) for n, t, _ in files], ["https://x.example/f"])
    assert len(streamed) == len(whole)
    assert all(len(line) <= 78 for line in streamed.split(b"\r\n"))
    parsed = email.message_from_bytes(streamed, policy=email.policy.default)
    assert [p.get_content() for p in parsed.iter_attachments()] == [data, data]
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.bin", "b.pdf"]


def test_with_files_of_an_empty_text_is_just_the_links() -> None:
    raw = mime.to_bytes(
        mime.build_outgoing(
            sender="a@example.test", display_name=None, to="b@example.org", subject="s", text=""
        )
    )
    parsed = email.message_from_bytes(mime.with_files(raw, [], ["https://x.example/f"]))
    assert parsed.get_payload(decode=True).decode().strip() == "https://x.example/f"


def test_thread_key_is_stable_and_short() -> None:
    assert mime.thread_key("<a@b>") == mime.thread_key("<a@b>")
    assert mime.thread_key("<a@b>") != mime.thread_key("<a@c>")
    assert len(mime.thread_key("<" + "x" * 900 + "@b>")) == 32


def test_format_flowed_paragraphs_are_joined() -> None:
    mail = _parse(
        "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=no\r\n\r\n"
        "This paragraph was wrapped by the \r\n"
        "sender at 72 columns.\r\n"
        "\r\n"
        "> quoted text that \r\n"
        "> continues\r\n"
        ">> deeper\r\n"
        " >not a quote (space-stuffed)\r\n"
        "-- \r\n"
        "Signature\r\n"
    )
    assert mail.body.split("\n") == [
        "This paragraph was wrapped by the sender at 72 columns.",
        "",
        "> quoted text that continues",
        ">> deeper",
        ">not a quote (space-stuffed)",
        "--",
        "Signature",
        "",
    ]


def test_format_flowed_delsp() -> None:
    mail = _parse(
        "Content-Type: text/plain; format=flowed; delsp=yes\r\n\r\nlangesWort \r\nteil\r\n"
    )
    assert mail.body.strip() == "langesWortteil"
