"""Mail addresses ⇄ JIDs: every address the gateway puts in a `from` can be written to.

Addresses come from From headers as Python's header registry parses them (quoted local
parts, obsolete syntax, Unicode display names), go through the JID the gateway makes,
back to an address, and out through the real submission server and MTA.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import string
import unicodedata
from email.headerregistry import Address as HeaderAddress

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mail_helpers import (
    MemoryStore,
    RecordingSink,
    inject,
    read_mailbox,
    register,
    register_existing,
    running,
    simple_mail,
)
from slixmpp import JID

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import BridgeError
from bridges.mail import MailBridge, addresses, mime
from bridges.mail.devstack import MailServer

BRIDGE = MailBridge(MailBridge.Options())
COMPONENT = "mail.example.org"

# -- strategies: From headers, written the many ways RFC 5322 allows ----------------------

_LATIN = st.characters(min_codepoint=0xC0, max_codepoint=0x17F, categories=("Lu", "Ll"))
"""Non-ASCII letters that stringprep (Unicode 3.2) knows, so nodeprep takes them."""
_atext = st.sampled_from(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_atoms = st.text(_atext | _LATIN, min_size=1, max_size=6)
_dot_atom = st.lists(_atoms, min_size=1, max_size=3).map(".".join)
_qtext = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | _LATIN
_quoted = st.text(_qtext, max_size=12).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=3).map(".".join)
_names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20
)


@st.composite
def _display(draw: st.DrawFn) -> str:
    """A display name as a quoted phrase, an RFC 2047 encoded word, or plain atoms."""
    name = draw(_names)
    style = draw(st.sampled_from(["quoted", "encoded", "atoms"]))
    if style == "encoded":
        return email.header.Header(name, "utf-8").encode()
    if style == "atoms" and name.isalnum():
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _mailbox(draw: st.DrawFn, domain: st.SearchStrategy[str]) -> str:
    local = draw(_dot_atom | _quoted)
    spec = f"{local}@{draw(domain)}"
    if draw(st.booleans()):
        return spec
    return f"{draw(_display())} <{spec}>"


def from_header_addresses(domain: st.SearchStrategy[str] = _domain) -> st.SearchStrategy:
    """The mailboxes the header registry parses from a generated From header."""

    def parse(mailboxes: list[str]) -> list[HeaderAddress]:
        raw = f"From: {', '.join(mailboxes)}\n\n"
        header = email.message_from_string(raw, policy=email.policy.default)["From"]
        return [a for a in header.addresses if a.domain]

    return st.lists(_mailbox(domain), min_size=1, max_size=3).map(parse)


def _xmpp_fold(text: str) -> str:
    """What nodeprep (RFC 3920 B.2 case folding, NFKC) leaves of a localpart's letters."""
    return unicodedata.normalize("NFKC", text).casefold()


# -- the mapping ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(from_header_addresses())
def test_every_parsed_sender_round_trips_through_its_jid(parsed: list[HeaderAddress]) -> None:
    for header_address in parsed:
        address = Address(
            AddressKind.CONTACT, addresses.canonical(header_address.username, header_address.domain)
        )
        localpart = BRIDGE.format_address(address)
        assert BRIDGE.parse_address(localpart) == address
        # The JID the XMPP server routes: nodeprep folds case, the address stays the same
        jid = JID(f"{localpart}@{COMPONENT}")
        assert _xmpp_fold(BRIDGE.parse_address(jid.node).legacy_id) == _xmpp_fold(address.legacy_id)
        # canonical is RFC 5322 itself: the header registry reads the same mailbox back
        if header_address.username.isascii():
            again = HeaderAddress(addr_spec=address.legacy_id)
            assert (again.username, again.domain) == (
                header_address.username,
                header_address.domain.lower(),
            )


def test_readme_example_literally() -> None:
    """README: `bob smith@example.org` → `bob\\20smith\\40example.org@mail.example.org`."""
    jid = JID("bob\\20smith\\40example.org@mail.example.org")
    address = BRIDGE.parse_address(jid.node)
    assert address == Address(AddressKind.CONTACT, '"bob smith"@example.org')
    assert addresses.for_smtp(address.legacy_id) == '"bob smith"@example.org'


def test_issue_example_routes_back() -> None:
    """A mail from `"odd one"@remote.test` comes from a JID that a reply may be sent to."""
    sender = Address(AddressKind.CONTACT, '"odd one"@remote.test')
    assert BRIDGE.format_address(sender) == "\\22odd\\20one\\22\\40remote.test"
    assert BRIDGE.parse_address("\\22odd\\20one\\22\\40remote.test") == sender


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ('"odd\\ one"@Remote.TEST', '"odd one"@remote.test'),  # quoted-pair is no-op
        ('"bob"@example.org', "bob@example.org"),  # quotes that change nothing go
        ("a..b@example.org", '"a..b"@example.org'),  # not a dot-atom: quoted
        ("x@y@example.org", '"x@y"@example.org'),  # the domain follows the last @
        ('a"b@example.org', '"a\\"b"@example.org'),
        ("jö@exämple.org", "jö@exämple.org"),
    ],
)
def test_lenient_input_becomes_canonical(typed: str, canonical: str) -> None:
    assert addresses.parse(typed) == canonical
    assert BRIDGE.parse_address(BRIDGE.format_address(Address(AddressKind.CONTACT, typed))) == (
        Address(AddressKind.CONTACT, canonical)
    )


