"""Progress reporting: library code takes a ``progress`` callback (called with the number of items
just finished); :func:`progress_bar` makes one that draws a tqdm bar on a terminal.

A bar appears only when stderr is a terminal, so piped output, logs and ``--json`` runs stay clean.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Progress = Callable[[int], None]


@contextlib.contextmanager
def progress_bar(
    desc: str, total: int | None = None, enabled: bool = True, unit: str = "img"
) -> Iterator[Progress | None]:
    """A ``progress`` callback drawing a bar on stderr, or ``None`` when disabled or not a terminal."""
    stream = sys.stderr
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()
