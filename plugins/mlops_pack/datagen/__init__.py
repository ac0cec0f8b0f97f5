"""Data generators for the examples, the tests and the benchmarks."""
