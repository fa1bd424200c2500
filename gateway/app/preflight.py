"""Start-up advice for a first hour: when the upstream of a new user's setup (the bundled mock's
address, or the default config's $SPENDGATE_UPSTREAM_URL) does not answer, the log says so once,
at start, with what to do, rather than leaving the first request to find out. Serving starts
regardless: the upstream may well come up later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from gateway.config.model import Config
from gateway.providers.factory import connect_hint
from gateway.providers.openai_compat import connect_failure

log = logging.getLogger("spendgate.app")


async def check_upstreams(config: Config) -> None:
    """Connect once to each such upstream; warn about those that cannot be reached."""
    for provider in config.providers.values():
        hint = connect_hint(config, provider) if provider.kind == "openai" else None
        if hint is None:
            continue
        parts = urlsplit(provider.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(provider.timeouts.connect_s):
                _, writer = await asyncio.open_connection(parts.hostname, port)
        except OSError as exc:  # TimeoutError is one
            reason = connect_failure(exc) if exc.errno else "no answer within timeouts.connect_s"
            log.warning("upstream %s cannot be reached (%s). %s", provider.name, reason, hint)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
