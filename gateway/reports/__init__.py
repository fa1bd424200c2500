"""Reports: rollups read from Redis, built by `analytics`, rendered for the CLI and admin API."""
