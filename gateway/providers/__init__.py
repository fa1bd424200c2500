"""Upstream providers behind one small protocol, and the mock upstream."""
