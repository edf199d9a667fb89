"""User-facing errors.

Anything a user can cause (a bad path, a broken image, a wrong layout, a checkpoint that does not
fit) raises a subclass of :class:`FermetricError` with a one-line message that names the file and
the fix. The CLI prints that line and exits non-zero; tracebacks only appear with ``--debug``.
"""


class FermetricError(Exception):
    """Base class of every error fermetric raises on purpose."""

    exit_code = 2


class DataError(FermetricError):
    """A dataset root, layout or label file is wrong."""


class ImageError(FermetricError):
    """An image file cannot be decoded (missing, empty, truncated, not an image)."""


class ConfigError(FermetricError):
    """A recipe, option or command-line value is invalid."""


class CheckpointError(FermetricError):
    """A checkpoint is missing, half-written, or does not fit the requested use."""


class TrainingError(FermetricError):
    """Training cannot go on (a NaN/Inf loss, an unwritable output directory)."""
