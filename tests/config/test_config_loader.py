"""Loading files: the shipped configs compile, secrets never leak, check-config's output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.loader import check_config_main, default_config_path, load_config, load_text
from gateway.errors import ConfigError
from gateway.types import NANO_PER_USD

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "production.yaml"
MINIMAL = REPO / "tests" / "fixtures" / "config" / "minimal.yaml"

EXAMPLE_ENV = {
    "SPENDGATE_ADMIN_KEY": "example-admin-key-0123456789",
    "REDIS_URL": "rediss://:pw@redis.internal:6380/0",
    "OPENAI_API_KEY": "sk-fake-openai",
    "AZURE_OPENAI_RESOURCE": "contoso",
    "AZURE_OPENAI_API_KEY": "fake-azure-key",
    "ANTHROPIC_API_KEY": "sk-ant-fake",
    "SUPPORT_BOT_KEY": "sk-sg-support-bot-fake-0001",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/fake-token",
}


def test_default_config_is_the_offline_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPENDGATE_"):
            monkeypatch.delenv(name)
    config = load_config()
    assert config.source == str(default_config_path())
    assert Path(config.source).resolve() == (REPO / "config" / "gateway.yaml").resolve()
    assert list(config.providers) == ["mock"]
    assert config.providers["mock"].base_url == "http://127.0.0.1:9911/v1"
    assert set(config.models) == {
        "gpt-4o",
        "gpt-4o-mini",
        "o3-mini",
        "text-embedding-3-small",
        "gpt-3.5-turbo-instruct",
    }
    assert [d.weight for d in config.models["gpt-4o-mini"].deployments] == [3, 1]
    assert all(d.price.source == "table" for m in config.models.values() for d in m.deployments)
    assert config.store.url == "local://"  # the local store, data in var/store
    assert config.store.data_dir == "var/store"
    assert config.server.admin_key_hash is not None
    assert sorted(k.principal.team for k in config.keys) == ["research", "search", "support"]
    budgets = {b.name: b for b in config.budgets.rules}
    assert [
        (b.team, b.scope, b.match, b.period, b.limit_nano, b.on_exceed) for b in budgets.values()
    ] == [
        ("search", "team", None, "monthly", 50 * NANO_PER_USD, "block"),
        ("support", "team", None, "daily", 5 * NANO_PER_USD, "downgrade"),
        ("research", "project", "evals", "weekly", 10 * NANO_PER_USD, "alert"),
    ]
    assert budgets["support-daily"].downgrade_to == "gpt-4o-mini"
    assert budgets["search-monthly"].thresholds == (50, 75, 90, 100)
    assert config.store.on_unavailable == "open"


def test_default_config_follows_its_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", "http://upstream.test:1234/v1/")
    assert load_config().providers["mock"].base_url == "http://upstream.test:1234/v1"


def test_production_example_compiles_with_its_env_vars() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    azure = config.providers["azure-gpt-4o"]
    assert azure.base_url == "https://contoso.openai.azure.com/openai/deployments/gpt-4o"
    assert (azure.auth, azure.api_version) == ("api-key", "2024-10-21")
    assert config.providers["anthropic"].litellm_provider == "anthropic"
    assert config.store.url == EXAMPLE_ENV["REDIS_URL"]
    assert [d.provider for d in config.models["gpt-4o"].deployments] == ["openai", "azure-gpt-4o"]
    llama = config.models["llama-3.1-70b"].deployments[0]
    assert llama.price.source == "override"
    # Budgets, alerts and chargeback
    assert config.store.spool_dir == "/var/lib/spendgate/spool"
    assert [t for t, team in config.teams.items() if team.shared] == ["platform"]
    budgets = {b.name: b for b in config.budgets.rules}
    assert len(budgets) == len(config.budgets.rules) >= 5
    assert all(
        b.downgrade_to in config.models for b in budgets.values() if b.on_exceed == "downgrade"
    )
    ranking_key = next(k for k in config.keys if k.principal.name == "search-ranking-prod")
    assert budgets["search-ranking-daily"].match == ranking_key.principal.key_id
    assert config.alerts.webhooks[0].url == EXAMPLE_ENV["SLACK_WEBHOOK_URL"]
    assert EXAMPLE_ENV["SLACK_WEBHOOK_URL"] not in repr(config)
    assert {cost.name for cost in config.shared_costs} == {"gateway-platform", "vector-db"}
    assert config.shared_costs[1].monthly_nano == 850 * NANO_PER_USD


def test_production_example_names_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={})
    missing = {reason.split()[2] for _, reason in info.value.problems}
    assert missing == set(EXAMPLE_ENV)


def test_minimal_fixture_compiles() -> None:
    config = load_config(MINIMAL, env={})
    assert list(config.models) == ["gpt-4o"]
    assert config.keys[0].principal.tags == {"cost_center": "cc-42"}


SECRET = "hunter2-Very-Secret-Value-0042"


def test_secrets_never_appear_in_problems_or_reprs() -> None:
    text = f"""\
server:
  port: ${{SECRET}}
  admin_key: {SECRET}
  host: 12345
