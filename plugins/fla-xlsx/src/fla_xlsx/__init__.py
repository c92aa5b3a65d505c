"""Excel (.xlsx) input format for ``fla``: the CSV layout, read from the first sheet."""

__version__ = "0.1.0"
