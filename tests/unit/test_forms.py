import pytest

from bridges.base import FormField
from component.forms import FormInvalid, build_form, check_values

FIELDS = (
    FormField("user", "User", required=True),
    FormField("password", "Password", type="text-private", required=True),
    FormField("port", "Port", datatype="xs:integer", default=993),
    FormField("tls", "TLS", type="boolean", default=True),
    FormField("folders", "Folders", type="list-multi", options=("INBOX", "Sent")),
    FormField("security", "Security", type="list-single", options=("tls", "starttls")),
)


def test_values_are_converted_and_defaults_filled():
    values = check_values(
        FIELDS,
        {"user": "a", "password": "p", "port": "143", "tls": "0", "folders": ["INBOX", "Sent"]},
    )
    assert values == {
        "user": "a",
        "password": "p",
        "port": 143,
        "tls": False,
        "folders": ["INBOX", "Sent"],
    }
    assert check_values(FIELDS, {"user": "a", "password": "p"})["port"] == 993


@pytest.mark.parametrize(
    ("submitted", "field", "text"),
    [
        ({"password": "p"}, "user", "User is required"),
        ({"user": "a"}, "password", "Password is required"),
        ({"user": "a", "password": "p", "port": "x"}, "port", "whole number"),
        ({"user": "a", "password": "p", "tls": "maybe"}, "tls", "true or false"),
        ({"user": "a", "password": "p", "security": "none"}, "security", "'none' is not one"),
        ({"user": "a", "password": "p", "folders": ["Spam"]}, "folders", "'Spam'"),
        ({"user": "a" * 201, "password": "p"}, "user", "User is too long: at most 200"),
        ({"user": "a", "password": "p" * 201}, "password", "at most 200 characters"),
        ({"user": "a\nb", "password": "p"}, "user", "may not contain control characters"),
        ({"user": "a\x07", "password": "p"}, "user", "may not contain control characters"),
        ({"user": "a", "password": "p", "port": "9" * 300}, "port", "too long"),
        ({"user": "a", "password": "p", "folders": ["INBOX"] * 101}, "folders", "at most 100"),
    ],
)
def test_each_problem_names_its_field(submitted, field, text):
    with pytest.raises(FormInvalid) as problem:
        check_values(FIELDS, submitted)
    assert problem.value.field == field
    assert text in problem.value.text


def test_a_stored_secret_may_be_left_empty():
    assert "password" not in check_values(FIELDS, {"user": "a"}, keep_secrets={"password"})


def test_form_never_shows_secrets():
    form = build_form(
        FIELDS, title="t", instructions="i", values={"user": "a", "password": "p", "port": 1}
    )
    fields = form.get_fields()
    assert fields["user"]["value"] == "a"
    assert fields["port"]["value"] == "1"
    assert not fields["password"]["value"]
    assert "xs:integer" in str(fields["port"])


def test_irc_user_and_real_name_are_bounded():
    """A 100 KB real name used to be stored, and the next IRC join then hung."""
    from bridges.irc import IrcBridge

    fields = IrcBridge.registration_fields
    with pytest.raises(FormInvalid) as problem:
        check_values(fields, {"nick": "alice", "realname": "x" * 100_000})
    assert (problem.value.field, problem.value.text) == (
        "realname", "Real name is too long: at most 100 characters",
    )  # fmt: skip
    with pytest.raises(FormInvalid, match="at most 32"):
        check_values(fields, {"nick": "alice", "username": "u" * 33})
