"""Units of the attachment path: FETCH responses and BODYSTRUCTURE, incremental
decoding, and file names a sender chose to be hostile."""

from __future__ import annotations

import base64
import binascii
import quopri

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.mail.attachments import Decoder
from bridges.mail.imap_parse import body_parts, fetch_records
from bridges.mail.mime import MAX_FILENAME_BYTES, safe_filename

STRUCTURE = (
    b'1 FETCH (UID 7 FLAGS (\\Seen) RFC822.SIZE 9000 BODYSTRUCTURE ((("text" "plain" '
    b'("charset" "utf-8") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)("text" "html" ("charset" '
    b'"utf-8") NIL NIL "7bit" 30 1 NIL NIL NIL NIL) "alternative" ("boundary" "b1") NIL NIL '
    b'NIL)("image" "png" ("name" "chart.png") "<chart>" NIL "base64" 400 NIL ("inline" '
    b'("filename" "chart.png")) NIL NIL)("application" "pdf" NIL NIL NIL "base64" 6844 NIL '
    b'("attachment" ("filename" {9}'
)


def test_a_batched_fetch_reads_every_mail_with_literals_anywhere() -> None:
    lines = [
        STRUCTURE,
        bytearray(b"a (b).pdf"),
        b')) NIL NIL) "mixed" ("boundary" "b0") NIL NIL NIL))',
        b"2 FETCH (UID 8 BODY[] {5}",
        bytearray(b"hello"),
        b" FLAGS ())",
        b"Fetch completed.",
    ]
    first, second = fetch_records(lines)
    assert first["UID"] == "7" and first["FLAGS"] == ["\\Seen"]
    assert second == {"UID": "8", "BODY[]": b"hello", "FLAGS": []}
    parts = body_parts(first["BODYSTRUCTURE"])
    assert [(p.section, p.content_type, p.is_text_body) for p in parts] == [
        ("1.1", "text/plain", True),
        ("1.2", "text/html", True),
        ("2", "image/png", False),
        ("3", "application/pdf", False),
    ]
    assert parts[2].filename == "chart.png" and parts[2].content_id == "<chart>"
    assert parts[3].filename == "a (b).pdf" and parts[3].size == 6844


def test_a_single_part_mail_is_section_one_and_garbage_yields_nothing() -> None:
    [record] = fetch_records(
        [b'1 FETCH (UID 1 BODYSTRUCTURE ("application" "zip" NIL NIL NIL "base64" 10 NIL))']
    )
    [part] = body_parts(record["BODYSTRUCTURE"])
    assert part.section == "1" and part.content_type == "application/zip"
    assert fetch_records([b'1 FETCH (UID 1 BODYSTRUCTURE ("a" ']) == []
    assert body_parts(["x"]) == [] and body_parts(None) == []


def test_rfc2231_and_rfc2047_names() -> None:
    [record] = fetch_records(
        [
            b'1 FETCH (BODYSTRUCTURE (("a" "b" NIL NIL NIL "7bit" 1 NIL ("attachment" '
            b'("filename*0*" "utf-8\'\'caf%C3%A9" "filename*1" ".txt")) NIL NIL)'
            b'("a" "b" ("name" "=?utf-8?q?na=C3=AFve.txt?=") NIL NIL "7bit" 1 NIL NIL NIL NIL)'
            b' "mixed"))'
        ]
    )
    assert [p.filename for p in body_parts(record["BODYSTRUCTURE"])] == ["café.txt", "naïve.txt"]


@given(st.binary(max_size=3000), st.lists(st.integers(1, 400), max_size=20))
def test_base64_decodes_the_same_in_any_pieces(data: bytes, cuts: list[int]) -> None:
    encoded = base64.encodebytes(data)
    decoder, out, pos = Decoder("base64"), b"", 0
    for cut in cuts:
        out += decoder.feed(encoded[pos : pos + cut])
        pos += cut
    out += decoder.feed(encoded[pos:]) + decoder.finish()
    assert out == data


@given(st.binary(max_size=2000), st.integers(1, 300))
def test_quoted_printable_decodes_the_same_in_any_pieces(data: bytes, cut: int) -> None:
    encoded = quopri.encodestring(data)
    decoder = Decoder("quoted-printable")
    out = b"".join(decoder.feed(encoded[i : i + cut]) for i in range(0, len(encoded), cut))
    assert out + decoder.finish() == data


def test_broken_base64_is_an_error_only_when_a_byte_is_cut() -> None:
    decoder = Decoder("base64")
    assert decoder.feed(b"aGVs!!bG8*\r\n") + decoder.finish() == b"hello"  # junk skipped
    assert decoder.feed(b"QUJDR") == b"ABC"
    with pytest.raises(binascii.Error):
        decoder.finish()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("\u202egnp.exe", "gnp.exe"),
        ("a\x00b\r\nc.txt", "abc.txt"),
        ("...", "attachment.pdf"),
        (None, "attachment.pdf"),
    ],
)
def test_hostile_file_names_are_made_safe(name: str | None, expected: str) -> None:
    assert safe_filename(name, "application/pdf") == expected


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = safe_filename("é" * 300 + ".tar", "application/x-tar")
    assert name.endswith(".tar") and len(name.encode()) <= MAX_FILENAME_BYTES
