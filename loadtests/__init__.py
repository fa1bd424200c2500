"""spendgate's load-test harness: `python loadtests/run.py` (see loadtests/README.md).

run.py orchestrates rounds; targets.py starts the servers under test; procs.py owns process
pinning, readiness, memory and CPU; generators.py drives load (wrk, or a Python fallback) and the
one-client latency probe; report.py turns measurements into medians, ratios and tables.
"""
