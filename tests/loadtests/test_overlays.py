"""Every overlay under loadtests/config/overlays/, merged over the load-test template, is a
config spendgate accepts and changes what its README says it changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config.loader import load_config
from loadtests import targets

OVERLAYS = sorted((targets.HERE / "config" / "overlays").glob("*.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.stem for p in OVERLAYS])
def test_an_overlay_is_a_config_spendgate_accepts(
    overlay: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOADTEST_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LOADTEST_SPENDGATE_KEY", targets.SPENDGATE_KEY)
    spec = targets.spendgate_config((overlay,), "redis://127.0.0.1:6379/0")
    path = tmp_path / "spendgate.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    config = load_config(path)
    if overlay.stem == "no-cache-store-level":
        assert config.cache.enabled and not config.cache.use_redis
    if overlay.stem == "no-coalescing":
        assert not config.batching.coalesce


def test_the_overlays_readme_lists_every_overlay() -> None:
    readme = (targets.HERE / "config" / "overlays" / "README.md").read_text()
    assert OVERLAYS and all(f"`{p.name}`" in readme for p in OVERLAYS)
