"""Files that ship with fermetric (see ``README.md`` here for their provenance and licences)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_photo"]


def example_photo() -> Path:
    """Path of the shipped example photo: NASA astronaut Eileen Collins (public domain).

    It is scikit-image's ``skimage.data.astronaut()`` saved as a 512x512 JPEG (quality 90), so the
    README, the tests and ``fermetric predict`` have a real face to work on without any download.
    """
    return Path(str(resources.files(__name__) / "astronaut.jpg"))
