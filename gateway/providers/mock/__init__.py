"""The mock upstream: a deterministic OpenAI- and Anthropic-compatible HTTP server.

Used as the upstream by tests, load tests and the demo. Replies and token usage follow
`tokens.py` (so tests can predict them); failures are played from `Injection`s.
"""

from __future__ import annotations

from gateway.providers.mock.cli import main
from gateway.providers.mock.embeddings import embedding_for
from gateway.providers.mock.options import Injection, MockOptions, RecordedRequest
from gateway.providers.mock.server import MockUpstream, create_mock_app, serve_mock
from gateway.providers.mock.tokens import prompt_tokens_for, reply_text

__all__ = [
    "Injection",
    "MockOptions",
    "MockUpstream",
    "RecordedRequest",
    "create_mock_app",
    "embedding_for",
    "main",
    "prompt_tokens_for",
    "reply_text",
    "serve_mock",
]
