"""S1 against the all-core ideal, epoch by epoch: paired ratios on a noisy machine.

``run.py --only S1`` measures the ideal and then ours for a few seconds each, so
the load of the machine can change between the two (the ideal itself moved by
up to 20 % between runs on the shared 2-core machine). Here one process runs
one epoch of the ideal (``_common.S1Ideal``, hybrid overlap) and right after it
one epoch of ours (a fresh generator over ``open_dataset(engine="zarr",
chunks=None)``, then over ``open_zarr``), round after round, and reports the
median over rounds of the per-round ratio ideal time / our time (our speed as
a fraction of the ideal's, >= 0.9 is issue 13's target). Every batch of ours
is compared with the ideal's once, before the timing.

    python benchmarks/s1_paired.py [--rounds 25] [--modes inorder,chunks,full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

MODES: dict[str, Any] = {"inorder": False, "chunks": "chunks", "full": True}
OPENINGS = {"open_dataset": "w2_zarr_lazy", "open_zarr": "w2_zarr_dask"}


def kwargs(shuffle: Any) -> dict[str, Any]:
    return {**C.S1_KWARGS, "shuffle": shuffle, **({"seed": 0} if shuffle else {})}


def main() -> None:
    import xbatcher as xb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--modes", default="inorder,chunks,full")
    parser.add_argument("--data", default=os.path.join(HERE, ".results", "data"))
    args = parser.parse_args()
    if not C.data_ready(args.data):
        C.make_data(args.data)
    sources = {name: C.open_source(kind, args.data) for name, kind in OPENINGS.items()}
    cores = len(os.sched_getaffinity(0))
    print(f"xbatcher {xb.__version__}, {cores} cores, {args.rounds} rounds")
    print("| mode | opening | ideal ms | ours ms | ours/ideal (paired median) |")
    print("|---|---|---|---|---|")
    with ThreadPoolExecutor(cores) as pool:
        for mode in args.modes.split(","):
            shuffle = MODES[mode]
            first = xb.BatchGenerator(sources["open_dataset"], **kwargs(shuffle))
            n = len(first)
            units = np.concatenate(first.plan.batch_units(first.epoch, 0, n))
            starts = first.engine.schema.unit_windows(units).starts
            ideal = C.S1Ideal(
                args.data,
                tuple(
                    np.asarray(starts[d]).reshape(n, -1) for d in ("time", "lat", "lon")
                ),
            )
            want = ideal.batches(pool)
            for src in sources.values():  # every batch checked, once
                got = np.stack(list(xb.BatchGenerator(src, **kwargs(shuffle)).arrays))
                if not np.array_equal(got.reshape(want.shape), want):
                    raise SystemExit(f"S1 {mode}: our batches differ from the ideal's")
            times: dict[str, list[float]] = {"ideal": [], **{k: [] for k in sources}}
            for _ in range(args.rounds):
                for name in times:
                    if name == "ideal":
                        epoch = ideal.epoch(pool, "hybrid")
                    else:
                        epoch = xb.BatchGenerator(
                            sources[name], **kwargs(shuffle)
                        ).arrays
                    t0 = time.perf_counter()
                    for _batch in epoch:
                        pass
                    times[name].append(time.perf_counter() - t0)
            base = times["ideal"]
            for name in sources:
                ratio = statistics.median(
                    i / o for i, o in zip(base, times[name], strict=True)
                )
                print(
                    f"| {mode} | {name} | {statistics.median(base) * 1e3:.1f} | "
                    f"{statistics.median(times[name]) * 1e3:.1f} | {ratio:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
