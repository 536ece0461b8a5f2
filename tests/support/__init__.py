"""Test tooling shared by the suite, the proofs and the benchmarks (nothing here is a test)."""
