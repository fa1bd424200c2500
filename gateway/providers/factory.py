"""Build the provider objects for a config snapshot (cheap: they share the app's upstream
client)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.config.model import Config
from gateway.providers.base import Provider
from gateway.providers.http1 import Http1Client
from gateway.providers.openai_compat import OpenAICompatProvider


def build_providers(config: Config, client: Http1Client) -> Mapping[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, provider in config.providers.items():
        if provider.kind == "openai":
            providers[name] = OpenAICompatProvider(provider, client)
        else:
            # Imported here so OpenAI-compatible deployments never load litellm.
            from gateway.providers.litellm_adapter import LiteLLMProvider

            providers[name] = LiteLLMProvider(provider)
    return MappingProxyType(providers)
