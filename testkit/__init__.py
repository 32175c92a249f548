"""Helpers that the tests and the benchmarks share (a throwaway git copy of the project,
a real OpenSSH server); they belong to neither."""
