"""Sharing upstream calls: in-flight coalescing of identical requests, embeddings micro-batching."""