providers:
  openai:
    kind: openai
    base_url: ${{SECRET}}
    api_key: ${{SECRET}}
    api_kye: {SECRET}
    headers: {{X-Token: "a\\n${{SECRET}}"}}
  other:
    kind: openai
    base_url: http://h/v1
    api_key: [{SECRET}]
models:
  gpt-4o:
    deployments: [{{provider: openai, model: gpt-4o}}]
store:
  url: "redis-typo://:{SECRET}@host"
teams:
  t:
    keys:
      - {{name: a, key: "${{SECRET}}"}}
      - {{name: b, sha256: "sk-sg-{SECRET}"}}
      - {{name: c, key: "{SECRET}"}}
"""
    with pytest.raises(ConfigError) as info:
        load_text(text, "secrets.yaml", env={"SECRET": SECRET})
    rendered = info.value.render() + repr(info.value.problems) + str(info.value)
    assert len(info.value.problems) >= 9
    assert SECRET not in rendered
    assert "${SECRET}" in rendered  # the variable is named, its value is not


def test_compiled_config_repr_holds_no_secret() -> None:
    text = """\
server: {admin_key: "${SECRET}"}
providers:
  p: {kind: openai, base_url: "http://h/v1", api_key: "${SECRET}", headers: {X-T: "${SECRET}"}}
models: {m: {deployments: [{provider: p, model: gpt-4o}]}}
teams: {t: {keys: [{name: a, key: "sk-sg-${SECRET}"}]}}
"""
    config = load_text(text, "ok.yaml", env={"SECRET": SECRET})
    assert config.providers["p"].api_key == SECRET
    assert config.providers["p"].headers == {"X-T": SECRET}
    assert SECRET not in repr(config)


def test_secret_on_a_line_with_a_syntax_error_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_text(f'providers:\n  p: {{api_key: "{SECRET}\n', "broken.yaml", env={})
    assert "YAML syntax error at line" in info.value.render()
    assert SECRET not in info.value.render()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == [("", "file not found")]


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(MINIMAL)) == 0
    out, err = capsys.readouterr()
    assert out == f"OK: {MINIMAL}: 1 providers, 1 models, 1 teams\n"
    assert err == ""


def test_check_config_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.read_text().replace("port: 8080", "port: eighty"))
    assert check_config_main(str(bad)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{bad}: 1 problem(s)\n  server.port: expected an integer, got str 'eighty' (line 4)\n"
    )


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(tmp_path / "nope.yaml")) == 1
    assert "nope.yaml: 1 problem(s)\n  <root>: file not found" in capsys.readouterr().err


SHIPPED = sorted(
    {REPO / "config" / "gateway.yaml", default_config_path(), *(REPO / "config").glob("**/*.yaml")}
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(Path(p).relative_to(REPO)))
def test_every_shipped_config_checks_with_no_environment_at_all(path: Path) -> None:
    """`spendgate check-config --allow-missing-env` passes on each config we ship, as CI would
    run it: with none of its variables set."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--allow-missing-env", str(path)],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"OK: {path}: ")


def test_unset_variables_stand_for_valid_values_and_everything_else_is_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = EXAMPLE.read_text()
    assert check_config_main(str(EXAMPLE), allow_missing_env=False) == 1  # not without the flag
    assert "environment variable OPENAI_API_KEY is not set" in capsys.readouterr().err
    # A port, a USD limit, a flag, a choice and part of a URL from unset variables: each stands
    # for a valid value of its field; a real mistake elsewhere is still reported.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINIMAL.read_text()
        .replace("port: 8080", "port: ${PORT}")
        .replace("models:", "models:\n  broken:\n    deployments: [{provider: nobody, model: x}]")
        + "\nstore:\n  url: ${STORE}\n  on_unavailable: ${MODE}\n"
    )
    assert check_config_main(str(bad), allow_missing_env=True) == 1
    err = capsys.readouterr().err
    assert err.count("problem(s)") == 1 and "1 problem(s)" in err
    assert "models.broken.deployments[0].provider" in err and "nobody" in err
    good = tmp_path / "good.yaml"
    good.write_text(
        text.replace("limit_usd: 6000", "limit_usd: ${SEARCH_LIMIT}")
        .replace("access_log: false", "access_log: ${ACCESS_LOG}")
        .replace("default_max_tokens: 2048", "default_max_tokens: ${MAX_TOKENS}")
    )
    assert good.read_text().count("${") == text.count("${") + 3
    assert check_config_main(str(good), allow_missing_env=True) == 0
    out = capsys.readouterr().out
    assert "not set, checked with placeholders" in out
    assert all(name in out for name in ("SEARCH_LIMIT", "ACCESS_LOG", "MAX_TOKENS"))
    assert "OPENAI_API_KEY" in out and "AZURE_OPENAI_RESOURCE" in out


def test_a_missing_top_level_section_is_reported_without_a_line() -> None:
    # A problem about a key that is not in the file at all has no line to point at; finding
    # that out must end (it looped forever on a top-level key).
    with pytest.raises(ConfigError) as caught:
        load_text("models: {}\n", "bad.yaml", env={})
    assert ("providers", "required key is missing") in caught.value.problems
