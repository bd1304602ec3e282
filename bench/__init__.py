"""Benchmarks and the validation benchmark of TopoRank (run from the repository root)."""
