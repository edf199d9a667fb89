"""Runs ``python -m fermetric ARGS`` under torchrun, recording what each rank did.

Used by test_processes.py: ``torchrun --nproc_per_node=2 ddp_probe.py train ...`` is
``torchrun --nproc_per_node=2 -m fermetric train ...`` plus, per rank, a JSON file in
``$PROBE_DIR`` with the items of every epoch's batches and a digest of the final parameters.
"""

import json
import os
import runpy

from fermetric.engine import checkpoint, train

seen: dict[int, list[int]] = {}
original_batches, original_run = train.Trainer._batches, train.Trainer.run


def _batches(self, epoch):
    batches = original_batches(self, epoch)
    seen[epoch] = sorted(int(i) for batch in batches for i in batch)
    return batches


def _run(self):
    results = original_run(self)
    record = {
        "rank": self.ctx.rank,
        "world_size": self.ctx.world_size,
        "seen": seen,
        "parameters": checkpoint.state_digest(dict(self.model.named_parameters())),
        "loss_parameters": checkpoint.state_digest(dict(self.loss_fn.named_parameters())) if self.loss_fn else None,
    }
    with open(os.path.join(os.environ["PROBE_DIR"], f"rank{self.ctx.rank}.json"), "w") as handle:
        json.dump(record, handle)
    return results


train.Trainer._batches, train.Trainer.run = _batches, _run
runpy.run_module("fermetric", run_name="__main__", alter_sys=True)
