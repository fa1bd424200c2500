"""The shared state: a Redis connection (or the embedded fakeredis) and virtual keys."""
