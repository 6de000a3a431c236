"""Speed benchmarks, run by `csil-diag bench` (never by the test suite)."""
