"""Model table lookups, deployment selection strategies and per-deployment health."""
