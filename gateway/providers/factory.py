"""Build the provider objects for a config snapshot (cheap: they share the app's upstream
client), and the advice a new user gets when the upstream they run against is not running."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from gateway.config.loader import default_config_path
from gateway.config.model import Config, ProviderConfig
from gateway.providers.base import MOCK_PORT, Provider
from gateway.providers.http1 import Http1Client
from gateway.providers.openai_compat import OpenAICompatProvider

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def build_providers(config: Config, client: Http1Client) -> Mapping[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, provider in config.providers.items():
        if provider.kind == "openai":
            hint = connect_hint(config, provider)
            providers[name] = OpenAICompatProvider(provider, client, connect_hint=hint)
        else:
            # Imported here so OpenAI-compatible deployments never load litellm.
            from gateway.providers.litellm_adapter import LiteLLMProvider

            providers[name] = LiteLLMProvider(provider)
    return MappingProxyType(providers)


def connect_hint(config: Config, provider: ProviderConfig) -> str | None:
    """What to do when `provider` cannot be connected to, for the setups of a first hour: a
    config whose upstream is the bundled mock's address (the packaged default's, and its
    copies'), and the packaged default pointed elsewhere by $SPENDGATE_UPSTREAM_URL. None for
    anything else: there the message names the provider, and its operator knows the rest."""
    parts = urlsplit(provider.base_url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    # Without user info or query: a URL set in the environment may carry a credential.
    url = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
    if parts.hostname in _LOOPBACK and parts.port == MOCK_PORT:
        return (
            f"{url} is the bundled mock upstream's address: start it with `spendgate "
            "mock-upstream` in another terminal, or point the config at another upstream "
            "(the default config reads SPENDGATE_UPSTREAM_URL)"
        )
    if config.source == str(default_config_path()):
        return (
            f"The default config sends requests to {url}, from SPENDGATE_UPSTREAM_URL: start "
            "the upstream there, or unset SPENDGATE_UPSTREAM_URL and run `spendgate "
            "mock-upstream` in another terminal"
        )
    return None
