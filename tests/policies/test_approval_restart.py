"""The approval flow end to end across a restart, on the local store: a gateway refuses a
request over a limit with an approval id and stops; `spendgate approvals approve` decides it in
the store while no gateway runs; the next gateway serves the same key's request. And a policy
added by a hot reload applies to the next request."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from gateway.app.state import LIVE_CONFIG
from gateway.cli import build_parser
from gateway.policies.cli import run_async
from tests.clock import RunningClock
from tests.conftest import Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "hello"}]


async def ask(gateway: Gateway, key: str, **kwargs: object) -> object:
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
        return await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            n=6,
            **kwargs,  # type: ignore[arg-type]
        )


async def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = build_parser().parse_args(["approvals", *argv])
    assert await run_async(args, clock=RunningClock()) == 0
    return capsys.readouterr().out


async def test_an_approval_outlives_a_restart(
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("POLICY_STORE_URL", "local://")
    monkeypatch.setenv("POLICY_STORE_DIR", str(tmp_path / "store"))
    first = await gateway_factory("policies.yaml", teams=("alpha",))
    key = first.keys["alpha"]
    with pytest.raises(openai.PermissionDeniedError) as info:
        await ask(first, key)
    assert info.value.code == "approval_required"
    approval_id = info.value.body["approval_id"]  # type: ignore[index]
    await first.server.close()  # the gateway, and the local store's server with it

    config = str(first.config_path)
    listed = await cli("list", "--status", "pending", "--config", config, capsys=capsys)
    assert approval_id in listed and "gpt-4o-mini" in listed and "n 6 is over 4" in listed
    said = await cli(
        "approve", approval_id, "--window", "2h", "--by", "oncall", "--config", config,
        capsys=capsys,
    )  # fmt: skip
    assert said.startswith(f"approved {approval_id}: key ")

    second = await gateway_factory("policies.yaml", teams=(), copy=False)
    answer = await ask(second, key)
    assert len(answer.choices) == 6  # type: ignore[attr-defined]
    shown = await cli("list", "--json", "--config", config, capsys=capsys)
    assert '"status": "approved"' in shown and '"used": 1' in shown
    assert '"decided_by": "oncall"' in shown


async def test_a_policy_added_by_reload_applies(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory("policies.yaml")
    key = gateway.keys["alpha"]
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
        await c.chat.completions.create(model="house-llama", messages=MESSAGES)
        text = gateway.config_path.read_text().replace(
            "  models:\n    - name: no-reasoning-in-dev\n",
            "  models:\n    - name: no-llama\n      block: house-*\n"
            "    - name: no-reasoning-in-dev\n",
        )
        gateway.config_path.write_text(text)
        assert gateway.app[LIVE_CONFIG].reload() is True
        with pytest.raises(openai.PermissionDeniedError, match="policy 'no-llama' blocks"):
            await c.chat.completions.create(model="house-llama", messages=MESSAGES)
        # A bad edit (an unknown model) is refused and the running policies stay.
        gateway.config_path.write_text(text.replace("block: house-*", "block: hous-llama"))
        assert gateway.app[LIVE_CONFIG].reload() is False
        with pytest.raises(openai.PermissionDeniedError, match="policy 'no-llama' blocks"):
            await c.chat.completions.create(model="house-llama", messages=MESSAGES)
