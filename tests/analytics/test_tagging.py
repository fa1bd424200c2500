"""Tagging compliance from the daily charge lines: the share of each team's spend that names
every tag the tag policies governing it require, per the same scope rules as the request path;
the spend lacking each tag; external costs count; spend no policy governs complies."""

from __future__ import annotations

from datetime import date

from gateway.analytics.tagging import tagging_compliance
from gateway.config.policies import PoliciesConfig, PolicyScope, TagPolicy
from tests.ledger import event, external_event, rollup_data

DAY = date(2026, 11, 5)
POLICIES = PoliciesConfig(
    tags=(
        TagPolicy(
            "prod-cost-center", PolicyScope(environments=frozenset({"prod"})), ("cost-center",)
        ),
        TagPolicy("workload-named", PolicyScope(), ("workload",)),
    )
)


def test_compliance_is_the_share_of_spend_fully_tagged() -> None:
    events = [
        event(1, cost_nano=600, tags={"cost-center": "cc1"}),  # prod, tagged, workload chat
        event(2, cost_nano=300),  # prod without cost-center
        event(3, cost_nano=100, workload=None),  # prod without either
        event(4, team="beta", environment="dev", cost_nano=50),  # dev: only workload, named
        event(5, team="beta", environment="dev", workload=None, cost_nano=25),
        event(6, cost_nano=0, completion_tokens=0, prompt_tokens=0),  # no charge: no line
        external_event(7, 1000, team="beta", environment=None, workload="training"),
    ]
    result = tagging_compliance(rollup_data(events, DAY, DAY), POLICIES, {"gamma": None})
    alpha, beta, gamma = result.teams
    assert (alpha.team, alpha.spend_nano, alpha.tagged_nano) == ("alpha", 1000, 600)
    assert alpha.compliance == 0.6 and alpha.untagged_nano == 400
    assert alpha.missing_nano == {"cost-center": 400, "workload": 100}
    assert (beta.spend_nano, beta.tagged_nano) == (1075, 1050)
    assert beta.missing_nano == {"workload": 25}
    assert gamma.spend_nano == 0 and gamma.compliance is None  # configured, no spend
    assert (result.total.spend_nano, result.total.tagged_nano) == (2075, 1650)
    assert result.required
    document = result.to_dict()
    assert document["teams"][0]["compliance"] == 0.6
    assert document["teams"][0]["missing_usd"] == {
        "cost-center": "0.000000400",
        "workload": "0.000000100",
    }


def test_without_tag_policies_all_spend_complies() -> None:
    events = [event(1, cost_nano=10, workload=None, environment=None, project=None)]
    result = tagging_compliance(rollup_data(events, DAY, DAY), PoliciesConfig())
    (alpha,) = result.teams
    assert alpha.compliance == 1.0 and not result.required
