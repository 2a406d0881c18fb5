"""A complete training loop: epochs, shuffling, checkpoint/resume and DDP sharding.

Run it as one process, or as several ranks (``RANK`` / ``WORLD_SIZE`` environment
variables, as torchrun sets them; under ``torch.distributed`` use
``torch.distributed.get_rank()`` instead). The "model" is a linear regression trained
with plain numpy SGD so the example runs anywhere; swap in your framework's step.

    python docs/examples/training_loop.py --epochs 3 --checkpoint /tmp/ckpt.json
    # interrupted?  run the same command again: it resumes mid-epoch where it stopped
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

import xbatcher as xb


def make_data() -> xr.Dataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 32)).astype("float32")
    y = (2.0 * x + 0.5).astype("float32")  # the model should learn w=2, b=0.5
    return xr.Dataset(
        {"x": (("time", "lat", "lon"), x), "y": (("time", "lat", "lon"), y)}
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--stop-after", type=int, default=None, help="simulate a crash")
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))

    # 1. one generator, sample-level batches, shuffled by (seed, epoch)
    bgen = xb.BatchGenerator(
        make_data(),
        input_dims={"lat": 8, "lon": 8},
        batch_size=16,
        shuffle=True,
        seed=42,
    )
    # 2. this rank's shard: disjoint from the other ranks, same length on every rank
    bgen = bgen.shard(rank, world, even="pad")

    w, b, lr = 0.0, 0.0, 0.05
    ckpt = args.checkpoint.with_suffix(f".rank{rank}.json") if args.checkpoint else None
    if ckpt is not None and ckpt.exists():  # 3. resume: model state + loader state
        saved = json.loads(ckpt.read_text())
        w, b = saved["w"], saved["b"]
        bgen.load_state_dict(saved["loader"])  # checked: a wrong state is refused

    steps = 0
    for epoch in range(bgen.epoch, args.epochs):
        # the restored epoch keeps its restored position: no batch is replayed
        bgen.set_epoch(epoch)
        for batch in bgen.arrays:  # numpy fast path; use `for batch in bgen` for xarray
            x, y = batch["x"], batch["y"]
            err = w * x + b - y
            w -= lr * float((err * x).mean())
            b -= lr * float(err.mean())
            steps += 1
            if ckpt is not None:  # checkpoint after every step (cheap: a few numbers)
                ckpt.write_text(
                    json.dumps({"w": w, "b": b, "loader": bgen.state_dict()})
                )
            if args.stop_after is not None and steps >= args.stop_after:
                return {"w": w, "b": b, "steps": steps, "crashed": 1.0}
    return {"w": w, "b": b, "steps": steps, "crashed": 0.0}


if __name__ == "__main__":
    print(json.dumps(main()))