@pytest.mark.parametrize(
    ("localpart", "why"),
    [
        ("", "needs local@domain"),
        ("bob", "needs local@domain"),
        ("bob\\40", "needs local@domain"),
        ("\\40x.test", "nothing before the @"),
        ("bob%", "needs local@domain"),
        ("a\\40b\\20c.test", "bad domain"),
        ("a\\40-x..test", "bad domain"),
        ("a\tb\\40x.test", "control character"),
    ],
)
def test_what_is_no_address_is_jid_malformed(localpart: str, why: str) -> None:
    with pytest.raises(AddressError) as refused:
        BRIDGE.parse_address(localpart)
    assert refused.value.condition == "jid-malformed"
    assert "is not an email address" in refused.value.text
    assert why in refused.value.text


def test_an_address_no_jid_can_hold_is_refused() -> None:
    """nodeprep forbids private-use characters: such a sender gets no JID of its own."""
    with pytest.raises(AddressError, match="cannot be written as a JID"):
        BRIDGE.format_address(Address(AddressKind.CONTACT, "\ue000@remote.test"))


def test_non_ascii_local_part_is_refused_for_smtp_with_a_reason() -> None:
    with pytest.raises(AddressError, match="SMTPUTF8") as refused:
        addresses.for_smtp("jö@example.org")
    assert refused.value.condition == "not-acceptable"
    assert addresses.for_smtp("bob@exämple.org") == "bob@xn--exmple-cua.org"


def test_incoming_sender_uses_the_same_mapping() -> None:
    raw = b'From: "Odd One" <"odd one"@Remote.TEST>\r\nSubject: hi\r\n\r\nbody\r\n'
    assert mime.parse_incoming(raw).sender == '"odd one"@remote.test'
    obsolete = b"From: odd . one @ remote.test\r\n\r\nbody\r\n"  # RFC 5322 4.4 CFWS
    assert mime.parse_incoming(obsolete).sender == "odd.one@remote.test"
    utf8 = "From: Jöse <jö@Exämple.org>\r\n\r\nbody\r\n".encode()  # RFC 6532 header
    assert (mime.parse_incoming(utf8).display_name, mime.parse_incoming(utf8).sender) == (
        "Jöse",
        "jö@exämple.org",
    )


@pytest.mark.parametrize("local", ["a..b", ".a", "", "odd one", 'a"b\\c', "a@b"])
def test_outgoing_headers_keep_the_quoting(local: str) -> None:
    """CPython's own Address would write `"a..b"@x` as `a..b@x`: another address."""
    sender, to = addresses.canonical(local, "example.test"), addresses.canonical(local, "x.test")
    name = 'Zoë "Z" O\'Brien, Esq.'
    message = mime.build_outgoing(sender=sender, display_name=name, to=to, subject="s", text="t")
    raw = mime.to_bytes(message)
    assert f"To: {to}\r\n".encode() in raw  # a lenient reader would take a..b@x as well
    assert f"<{sender}>\r\n".encode() in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    [written_from], [written_to] = parsed["From"].addresses, parsed["To"].addresses
    assert (written_from.display_name, written_from.username) == (name, local)
    assert (written_to.username, written_to.domain) == (local, "x.test")


# -- on the wire: Dovecot submission → MTA → mailbox -----------------------------------


async def test_reply_to_a_quoted_local_part_lands_in_its_mailbox(
    mail: MailServer, bridge: MailBridge
) -> None:
    odd = await mail.add_user("odd one", "oddpw")
    assert odd == '"odd one"@example.test'
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        to = mail.address("alice")
        await inject(mail, simple_mail(to, "hello", "from odd", From=f"Odd <{odd}>"), to, odd)
        incoming = await sink.wait_for(lambda e: isinstance(e, events.Message))
        localpart = bridge.format_address(incoming.sender)
        assert localpart == "\\22odd\\20one\\22\\40example.test"
        reply_to = bridge.parse_address(JID(f"{localpart}@{COMPONENT}").node)
        await session.send_message(reply_to, "back to you", xmpp_id="r1")
        await sink.wait_for(lambda e: isinstance(e, events.Delivered))
    [answer] = await read_mailbox(mail, "odd one")
    assert answer["To"].addresses[0].username == "odd one"
    assert answer.get_body().get_content().strip() == "back to you"


