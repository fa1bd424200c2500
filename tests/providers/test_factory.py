"""The advice a connection failure carries: for a new user's setups (the bundled mock's address,
the default config pointed elsewhere by SPENDGATE_UPSTREAM_URL) what to start or set; for any
other upstream nothing beyond the provider's name."""

from __future__ import annotations

import pytest

from gateway.config.loader import load_config
from gateway.providers.factory import connect_hint
from tests.conftest import ADMIN_KEY, FIXTURES


def hint_for(url: str, path: str | None) -> str | None:
    env = {"SPENDGATE_UPSTREAM_URL": url, "SPENDGATE_ADMIN_KEY": ADMIN_KEY}
    config = load_config(path, env=env)
    return connect_hint(config, config.providers["mock"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:9911/v1", "http://localhost:9911/v1"])
@pytest.mark.parametrize("path", [None, str(FIXTURES / "gateway.yaml")], ids=["default", "own"])
def test_the_mock_address_says_to_start_the_mock(url: str, path: str | None) -> None:
    hint = hint_for(url, path)
    assert hint is not None
    assert hint.startswith(f"{url} is the bundled mock upstream's address")
    assert "`spendgate mock-upstream`" in hint and "SPENDGATE_UPSTREAM_URL" in hint


def test_the_default_config_elsewhere_names_the_variable_without_its_credentials() -> None:
    hint = hint_for("https://svc:s3cret-pass@10.1.2.3:8443/v1?token=abc123", None)
    assert hint is not None
    assert hint.startswith("The default config sends requests to https://10.1.2.3:8443/v1, from")
    assert "SPENDGATE_UPSTREAM_URL" in hint and "`spendgate mock-upstream`" in hint
    assert "s3cret" not in hint and "abc123" not in hint


def test_any_other_upstream_gets_no_hint() -> None:
    assert hint_for("http://10.1.2.3:8000/v1", str(FIXTURES / "gateway.yaml")) is None
    assert hint_for("http://127.0.0.1:9912/v1", str(FIXTURES / "gateway.yaml")) is None
