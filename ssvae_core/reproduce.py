"""Table 1 reproduction (placeholder, filled in by the reproduction work)."""


def add_parser(sub) -> None:
    """Register `reproduce` on the CLI."""
