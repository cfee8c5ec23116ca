from __future__ import annotations

import base64

import pytest

from strangler.config import ConnectorKeys, load_settings, redact_url
from strangler.errors import ConfigError


def test_defaults_give_a_working_local_setup() -> None:
    settings = load_settings({})
    assert settings.mongo_in_process
    assert settings.database_url.startswith("postgresql://")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://localhost/x"),
        ("REDIS_URL", "http://localhost"),
        ("LEGACY_URL", "localhost:8001"),
        ("MONGO_URL", "mongodb://"),
        ("DATABASE_URL", "postgresql://h:notaport/db"),
    ],
)
def test_a_bad_url_names_its_setting_and_the_fix(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert caught.value.setting == name
    assert "set it like" in str(caught.value)


def test_passwords_in_urls_never_reach_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)
    assert redact_url("postgresql://u:hunter2@h:5/db") == "postgresql://u:***@h:5/db"


def test_connector_keys_parse_and_pick_the_last_as_active() -> None:
    k1 = base64.b64encode(b"a" * 32).decode()
    k2 = base64.b64encode(b"b" * 32).decode()
    keys = ConnectorKeys.parse(f"old:{k1},new:{k2}")
    assert keys.active == "new"
    assert keys.keys["old"] == b"a" * 32
    assert "aaaa" not in repr(keys) and k1 not in repr(keys)


def test_a_short_connector_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="not 32"):
        ConnectorKeys.parse("k:" + base64.b64encode(b"short").decode())
