"""The package version (also what every model file records)."""

__version__ = "0.1.0"
