"""Each kind of config problem is reported with its key path and a precise reason, all at once."""

from __future__ import annotations

import hashlib
import textwrap
from types import MappingProxyType

import pytest

from gateway.config.loader import load_text
from gateway.config.model import Config, Timeouts
from gateway.errors import ConfigError
from gateway.pricing.price import Price
from gateway.pricing.table import PriceTable

GPT_4O = Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000)
CLAUDE = Price(3_000_000_000, 15_000_000_000, 300_000_000, 15_000_000_000)
# A fixed table, so these tests don't move when litellm's prices do.
PRICES = PriceTable({"gpt-4o": GPT_4O, "anthropic/claude-sonnet-4-5": CLAUDE})

PROVIDERS = """\
providers:
  openai:
    kind: openai
    base_url: https://api.openai.com/v1/
    api_key: sk-test-openai
  anthropic:
    kind: litellm
    litellm_provider: anthropic
    base_url: https://api.anthropic.com
"""

MODELS = """\
models:
  gpt-4o:
    deployments:
      - provider: openai
        model: gpt-4o
"""


def load(yaml_text: str, env: dict[str, str] | None = None) -> Config:
    return load_text(textwrap.dedent(yaml_text), "test.yaml", env=env or {}, prices=PRICES)


def problems(yaml_text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The problems of a config, with the '(line N)' suffix cut off the reasons."""
    with pytest.raises(ConfigError) as info:
        load(yaml_text, env)
    assert info.value.source == "test.yaml"
    return [(path, reason.rsplit(" (line ", 1)[0]) for path, reason in info.value.problems]


def reason_at(found: list[tuple[str, str]], path: str) -> str:
    reasons = [reason for p, reason in found if p == path]
    assert reasons, f"no problem at {path}; got {found}"
    return reasons[0]


def test_a_valid_config_compiles_to_read_only_snapshots() -> None:
    config = load(
        PROVIDERS
        + MODELS
        + """\
teams:
  search:
    keys:
      - name: search-prod
        key: sk-sg-0123456789abcdef0123
        project: ranking
        tags: {cost_center: cc-42}
"""
    )
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"  # slash stripped
    assert config.providers["anthropic"].litellm_provider == "anthropic"
    route = config.models["gpt-4o"]
    assert route.deployments[0].id == "openai/gpt-4o"
    assert route.deployments[0].price == GPT_4O
    assert (route.strategy, route.retries, route.backoff_s) == ("weighted", 2, 0.05)
    digest = hashlib.sha256(b"sk-sg-0123456789abcdef0123").hexdigest()
    (key,) = config.keys
    assert key.key_hash == digest
    assert key.principal.key_id == "key_" + digest[:12]
    assert (key.principal.team, key.principal.project) == ("search", "ranking")
    assert key.principal.name == "search-prod"
    for mapping in (config.providers, config.models, config.teams, key.principal.tags):
        assert isinstance(mapping, MappingProxyType)
    assert config.server.admin_key_hash is None  # no admin key: admin API disabled


def test_admin_key_is_kept_only_as_its_digest() -> None:
    config = load(
        "server: {admin_key: '${ADMIN}'}\n" + PROVIDERS + MODELS, {"ADMIN": "admin-secret-1"}
    )
    assert config.server.admin_key_hash == hashlib.sha256(b"admin-secret-1").hexdigest()
    assert (
        load("server: {admin_key: '${ADMIN:-}'}\n" + PROVIDERS + MODELS).server.admin_key_hash
        is None
    )


def test_unknown_key_suggests_the_close_one() -> None:
    found = problems(
        PROVIDERS + MODELS.replace("    deployments:", "    retires: 3\n    deployments:")
    )
    assert reason_at(found, "models.gpt-4o.retires") == (
        "unknown key 'retires' (did you mean 'retries'?)"
    )


def test_unknown_top_level_section_lists_the_known_ones() -> None:
    found = problems(PROVIDERS + MODELS + "routing: {}\nbudgetz: {}\n")
    assert reason_at(found, "routing") == (
        "unknown key 'routing' (known keys: server, store, providers, models, pricing, teams, "
        "budgets, rate_limits, alerts, aggregator, forecasts, anomalies, tiers, cache, batching, "
        "policies)"
    )
    assert reason_at(found, "budgetz") == "unknown key 'budgetz' (did you mean 'budgets'?)"


@pytest.mark.parametrize(
    ("server", "path", "reason"),
    [
        ("port: abc", "server.port", "expected an integer, got str 'abc'"),
        ("port: true", "server.port", "expected an integer, got bool True"),
        ("port: 70000", "server.port", "must be at most 65535, got 70000"),
        ("max_body_bytes: 0", "server.max_body_bytes", "must be at least 1, got 0"),
        ("key_cache_ttl_s: fast", "server.key_cache_ttl_s", "expected a number, got str 'fast'"),
        ("access_log: maybe", "server.access_log", "expected true or false, got str 'maybe'"),
        (
            "host: 127",
            "server.host",
            "expected a string, got int 127 (quote it in YAML to make it text)",
        ),
    ],
)
def test_wrong_types_and_ranges(server: str, path: str, reason: str) -> None:
    assert reason_at(problems(f"server: {{{server}}}\n" + PROVIDERS + MODELS), path) == reason


def test_undefined_provider_is_named_with_the_defined_ones() -> None:
    found = problems(PROVIDERS + MODELS.replace("provider: openai", "provider: opnai"))
    assert reason_at(found, "models.gpt-4o.deployments[0].provider") == (
        "provider 'opnai' is not defined in providers (defined: openai, anthropic)"
    )


def test_missing_env_var_names_the_key_and_the_variable() -> None:
    found = problems(PROVIDERS.replace("sk-test-openai", "${OPENAI_API_KEY}") + MODELS)
    assert reason_at(found, "providers.openai.api_key") == (
        "environment variable OPENAI_API_KEY is not set (or write ${OPENAI_API_KEY:-default})"
    )


def test_env_substitution_defaults_escapes_and_numbers() -> None:
    config = load(
        'server: {port: "${PORT}", host: "${HOST:-0.0.0.0}", access_log: "${LOG:-false}"}\n'
        + PROVIDERS.replace("sk-test-openai", "pre-$${literal}-${KEY}")
        + MODELS,
        {"PORT": "9090", "KEY": "abc: [not, yaml]", "HOST": ""},
    )
    assert config.server.port == 9090  # env values are text; numeric keys accept them
    assert config.server.host == "0.0.0.0"  # `:-` also covers a set-but-empty variable
    assert config.server.access_log is False
    assert config.providers["openai"].api_key == "pre-${literal}-abc: [not, yaml]"


def test_malformed_reference_is_reported() -> None:
    found = problems(PROVIDERS.replace("sk-test-openai", "${1BAD}") + MODELS)
    assert reason_at(found, "providers.openai.api_key").startswith("malformed ${...}")


def test_duplicate_deployment_ids() -> None:
    found = problems(
        PROVIDERS
        + """\
models:
  gpt-4o:
    deployments:
      - {provider: openai, model: gpt-4o}
      - {provider: openai, model: gpt-4o}
  smart:
    deployments:
      - {provider: anthropic, model: claude-sonnet-4-5, id: openai/gpt-4o}
  alias:
    deployments:
      - {provider: openai, model: gpt-4o}
"""
    )
    assert reason_at(found, "models.gpt-4o.deployments[1].model") == (
        "duplicate deployment id 'openai/gpt-4o' (also models.gpt-4o.deployments[0])"
    )
    assert reason_at(found, "models.smart.deployments[0].id") == (
        "duplicate deployment id 'openai/gpt-4o': models.gpt-4o.deployments[0] already uses it "
        "for openai/gpt-4o"
    )
    # The same upstream in two routes is one deployment (shared health), not a duplicate.
    assert len(found) == 2  # models.alias.deployments[0] is fine


def test_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load(PROVIDERS + MODELS + MODELS.replace("models:\n", ""))
    ((path, reason),) = info.value.problems
    assert path == "models.gpt-4o"
    assert reason.startswith("duplicate key 'gpt-4o' (first at line 11)")
    assert reason.endswith("(line 15)")


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load("server:\n  port: [8080\nproviders: {}\n")
    ((path, reason),) = info.value.problems
    assert path == ""
    assert reason.startswith("YAML syntax error at line 3, column 10:")


def test_empty_file() -> None:
    assert problems("# nothing yet\n") == [("", "the config is empty")]


def test_unpriced_model_asks_for_an_override() -> None:
    found = problems(PROVIDERS + MODELS.replace("model: gpt-4o", "model: foo"))
    assert reason_at(found, "models.gpt-4o.deployments[0].model") == (
        "no price for model 'foo' (provider 'openai'): add pricing.overrides.foo "
        "(or pricing.overrides.openai/foo)"
    )


def test_price_resolution_order_override_then_table() -> None:
    config = load(
        PROVIDERS
        + """\
models:
  gpt-4o:
    deployments:
      - {provider: openai, model: gpt-4o}
      - {provider: anthropic, model: claude-sonnet-4-5}
      - {provider: anthropic, model: gpt-4o}
  llama:
    deployments:
      - {provider: openai, model: llama-3.1-70b}
pricing:
  overrides:
    openai/gpt-4o: {input_per_1m: 1.25, output_per_1m: 5}
    gpt-4o: {input_per_1m: 99, output_per_1m: 99}
    llama-3.1-70b: {input_per_1m: 0.59, output_per_1m: 0.79, cached_input_per_1m: 0.3}
"""
    )
    openai, claude, anthropic_gpt = config.models["gpt-4o"].deployments
    assert (openai.price.input_per_m, openai.price.source) == (1_250_000_000, "override")
    assert claude.price == CLAUDE  # from the table, as anthropic/claude-sonnet-4-5
    assert anthropic_gpt.price.input_per_m == 99_000_000_000  # by model name
    llama = config.models["llama"].deployments[0].price
    assert (llama.input_per_m, llama.output_per_m, llama.cached_input_per_m) == (
        590_000_000,
        790_000_000,
        300_000_000,
    )
    assert llama.reasoning_per_m == llama.output_per_m


def test_override_matching_no_deployment_is_a_typo() -> None:
    found = problems(
        PROVIDERS
        + MODELS
        + "pricing:\n  overrides:\n    gpt-4o-:\n      {input_per_1m: 1, output_per_1m: 1}\n"
    )
    assert reason_at(found, "pricing.overrides.gpt-4o-") == (
        "matches no deployment (did you mean 'gpt-4o'?)"
    )


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        (
            "kind: litellm\n    base_url: https://api.anthropic.com",
            "required when kind is 'litellm' (e.g. anthropic, bedrock)",
        ),
        (
            "kind: openai\n    base_url: https://x/v1\n    api_key: k\n"
            "    litellm_provider: anthropic",
            "only allowed when kind is 'litellm', not 'openai'",
        ),
    ],
)
def test_kind_and_litellm_provider_must_agree(provider: str, reason: str) -> None:
    found = problems(PROVIDERS + f"  other:\n    {provider}\n" + MODELS)
    assert reason_at(found, "providers.other.litellm_provider") == reason


def test_openai_kind_with_auth_needs_an_api_key() -> None:
    found = problems(PROVIDERS + "  local:\n    kind: openai\n    base_url: http://h/v1\n" + MODELS)
    assert reason_at(found, "providers.local.api_key") == (
        "required with auth 'bearer' (use auth: none for no auth)"
    )
    load(PROVIDERS + "  local: {kind: openai, base_url: 'http://h/v1', auth: none}\n" + MODELS)


def test_choices_timeouts_and_names() -> None:
    found = problems(
        PROVIDERS
        + """\
  Bad_Name:
    kind: openai
    base_url: ftp://host
    auth: token
    api_key: k
    timeouts: {first_byte_s: 700, total_s: 600, connect_s: 0}
"""
        + MODELS.replace("    deployments:", "    strategy: weigted\n    deployments:")
    )
    assert reason_at(found, "providers.Bad_Name") == (
        "provider names use only a-z, 0-9, _ and -, got str 'Bad_Name'"
    )
    assert reason_at(found, "providers.Bad_Name.base_url") == (
        "expected a URL starting with http://, https://; got str 'ftp://host'"
    )
    assert reason_at(found, "providers.Bad_Name.auth") == (
        "expected one of 'bearer', 'api-key', 'none', got str 'token'"
    )
    assert reason_at(found, "providers.Bad_Name.timeouts.connect_s") == (
        "must be greater than 0, got int 0"
    )
    assert reason_at(found, "models.gpt-4o.strategy") == (
        "expected one of 'weighted', 'ordered', 'least-busy', 'cheapest', got str 'weigted' "
        "(did you mean 'weighted'?)"
    )


def test_timeouts_must_fit_in_the_total() -> None:
    found = problems(
        PROVIDERS.replace(
            "api_key: sk-test-openai", "api_key: k\n    timeouts: {first_byte_s: 700}"
        )
        + MODELS
    )
    assert reason_at(found, "providers.openai.timeouts.first_byte_s") == (
        "must not exceed total_s (600)"
    )


def test_declared_keys_rules() -> None:
    digest = hashlib.sha256(b"sk-sg-0123456789abcdef0123").hexdigest()
    found = problems(
        PROVIDERS
        + MODELS
        + f"""\
teams:
  search:
    keys:
      - {{name: short, key: sk-sg-short}}
      - {{name: both, key: sk-sg-0123456789abcdef9999, sha256: {digest}}}
      - {{name: first, key: sk-sg-0123456789abcdef0123}}
  "bad team":
    keys:
      - {{name: again, sha256: {digest.upper()}}}
      - {{key: sk-sg-0123456789abcdef5555}}
"""
    )
    assert reason_at(found, "teams.search.keys[0].key") == (
        "must start with 'sk-sg-' and be 20+ characters long"
    )
    assert reason_at(found, "teams.search.keys[1].key") == (
        "give exactly one of key (the plain key) or sha256 (its digest)"
    )
    assert reason_at(found, "teams.bad team").startswith("team names use only")
    assert reason_at(found, "teams.bad team.keys[1].name") == "required key is missing"


def test_duplicate_declared_keys_across_teams() -> None:
    digest = hashlib.sha256(b"sk-sg-0123456789abcdef0123").hexdigest()
    found = problems(
        PROVIDERS
        + MODELS
        + f"""\
teams:
  search:
    keys: [{{name: a, key: sk-sg-0123456789abcdef0123}}]
  support:
    keys: [{{name: b, sha256: {digest.upper()}}}]
"""
    )
    assert reason_at(found, "teams.support.keys[0].sha256") == (
        "duplicate key: the same key as teams.search.keys[0].key"
    )


def test_many_problems_are_reported_together() -> None:
    found = problems(
        """\
server:
  port: abc
  prot: 1
providers:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", api_key: "${MISSING}"}
  anthropic: {kind: litelm, base_url: "https://api.anthropic.com"}
  local: {kind: openai, base_url: "http://h/v1", auth: none}
models:
  gpt-4o:
    retires: 1
    deployments:
      - {provider: opnai, model: gpt-4o}
      - {provider: local, model: foo}
      - {provider: local, model: gpt-4o, weight: 0}
"""
    )
    paths = [path for path, _ in found]
    assert paths == [  # in file order
        "server.port",
        "server.prot",
        "providers.openai.api_key",
        "providers.anthropic.kind",
        "models.gpt-4o.retires",
        "models.gpt-4o.deployments[0].provider",
        "models.gpt-4o.deployments[1].model",
        "models.gpt-4o.deployments[2].weight",
    ]


def test_problems_carry_the_line_they_point_at() -> None:
    with pytest.raises(ConfigError) as info:
        load(PROVIDERS + MODELS.replace("model: gpt-4o", "model: gpt-4o\n        weight: -1"))
    assert info.value.problems == [
        ("models.gpt-4o.deployments[0].weight", "must be at least 1, got -1 (line 15)")
    ]


def test_yaml_dates_stay_strings() -> None:
    config = load(
        PROVIDERS.replace("api_key: sk-test-openai", "api_key: k\n    api_version: 2024-10-21")
        + MODELS
    )
    assert config.providers["openai"].api_version == "2024-10-21"


def test_aliases_and_merge_keys_work() -> None:
    config = load(
        """\
        providers:
          a: &base {kind: openai, base_url: "http://a/v1", api_key: k, timeouts: {total_s: 30}}
          b:
            <<: *base
            base_url: http://b/v1
        models:
          gpt-4o: {deployments: [{provider: a, model: gpt-4o}, {provider: b, model: gpt-4o}]}
        """
    )
    assert config.providers["b"].base_url == "http://b/v1"
    # Unset connect/first-byte timeouts shrink to fit a small total.
    assert config.providers["b"].timeouts == Timeouts(connect_s=5, first_byte_s=30, total_s=30)


def test_a_declared_key_may_not_be_the_admin_key() -> None:
    found = problems(
        "server: {admin_key: sk-sg-0123456789abcdef0123}\n"
        + PROVIDERS
        + MODELS
        + "teams: {t: {keys: [{name: a, key: sk-sg-0123456789abcdef0123}]}}\n"
    )
    assert found == [("teams.t.keys[0].key", "must differ from server.admin_key")]


def test_the_reporting_key_is_hashed_and_differs_from_every_other_key() -> None:
    server = "server: {admin_key: sk-sg-admin-0123456789abcd, reporting_key: finance-0123456789}\n"
    config = load(server + PROVIDERS + MODELS)
    assert config.server.reporting_key_hash == hashlib.sha256(b"finance-0123456789").hexdigest()
    assert "finance-0123456789" not in repr(config)
    assert load(PROVIDERS + MODELS).server.reporting_key_hash is None
    key = "sk-sg-0123456789abcdef0123"
    same = f"server: {{admin_key: {key}, reporting_key: {key}}}\n"
    assert problems(same + PROVIDERS + MODELS) == [
        ("server.reporting_key", "must differ from server.admin_key")
    ]
    declared = f"teams: {{t: {{keys: [{{name: a, key: {key}}}]}}}}\n"
    found = problems(server.replace("finance-0123456789", key) + PROVIDERS + MODELS + declared)
    assert ("teams.t.keys[0].key", "must differ from server.reporting_key") in found


def test_a_reader_key_carries_no_attribution() -> None:
    reader = "teams: {t: {keys: [{name: r, key: sk-sg-0123456789abcdef0123, role: reader}]}}\n"
    [key] = load(PROVIDERS + MODELS + reader).keys
    assert key.role == "reader" and key.principal.team == "t"
    spoiled = reader.replace("role: reader", "role: reader, project: p, tags: {a: b}")
    assert problems(PROVIDERS + MODELS + spoiled) == [
        (
            "teams.t.keys[0].project",
            "only a client key is attributed (a reader key sends no traffic)",
        ),
        ("teams.t.keys[0].tags", "only a client key is attributed (a reader key sends no traffic)"),
    ]
    assert [p for p, _ in problems(PROVIDERS + MODELS + reader.replace("reader", "admin"))] == [
        "teams.t.keys[0].role"
    ]


def test_a_broken_provider_adds_no_second_problem_where_it_is_used() -> None:
    found = problems(
        PROVIDERS.replace("providers:\n", "providers:\n  Local AI: {kind: openai}\n")
        + MODELS.replace("provider: openai", "provider: Local AI")
    )
    assert [path for path, _ in found] == ["providers.Local AI", "providers.Local AI.base_url"]
