import pytest

from component.crypto import SecretBox, SecretsUnreadable, check_key, generate_key


def test_round_trip_and_no_plaintext_in_the_token():
    box = SecretBox(generate_key())
    token = box.seal({"password": "hunter2"})
    assert "hunter2" not in token
    assert box.open(token) == {"password": "hunter2"}


def test_another_key_cannot_read():
    token = SecretBox(generate_key()).seal({"password": "x"})
    with pytest.raises(SecretsUnreadable):
        SecretBox(generate_key()).open(token)


def test_rotation_keeps_old_tokens_readable():
    old = generate_key()
    token = SecretBox(old).seal({"password": "x"})
    assert SecretBox(generate_key(), [old]).open(token) == {"password": "x"}


def test_bad_key_is_explained():
    with pytest.raises(ValueError, match="generate-key"):
        check_key("too short")
