"""Pure functions over rollups (showback, chargeback, allocation, FOCUS rows): no I/O, no Redis."""
