"""Fault injection shared by the engine and reliability tests (tests/ is on sys.path via conftest)."""

from fermetric.engine import train as train_module


def nan_losses_at(calls):
    """A replacement for ``Trainer._losses`` whose total loss is NaN at the given (1-based) calls."""
    original, count = train_module.Trainer._losses, [0]

    def losses(trainer, x, index):
        count[0] += 1
        parts = original(trainer, x, index)
        if count[0] in calls:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    return losses
