"""Config: YAML schema -> compile -> frozen snapshot, loading and hot reload."""
