"""Rate limits: requests and tokens per minute, shared across replicas through the store."""
