"""Response cache: exact-match keys, the two-level store and SSE replay of cached answers."""
