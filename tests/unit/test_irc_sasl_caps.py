"""SASL exchanges, capability choice and STS values, without a socket.

SCRAM is checked against RFC 7677's own example, so a mistake in our reading of the
RFC cannot hide behind a test server written with the same mistake.
"""

from __future__ import annotations

import base64

import pytest

from bridges.irc import sasl
from bridges.irc.caps import StsPolicy, parse_offer, to_request

# RFC 7677 §3: user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


async def test_scram_sha_256_matches_rfc_7677():
    scram = sasl.ScramSha256("user", "pencil", nonce=CLIENT_NONCE)
    assert await scram.respond(b"") == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert await scram.respond(SERVER_FIRST) == CLIENT_FINAL
    assert await scram.respond(SERVER_FINAL) == b""


@pytest.mark.parametrize(
    ("server_first", "complaint"),
    [
        (b"r=someone-elses-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=" + CLIENT_NONCE.encode() + b",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
        (b"r=" + CLIENT_NONCE.encode() + b"x,s=W22Z,i=99999999999", "iterations"),
        (b"r=" + CLIENT_NONCE.encode() + b"x,s=W22Z,i=1", "iterations"),
        (b"r=" + CLIENT_NONCE.encode() + b"x,s=not base64!,i=4096", "salt"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
async def test_scram_refuses_a_broken_server_first_message(server_first, complaint):
    scram = sasl.ScramSha256("user", "pencil", nonce=CLIENT_NONCE)
    await scram.respond(b"")
    with pytest.raises(sasl.SaslError, match=complaint):
        await scram.respond(server_first)


async def test_scram_refuses_a_server_that_cannot_prove_the_password():
    scram = sasl.ScramSha256("user", "pencil", nonce=CLIENT_NONCE)
    await scram.respond(b"")
    await scram.respond(SERVER_FIRST)
    with pytest.raises(sasl.SaslError, match="prove"):
        await scram.respond(b"v=" + base64.b64encode(b"\0" * 32))


def test_scram_escapes_odd_user_names():
    assert sasl.ScramSha256("a=b,c", "pw", nonce="n").first_bare == "n=a=3Db=2Cc,r=n"


def test_mechanisms_best_first_among_those_offered():
    offered = "PLAIN,EXTERNAL,SCRAM-SHA-256"
    assert sasl.mechanisms_to_try(offered, True, True) == ["EXTERNAL", "SCRAM-SHA-256", "PLAIN"]
    assert sasl.mechanisms_to_try(offered, True, False) == ["SCRAM-SHA-256", "PLAIN"]
    assert sasl.mechanisms_to_try("plain", True, True) == ["PLAIN"]
    assert sasl.mechanisms_to_try("", True, True) == ["PLAIN"]  # SASL 3.1 names none
    assert sasl.mechanisms_to_try("SCRAM-SHA-1,,GSSAPI", True, True) == []


def test_payloads_go_out_in_400_byte_pieces():
    assert list(sasl.encode_chunks(b"")) == ["+"]
    pieces = list(sasl.encode_chunks(b"x" * 300))  # exactly 400 base64 characters
    assert [len(p) for p in pieces] == [400, 1] and pieces[1] == "+"
    assert [len(p) for p in sasl.encode_chunks(b"x" * 301)] == [400, 4]


def test_challenges_are_collected_and_bounded():
    incoming = sasl.Incoming()
    text = base64.b64encode(b"y" * 450).decode()
    assert incoming.add(text[:400]) is None
    assert incoming.add(text[400:]) == b"y" * 450
    assert incoming.add("+") == b""
    with pytest.raises(sasl.SaslError, match="base64"):
        incoming.add("!!!")
    with pytest.raises(sasl.SaslError, match="too long"):
        for _ in range(20):
            incoming.add("A" * 400)


def test_hostile_cap_lists_are_bounded_and_cleaned():
    offered = parse_offer("A=1 b " + " ".join(f"x{i}" for i in range(1000)) + " -c =d")
    assert offered["a"] == "1" and offered["b"] == ""
    assert len(offered) <= 256
    assert "-c" not in offered and "" not in offered
    assert parse_offer("sasl=PLAIN account-notify\x01") == {"sasl": "PLAIN"}


def test_only_wanted_caps_are_requested_and_echo_only_whole():
    offered = ["account-tag", "chghost", "echo-message", "batch", "unknown/thing", "sasl"]
    assert to_request(offered, ()) == ["account-tag", "batch", "chghost"]
    whole = [*offered, "labeled-response"]
    assert to_request(whole, ()) == [
        "account-tag", "batch", "chghost", "echo-message", "labeled-response",
    ]  # fmt: skip
    assert to_request(whole, {"batch", "chghost"}) == [
        "account-tag", "echo-message", "labeled-response",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "port", "duration"),
    [
        ("port=6697,duration=300,preload", 6697, 300),
        ("duration=0", None, 0),
        ("port=abc,duration=-5", None, None),
        ("port=70000", None, None),
        ("port=0", None, None),
        ("PORT=6697,Duration=10", 6697, 10),
        ("port=٦٦٩٧", None, None),  # Arabic-Indic digits are digits to isdigit()
        ("duration=" + "9" * 40, None, None),
        ("", None, None),
        (",,,=,==", None, None),
    ],
)
def test_sts_values_broken_or_not(value, port, duration):
    assert StsPolicy.parse(value) == StsPolicy(port, duration)
