"""Server wiring: the aiohttp application, its handlers and middleware."""
