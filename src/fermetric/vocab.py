"""The canonical emotion vocabulary and each dataset's mapping onto it.

Every dataset maps its own class names (``angry`` / ``anger``, ``happiness`` / ``happy``...) onto
these canonical names; a model records the ordered subset it was trained on.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "angry",
    "contempt",
)

# Spellings found in public datasets -> canonical name.
ALIASES: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "angry": "angry",
    "anger": "angry",
    "contempt": "contempt",
}


def canonical(name: str) -> str:
    """Canonical emotion for a dataset's class name; raises KeyError if it is not an emotion."""
    return ALIASES[name.strip().lower()]


def ordered(names) -> tuple[str, ...]:
    """The given canonical names in vocabulary order (the order models use)."""
    present = set(names)
    unknown = present - set(EMOTIONS)
    if unknown:
        raise KeyError(f"not canonical emotions: {sorted(unknown)}")
    return tuple(e for e in EMOTIONS if e in present)
