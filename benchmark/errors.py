"""The benchmark's one error type."""


class BenchmarkError(Exception):
    """A bad argument or environment problem, reported as one line."""
