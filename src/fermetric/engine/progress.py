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
    desc: str, total: int | None = None, enabled: bool = True, unit: str = "img", lazy: bool = False, position: int = 0
) -> Iterator[Progress | None]:
    """A ``progress`` callback drawing a bar on stderr, or ``None`` when disabled or not a terminal.

    tqdm shows the rate in ``unit``/s. ``lazy``: the bar appears at the first update, so a bar
    for something that may not happen (frames, when the inputs may hold no video) stays hidden.
    ``position`` stacks bars (0 on top).
    """
    stream = sys.stderr
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    from tqdm.auto import tqdm

    bars = []

    def update(n: int = 1) -> None:
        if not bars:
            bars.append(
                tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True, position=position)
            )
        bars[0].update(n)

    if not lazy:
        update(0)
    try:
        yield update
    finally:
        for bar in bars:
            bar.close()
