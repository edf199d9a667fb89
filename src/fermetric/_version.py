"""The package version (one place: ``pyproject.toml`` reads it, every layer may import it)."""

__version__ = "0.1.0"
