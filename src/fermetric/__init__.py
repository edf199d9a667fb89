"""fermetric: facial expression recognition with deep metric learning."""

from ._version import __version__

__all__ = ["__version__", "load", "create_model", "load_dataset", "load_recipe"]


def __getattr__(name):
    # Lazy so that `import fermetric` and the CLI's --help stay fast (torch is heavy).
    if name == "load":
        from .predict import load

        return load
    if name == "create_model":
        from .models import create_model

        return create_model
    if name == "load_dataset":
        from .data import load_dataset

        return load_dataset
    if name == "load_recipe":
        from .config import load_recipe

        return load_recipe
    raise AttributeError(f"module 'fermetric' has no attribute {name!r}")
