"""Prices (litellm's bundled table plus YAML overrides), token counting and cost."""
