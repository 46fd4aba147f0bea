import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import JID

from bridges.jid_escaping import escape_node, unescape_node


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [  # XEP-0106 §5 examples
        ("space cadet", "space\\20cadet"),
        ('call me "ishmael"', "call\\20me\\20\\22ishmael\\22"),
        ("at&t guy", "at\\26t\\20guy"),
        ("d'artagnan", "d\\27artagnan"),
        ("/.fanboy", "\\2f.fanboy"),
        ("::foo::", "\\3a\\3afoo\\3a\\3a"),
        ("<foo>", "\\3cfoo\\3e"),
        ("user@host", "user\\40host"),
        ("c:\\net", "c\\3a\\net"),
        ("c:\\\\net", "c\\3a\\\\net"),
        ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
        ("c:\\5commas", "c\\3a\\5c5commas"),
    ],
)
def test_xep_examples(raw, escaped):
    assert escape_node(raw) == escaped
    assert unescape_node(escaped) == raw


@pytest.mark.parametrize("bad", ["", " leading", "trailing "])
def test_unmappable_identifiers_are_refused(bad):
    with pytest.raises(ValueError, match="JID localpart"):
        escape_node(bad)


identifiers = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60
).filter(lambda s: not s.startswith(" ") and not s.endswith(" "))


@given(identifiers)
def test_round_trip_on_hostile_input(raw):
    escaped = escape_node(raw)
    assert unescape_node(escaped) == raw
    assert not set(escaped) & set(" \"&'/:<>@")


@given(st.sampled_from(["alice", "bob\\20smith", "x\\40y", "#chan%irc.example.org"]))
def test_escaped_localparts_make_valid_jids(node):
    assert JID(f"{node}@gateway.example").node == node
