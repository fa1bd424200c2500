"""FOCUS 1.2's allowed values for how a charge is classified, and the classification a posted
external cost carries: its charge category, service category and subcategory, and service name.

The gateway's own usage is "AI and Machine Learning" / "Generative AI"; a posted cost defaults
to the same unless it says otherwise. Every ServiceName maps to one ServiceCategory and one
ServiceSubcategory in a FOCUS dataset, so a subcategory always belongs to its category here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")

GATEWAY_SERVICE_CATEGORY = "AI and Machine Learning"
GATEWAY_SERVICE_SUBCATEGORY = "Generative AI"

# ServiceCategory -> its ServiceSubcategory values (FOCUS 1.2, in the specification's order).
SERVICE_SUBCATEGORIES: Mapping[str, tuple[str, ...]] = {
    "AI and Machine Learning": (
        "AI Platforms",
        "Bots",
        "Generative AI",
        "Machine Learning",
        "Natural Language Processing",
        "Other (AI and Machine Learning)",
    ),
    "Analytics": (
        "Analytics Platforms",
        "Business Intelligence",
        "Data Processing",
        "Search",
        "Streaming Analytics",
        "Other (Analytics)",
    ),
    "Business Applications": ("Productivity and Collaboration", "Other (Business Applications)"),
    "Compute": (
        "Containers",
        "End User Computing",
        "Quantum Compute",
        "Serverless Compute",
        "Virtual Machines",
        "Other (Compute)",
    ),
    "Databases": (
        "Caching",
        "Data Warehouses",
        "Ledger Databases",
        "NoSQL Databases",
        "Relational Databases",
        "Time Series Databases",
        "Other (Databases)",
    ),
    "Developer Tools": (
        "Developer Platforms",
        "Continuous Integration and Deployment",
        "Development Environments",
        "Source Code Management",
        "Quality Assurance",
        "Other (Developer Tools)",
    ),
    "Identity": ("Identity and Access Management", "Other (Identity)"),
    "Integration": (
        "API Management",
        "Messaging",
        "Workflow Orchestration",
        "Other (Integration)",
    ),
    "Internet of Things": ("IoT Analytics", "IoT Platforms", "Other (Internet of Things)"),
    "Management and Governance": (
        "Architecture",
        "Compliance",
        "Cost Management",
        "Data Governance",
        "Disaster Recovery",
        "Endpoint Management",
        "Observability",
        "Support",
        "Other (Management and Governance)",
    ),
    "Media": (
        "Content Creation",
        "Gaming",
        "Media Streaming",
        "Mixed Reality",
        "Other (Media)",
    ),
    "Migration": ("Data Migration", "Resource Migration", "Other (Migration)"),
    "Mobile": ("Other (Mobile)",),
    "Multicloud": ("Multicloud Integration", "Other (Multicloud)"),
    "Networking": (
        "Application Networking",
        "Content Delivery",
        "Network Connectivity",
        "Network Infrastructure",
        "Network Routing",
        "Network Security",
        "Other (Networking)",
    ),
    "Security": (
        "Secret Management",
        "Security Posture Management",
        "Threat Detection and Response",
        "Other (Security)",
    ),
    "Storage": (
        "Backup Storage",
        "Block Storage",
        "File Storage",
        "Object Storage",
        "Storage Platforms",
        "Other (Storage)",
    ),
    "Web": ("Application Platforms", "Other (Web)"),
    "Other": ("Other (Other)",),
}

# Who provides a cost that names no provider: the organisation itself (its own GPUs, staff).
INTERNAL_PROVIDER = "internal"


def default_subcategory(category: str) -> str:
    """The subcategory a cost of `category` gets when it names none."""
    if category == GATEWAY_SERVICE_CATEGORY:
        return GATEWAY_SERVICE_SUBCATEGORY
    return f"Other ({category})"


@dataclass(frozen=True, slots=True)
class ChargeClass:
    """How a posted external cost is classified in FOCUS. Stored on its spend event as JSON."""

    category: str = "Usage"  # ChargeCategory
    service_category: str = GATEWAY_SERVICE_CATEGORY
    service_subcategory: str = GATEWAY_SERVICE_SUBCATEGORY
    service_name: str | None = None  # None: the provider's name

    def problems(self) -> list[tuple[str, str]]:
        """(field, reason) for every value FOCUS does not allow; empty when valid."""
        found = []
        if self.category not in CHARGE_CATEGORIES:
            found.append(("charge_category", f"must be one of {', '.join(CHARGE_CATEGORIES)}"))
        subcategories = SERVICE_SUBCATEGORIES.get(self.service_category)
        if subcategories is None:
            found.append(
                ("service_category", "must be a FOCUS 1.2 ServiceCategory, e.g. 'Compute'")
            )
        elif self.service_subcategory not in subcategories:
            found.append(
                (
                    "service_subcategory",
                    f"must be one of the subcategories of {self.service_category!r}: "
                    + ", ".join(subcategories),
                )
            )
        return found

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "category": self.category,
                "service_category": self.service_category,
                "service_subcategory": self.service_subcategory,
                "service_name": self.service_name,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str | None) -> ChargeClass:
        """The classification stored on an event. A cost posted before costs carried one gets
        the defaults; a value this version does not know (validated when posted, so only
        from a hand-written entry) falls back to its default alone."""
        raw = _object(text)
        category = raw.get("category", "")
        if category not in CHARGE_CATEGORIES:
            category = "Usage"
        service_category = raw.get("service_category", "")
        if service_category not in SERVICE_SUBCATEGORIES:
            service_category = GATEWAY_SERVICE_CATEGORY
        subcategory = raw.get("service_subcategory", "")
        if subcategory not in SERVICE_SUBCATEGORIES[service_category]:
            subcategory = default_subcategory(service_category)
        return cls(category, service_category, subcategory, raw.get("service_name") or None)


def _object(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, str)}
