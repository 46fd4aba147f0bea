"""`Address` keys dicts: equal addresses must find each other's entries, others not."""

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from bridges.address import Address, AddressKind

kinds = st.sampled_from(AddressKind)


@given(kinds, st.text(), kinds, st.text())
def test_equal_addresses_are_one_key_and_others_are_not(kind, legacy_id, other_kind, other_id):
    table = {Address(kind, legacy_id): "found"}
    assert table.get(Address(kind, legacy_id)) == "found"
    other = Address(other_kind, other_id)
    assert (table.get(other) == "found") == ((other_kind, other_id) == (kind, legacy_id))


def test_a_replaced_address_is_hashed_anew():
    room = Address(AddressKind.GROUP, "#a%irc.example.org")
    renamed = dataclasses.replace(room, legacy_id="#b%irc.example.org")
    assert {renamed: 1}.get(Address(AddressKind.GROUP, "#b%irc.example.org")) == 1
    assert renamed != room
    assert (
        repr(room) == "Address(kind=<AddressKind.GROUP: 'group'>, legacy_id='#a%irc.example.org')"
    )
