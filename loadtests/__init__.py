"""Load tests and benchmarks: scripts run by hand, not part of the test suite (README)."""
