"""Any legacy nick maps to a valid, stable occupant resource and back."""

from hypothesis import given
from hypothesis import strategies as st
from slixmpp import JID

from component.nick_resources import to_nick, to_resource

nicks = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(nicks)
def test_every_nick_round_trips_through_a_valid_resource(nick):
    resource = to_resource(nick)
    assert JID(f"room@irc.localhost/{resource}").resource == resource  # valid, unchanged
    assert to_nick(resource) == nick


def test_ordinary_nicks_stay_as_they_are():
    for nick in ("bob", "[away]Bob", "a_b-c", "nick with space"):
        assert to_resource(nick) == nick


def test_nicks_stringprep_would_fold_are_kept_apart():
    assert to_resource("\uff42ob") != to_resource("bob")  # full-width b is another user