async def test_readme_example_is_sent_to_the_quoted_address(
    mail: MailServer, bridge: MailBridge
) -> None:
    """The README's JID spelling, with this test system's domain: mail lands."""
    await mail.add_user("bob smith", "bobpw")
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        to = bridge.parse_address(JID("bob\\20smith\\40example.test@mail.example.org").node)
        await session.send_message(to, "hi Bob", xmpp_id="b1")
        delivered = await sink.wait_for(
            lambda e: isinstance(e, events.Delivered | events.DeliveryFailed)
        )
    assert delivered == events.Delivered(to, "b1")
    [received] = await read_mailbox(mail, "bob smith")
    assert str(received["To"]) == '"bob smith"@example.test'


async def test_readme_example_literally_is_accepted_by_smtp(
    mail: MailServer, bridge: MailBridge
) -> None:
    """The README's JID as written, domain included: submission and the MTA accept it
    (example.org standing for the rest of the internet) for `"bob smith"@example.org`."""
    mail.remote_domain = "example.org"
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        to = bridge.parse_address(JID("bob\\20smith\\40example.org@mail.example.org").node)
        await session.send_message(to, "hi Bob", xmpp_id="b1")
        delivered = await sink.wait_for(
            lambda e: isinstance(e, events.Delivered | events.DeliveryFailed)
        )
    assert delivered == events.Delivered(to, "b1")
    [relayed] = mail.remote
    assert relayed.rcpt_to == '"bob smith"@example.org'
    message = email.message_from_bytes(relayed.content, policy=email.policy.default)
    assert str(message["To"]) == '"bob smith"@example.org'


_remote = st.sampled_from(["remote.test", "Remote.TEST"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one mail system for all
)
@given(parsed=from_header_addresses(_remote))
@example(parsed=[HeaderAddress(display_name="0", username="\u0132", domain="remote.test")])
async def test_replies_to_parsed_senders_are_accepted_by_smtp(
    mail: MailServer, bridge: MailBridge, parsed: list[HeaderAddress]
) -> None:
    """The reply to every parsed sender, written to the JID as the XMPP server hands it
    on (nodeprep folds the local part's case), goes through Dovecot's submission and the
    MTA to that sender."""
    if "alice" not in mail.users:
        await mail.add_user("alice", "alice-secret")
    account = await register_existing(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    session = bridge.create_session(account, sink, store)
    for header_address in parsed:
        canonical = addresses.canonical(header_address.username, header_address.domain)
        localpart = bridge.format_address(Address(AddressKind.CONTACT, canonical))
        to = bridge.parse_address(JID(f"{localpart}@{COMPONENT}").node)
        if not to.legacy_id.isascii():  # nodeprep's NFKC may make it ASCII: "Ĳ" → "ij"
            with pytest.raises(BridgeError, match="SMTPUTF8"):
                await session.send_message(to, "reply")
            continue
        before, sent = len(mail.remote), len(sink.of(events.Delivered))
        await session.send_message(to, "reply", xmpp_id="p1")  # submitted in the background
        delivered = await sink.wait_count(events.Delivered, sent + 1)
        assert delivered[-1] == events.Delivered(to, "p1")
        [relayed] = mail.remote[before:]
        assert _xmpp_fold(addresses.parse(relayed.rcpt_to)) == _xmpp_fold(canonical)
        message = email.message_from_bytes(relayed.content, policy=email.policy.default)
        [written] = message["To"].addresses
        assert (_xmpp_fold(written.username), written.domain) == (
            _xmpp_fold(header_address.username),
            "remote.test",
        )
    await session.stop()


async def test_a_user_whose_own_address_is_quoted(mail: MailServer, bridge: MailBridge) -> None:
    """Login name with a space (IMAP LOGIN quotes it), From and MAIL FROM quoted."""
    await mail.add_user("carol", "carolpw")
    odd = await register(bridge, mail, "odd one", username="odd one")
    assert odd.settings["email"] == '"odd one"@example.test'
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, odd, sink, store) as session:
        await session.send_message(
            Address(AddressKind.CONTACT, mail.address("carol")), "hi", xmpp_id="o1"
        )
        await sink.wait_for(lambda e: isinstance(e, events.Delivered | events.DeliveryFailed))
    assert sink.of(events.DeliveryFailed) == []
    [received] = await read_mailbox(mail, "carol")
    assert received["From"].addresses[0].username == "odd one"
    assert received["Return-Path"] == '<"odd one"@example.test>'


async def test_a_sender_no_jid_can_hold_is_named_in_the_text(
    mail: MailServer, bridge: MailBridge
) -> None:
    """The mail still arrives, from the mailer-daemon JID, saying who wrote it."""
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store):
        to = mail.address("alice")
        raw = f"From: \ue000@remote.test\r\nTo: {to}\r\nSubject: odd\r\n\r\nhello\r\n"
        await inject(mail, raw.encode(), to, "bounce@remote.test")
        message = await sink.wait_for(lambda e: isinstance(e, events.Message))
    assert message.sender == Address(AddressKind.CONTACT, "mailer-daemon@example.test")
    assert message.text == (
        "[from \ue000@remote.test, which has no JID: answer it from a mail client]\n\nhello"
    )
    assert bridge.format_address(message.sender) == "mailer-daemon\\40example.test"
