"""ETL benchmark: materialise a W2-like store (1 vs 2 Dask workers) and read it back.

    python benchmarks/etl.py [--repeats 3] [--time-steps 365] [--data DIR]

Data: the W2 shape of ``_common`` (float32 time x 256 x 256, chunks 30x256x256,
zstd 3), written once to ``benchmarks/.results/etl/``. Samples are 32x32 windows,
batches of 32, shuffled (``shuffle=True``, or ``--shuffle chunks`` for the chunk-aware
shuffle; seed 0).

Measured (medians over ``--repeats``):

- materialise (``xb.materialize``, 8 batches per chunk) on a ``LocalCluster`` of 1
  and of 2 worker processes (1 thread each): seconds, and the 1/2 ratio (scaling);
- one epoch of batches/s from the materialised store read with a fresh chunk
  shuffle (``open_materialized(shuffle=True)``), from the same store read in stored
  order (``shuffle=False``, the sequential read), and from the original store
  read with the same shuffle (``BatchGenerator(..., shuffle=...).arrays``).

The ratio shuffled / sequential read of the materialised store is the target
(>= 0.8); shuffled materialised / shuffled original is the gain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _common as C

HERE = os.path.dirname(os.path.abspath(__file__))


def make_store(path: str, steps: int) -> None:
    rng = np.random.default_rng(C.SEED)
    C.write_w2_zarr(rng.random((steps, *C.W2_SHAPE[1:]), dtype=np.float32), path)


SHUFFLE: Any = True


def open_bgen(path: str) -> Any:
    import xarray as xr

    import xbatcher as xb

    ds = xr.open_dataset(path, engine="zarr", chunks=None)
    return xb.BatchGenerator(
        ds["v"],
        {"lat": 32, "lon": 32},
        batch_size=32,
        shuffle=SHUFFLE,
        seed=0,
        block_cache_bytes="1GiB",
    )


def epoch_rate(batches: Any) -> float:
    t0 = time.perf_counter()
    n = 0
    for _ in batches:
        n += 1
    return n / (time.perf_counter() - t0)


def materialise_seconds(src: str, out: str, workers: int) -> float:
    from distributed import Client, LocalCluster

    import xbatcher as xb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    try:
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        xb.materialize(
            open_bgen(src), out, batches_per_chunk=8, client=client, progress=False
        )
        return time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-steps", type=int, default=C.W2_SHAPE[0])
    p.add_argument("--data", default=os.path.join(HERE, ".results", "etl"))
    p.add_argument(
        "--shuffle",
        choices=["full", "chunks"],
        default="full",
        help="the generator's shuffle: True, or the chunk-aware 'chunks'",
    )
    args = p.parse_args(argv)
    global SHUFFLE
    SHUFFLE = True if args.shuffle == "full" else "chunks"
    import xbatcher as xb

    os.makedirs(args.data, exist_ok=True)
    src = os.path.join(args.data, f"w2-{args.time_steps}.zarr")
    if not os.path.exists(os.path.join(src, "zarr.json")):
        make_store(src, args.time_steps)
    tmp = tempfile.mkdtemp(dir=args.data)
    out = os.path.join(tmp, "materialized.zarr")
    res: dict[str, list[float]] = {k: [] for k in ("m1", "m2", "mat", "seq", "orig")}
    try:
        for r in range(args.repeats):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for w in order:
                res[f"m{w}"].append(materialise_seconds(src, out, w))
            reads = {
                "mat": lambda r=r: xb.open_materialized(out, shuffle=True, seed=r),
                "seq": lambda: xb.open_materialized(out, shuffle=False),
                "orig": lambda: open_bgen(src).arrays,
            }
            names = list(reads) if r % 2 == 0 else list(reversed(reads))
            for name in names:  # the order alternates between repeats (noise)
                res[name].append(epoch_rate(reads[name]()))
            print(
                f"[repeat {r}] "
                + ", ".join(f"{k}={v[-1]:.2f}" for k, v in res.items()),
                file=sys.stderr,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    n = len(open_bgen(src))
    print(
        f"W2-like: {args.time_steps}x256x256 float32, {n} batches of 32 (32x32), "
        f"shuffle={SHUFFLE!r}, median of {args.repeats}"
    )
    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| materialise, 1 worker (s) | {med['m1']:.2f} |")
    print(f"| materialise, 2 workers (s) | {med['m2']:.2f} |")
    print(f"| scaling 1 -> 2 workers (x) | {med['m1'] / med['m2']:.2f} |")
    print(f"| materialised, chunk shuffle (batches/s) | {med['mat']:.0f} |")
    print(f"| materialised, sequential (batches/s) | {med['seq']:.0f} |")
    print(f"| original store, same shuffle (batches/s) | {med['orig']:.0f} |")
    print(
        f"| shuffled / sequential, materialised (target >= 0.8) | "
        f"{med['mat'] / med['seq']:.2f} |"
    )
    print(
        f"| materialised shuffled / original shuffled | "
        f"{med['mat'] / med['orig']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
