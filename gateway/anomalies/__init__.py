"""Spend anomalies: their records in the store, feedback on them, and the alerts about them."""
