"""spendgate: a cost-aware API gateway for LLMs."""

__version__ = "0.1.0"
