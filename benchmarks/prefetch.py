"""How long a training step waits for data: plain iteration vs background prefetch.

W2 (float32 365x256x256) stored as Zarr (chunks 30x256x256, zstd), opened lazily;
batches of 32 random 32x32 windows, shuffled; a simulated training step of 10 ms
(``time.sleep``: a framework's step releases the GIL as sleep does). For each way of
reading, the consumer takes ``--batches`` batches from a fresh generator (nothing
decoded before) and we measure the time spent waiting in ``next()`` and the wall
time:

* ``plain``: ``for batch in bgen.arrays`` (the reference: no read-ahead);
* ``prefetch(n)``: ``bgen.prefetch(n)``, same batches read on a background thread;
* ``to_tf_dataset``: ``xbatcher.loaders.tensorflow.to_tf_dataset`` (read ahead, then
  ``tf.data`` prefetch), when TensorFlow is installed;
* ``JaxLoader``: ``xbatcher.loaders.jax.JaxLoader`` (read ahead, double-buffered
  ``device_put``), when JAX is installed.

Also the read rate without a step (batches/s), which bounds what prefetch can hide.
Prints medians over ``--repeats`` and each way's wall time over plain's (ratio < 1:
faster). A run takes about a minute::

    python benchmarks/prefetch.py [--batches 300] [--repeats 3] [--step-ms 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import _common as C  # noqa: E402


def w2_store(results: str) -> str:
    """The W2 Zarr store: run.py's if it was made, else written here (W2 only)."""
    shared = os.path.join(results, "data")
    if C.data_ready(shared):
        return os.path.join(shared, "w2.zarr")
    path = os.path.join(results, "prefetch-data", "w2.zarr")
    if os.path.exists(os.path.join(path, "zarr.json")):
        return path
    rng = np.random.default_rng(C.SEED)
    rng.random(C.W1_SHAPE, dtype=np.float32)  # the same draws as run.py's data
    C.write_w2_zarr(rng.random(C.W2_SHAPE, dtype=np.float32), path)
    return path


def fresh_generator(path: str) -> Any:
    """A new generator over the lazily opened store (empty chunk cache)."""
    import xarray as xr

    import xbatcher as xb

    da = xr.open_dataset(path, engine="zarr", chunks=None)["v"]
    return xb.BatchGenerator(
        da, {"lat": 32, "lon": 32}, batch_size=32, shuffle=True, seed=0
    )


def consume(
    batches: Iterator[Any], n: int, step_s: float
) -> tuple[float, float, float]:
    """Take ``n`` batches, a step of ``step_s`` after each: seconds waiting for the
    first batch (cold: decoding the first chunks), waiting for the others, and
    wall time."""
    waits = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        next(batches)
        waits.append(time.perf_counter() - t)
        if step_s:
            time.sleep(step_s)
    wall = time.perf_counter() - start
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    return waits[0], sum(waits[1:]), wall


def ways(path: str) -> dict[str, Callable[[], Iterator[Any]]]:
    out: dict[str, Callable[[], Iterator[Any]]] = {
        "plain bgen.arrays": lambda: iter(fresh_generator(path).arrays),
        "bgen.prefetch(4)": lambda: fresh_generator(path).prefetch(4),
        "bgen.prefetch(16)": lambda: fresh_generator(path).prefetch(16),
    }
    try:
        import tensorflow as tf  # noqa: F401

        from xbatcher.loaders.tensorflow import to_tf_dataset

        out["to_tf_dataset"] = lambda: iter(
            to_tf_dataset(fresh_generator(path), prefetch=8)
        )
    except ImportError:
        print("(TensorFlow not installed: no to_tf_dataset row)", file=sys.stderr)
    try:
        from xbatcher.loaders.jax import JaxLoader

        out["JaxLoader"] = lambda: iter(JaxLoader(fresh_generator(path), prefetch=8))
    except ImportError:
        print("(JAX not installed: no JaxLoader row)", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--results-dir", default=os.path.join(HERE, ".results"))
    args = p.parse_args(argv)
    path = w2_store(args.results_dir)
    step = args.step_ms / 1000
    candidates = ways(path)
    for make in candidates.values():  # warm up imports, pools, TF graph building
        consume(make(), 2, 0.0)
    rows: dict[str, dict[str, list[float]]] = {
        k: {"first": [], "wait": [], "steady": [], "wall": [], "rate": []}
        for k in candidates
    }
    for r in range(args.repeats):
        names = list(candidates) if r % 2 == 0 else list(reversed(candidates))
        for name in names:  # alternate the order: machine noise hits every way
            first, rest, wall = consume(candidates[name](), args.batches, step)
            row = rows[name]
            row["first"].append(first)
            row["wait"].append((first + rest) / wall)
            row["steady"].append(rest / (wall - first))
            row["wall"].append(wall)
            _, _, read = consume(candidates[name](), args.batches, 0.0)
            row["rate"].append(args.batches / read)
    base = statistics.median(rows["plain bgen.arrays"]["wall"])
    print(
        f"W2 Zarr, batch_size=32 shuffled, {args.batches} batches, step "
        f"{args.step_ms:g} ms, median of {args.repeats}\n"
    )
    print(
        "| way | data wait, % of wall | after the first batch | first batch (s) "
        "| wall (s) | wall / plain | read rate, no step (batches/s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(
            f"| {name} | {100 * med['wait']:.1f} % | {100 * med['steady']:.1f} % | "
            f"{med['first']:.2f} | {med['wall']:.2f} | {med['wall'] / base:.2f} | "
            f"{med['rate']:.0f} |"
        )


if __name__ == "__main__":
    main()
