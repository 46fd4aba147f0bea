from pathlib import Path

import pytest
import yaml

from component.config import ConfigError, load_config, parse_config
from component.crypto import generate_key

EXAMPLE = Path(__file__).parents[2] / "config.example.yaml"


def valid() -> dict:
    return {
        "secret_key": generate_key(),
        "allowed_domains": ["example.org"],
        "bridges": {
            "fake": {"jid": "fake.example.org", "secret": "s", "plugin": "fake_bridge:FakeBridge"}
        },
    }


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config(data, Path("/etc/gw"))
    return error.value.problems


def test_valid_config_gets_defaults(tmp_path):
    config, bridges = parse_config(valid(), tmp_path)
    assert config.server.port == 5347
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    assert [b.name for b in bridges] == ["fake"]
    assert bridges[0].options.greeting == "echo"


def test_each_problem_names_the_option():
    data = valid()
    del data["bridges"]["fake"]["secret"]
    data["server"] = {"port": 70000}
    data["secret_key"] = "nope"
    data["colour"] = "blue"
    found = problems(data)
    assert "bridges.fake.secret: Field required" in found
    assert any(p.startswith("server.port: ") for p in found)
    assert any(p.startswith("secret_key: ") and "generate-key" in p for p in found)
    assert "colour: Extra inputs are not permitted" in found


def test_bridge_options_are_checked_by_the_bridge():
    data = valid()
    data["bridges"]["fake"]["greeting"] = ["not", "text"]
    data["bridges"]["fake"]["unknown"] = 1
    found = problems(data)
    assert any(p.startswith("bridges.fake.greeting: ") for p in found)
    assert "bridges.fake.unknown: Extra inputs are not permitted" in found


def test_jids_must_be_bare_domains():
    data = valid()
    data["allowed_domains"] = ["user@example.org"]
    data["bridges"]["fake"]["jid"] = "fake.example.org/res"
    found = problems(data)
    assert any(p.startswith("allowed_domains: ") for p in found)
    assert any(p.startswith("bridges.fake.jid: ") for p in found)


def test_unknown_plugin_is_named():
    data = valid()
    data["bridges"]["fake"]["plugin"] = "nonexistent"
    assert problems(data)[0].startswith("bridges.fake.plugin: no bridge named 'nonexistent'")


def test_two_bridges_cannot_share_a_jid():
    data = valid()
    data["bridges"]["other"] = dict(data["bridges"]["fake"])
    assert any("each bridge needs its own jid" in p for p in problems(data))


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("bridges: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_the_example_config_is_valid(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["secret_key"] = generate_key()
    _, bridges = parse_config(data, tmp_path)
    assert {b.name for b in bridges} == set(data["bridges"])


def test_shutdown_timeout_defaults_to_ten_seconds_and_must_be_positive(tmp_path):
    config, _ = parse_config(valid(), tmp_path)
    assert config.shutdown_timeout == 10
    assert problems({**valid(), "shutdown_timeout": 0}) == [
        "shutdown_timeout: Input should be greater than 0"
    ]
