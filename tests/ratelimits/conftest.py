"""The rate-limit contract runs on every store layout, as the budgets' does."""

from tests.budgets.conftest import clock, real_store, store

__all__ = ["clock", "real_store", "store"]
