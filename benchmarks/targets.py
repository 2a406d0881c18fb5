"""Forecast-pair epoch (``windows=``) vs two ways of reading the same pairs naively.

The data: a Zarr store (written once under ``benchmarks/.results/``) with ``t2m`` and
``u10`` (time, lat, lon) float32, chunks of 8 steps x the whole grid, zstd, and a
static ``z_static`` (lat, lon). A sample: inputs = 4 steps of history of t2m, u10 and
z_static, target = t2m 6 steps after the last input step, on a 32 x 32 patch;
batches of 32 samples, one in-order epoch and one ``shuffle="chunks"`` epoch.

* ``ours``: ``BatchGenerator(..., windows={"x": ..., "y": ...})``, ``bgen.arrays``;
* ``big window``: one window of 10 steps (inputs + lead) of t2m and u10, sliced into
  inputs and target afterwards;
* ``two generators``: one generator for the inputs, one for the target, zipped (each
  with its own chunk cache, as two independent pipelines would be).

Each repeat starts from fresh generators (fresh chunk caches) over the store opened
lazily; the script checks that the three give the same batches, then prints, per
mode, the median batches/s over the repeats and the bytes decoded per epoch, and the
ratios ours / naive::

    python benchmarks/targets.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import xarray as xr  # noqa: E402

import xbatcher as xb  # noqa: E402
from xbatcher.errors import XbatcherWarning  # noqa: E402

SHAPE = (240, 128, 128)
CHUNKS = (8, 128, 128)
PATCH = {"lat": 32, "lon": 32}
HIST, LEAD, BATCH = 4, 6, 32
SPAN = HIST + LEAD  # steps a big window covers


def store_path() -> str:
    """Write the store once; return its path."""
    path = os.path.join(HERE, ".results", "targets.zarr")
    if os.path.exists(os.path.join(path, "READY")):
        return path
    rng = np.random.default_rng(0)
    t, y, x = SHAPE
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), rng.random(SHAPE, dtype=np.float32)),
            "u10": (("time", "lat", "lon"), rng.random(SHAPE, dtype=np.float32)),
            "z_static": (("lat", "lon"), rng.random((y, x), dtype=np.float32)),
        },
        coords={"time": np.arange(t), "lat": np.arange(y), "lon": np.arange(x)},
    )
    enc = {v: {"chunks": CHUNKS} for v in ("t2m", "u10")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", encoding=enc, consolidated=True)
    with open(os.path.join(path, "READY"), "w") as f:
        f.write("ok\n")
    return path


def open_ds(path: str) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_dataset(path, engine="zarr", chunks=None)


MISPAIRED: set[str] = set()  # orders in which two generators pair the wrong samples
Pair = tuple[dict[str, np.ndarray], np.ndarray, int]  # inputs, target, bytes gathered
Epoch = Callable[[], tuple[Iterator[Pair], Callable[[], int]]]


def ours(
    path: str, shuffle: Any, cache: str
) -> tuple[Iterator[Pair], Callable[[], int]]:
    bgen = xb.BatchGenerator(
        open_ds(path),
        PATCH,
        batch_size=BATCH,
        shuffle=shuffle,
        seed=0 if shuffle else None,
        block_cache_bytes=cache,
        windows={
            "x": xb.Window(
                variables=["t2m", "u10", "z_static"],
                offsets={"time": range(-HIST + 1, 1)},
            ),
            "y": xb.Window(variables=["t2m"], offsets={"time": LEAD}),
        },
    )

    def pairs() -> Iterator[Pair]:
        for b in bgen.arrays:
            assert isinstance(b, dict)
            x, y = b["x"], b["y"]["t2m"]
            yield x, y, sum(a.nbytes for a in x.values()) + y.nbytes

    return pairs(), lambda: bgen.block_cache.stats()["decoded_bytes"]


def big_window(
    path: str, shuffle: Any, cache: str
) -> tuple[Iterator[Pair], Callable[[], int]]:
    bgen = xb.BatchGenerator(
        open_ds(path),
        {"time": SPAN, **PATCH},
        input_overlap={"time": SPAN - 1},
        batch_size=BATCH,
        shuffle=shuffle,
        seed=0 if shuffle else None,
        block_cache_bytes=cache,
    )

    def pairs() -> Iterator[Pair]:
        for b in bgen.arrays:
            assert isinstance(b, dict)
            x = {
                "t2m": b["t2m"][:, :HIST],
                "u10": b["u10"][:, :HIST],
                "z_static": b["z_static"],
            }
            yield x, b["t2m"][:, SPAN - 1], sum(a.nbytes for a in b.values())

    return pairs(), lambda: bgen.block_cache.stats()["decoded_bytes"]


def two_generators(
    path: str, shuffle: Any, cache: str
) -> tuple[Iterator[Pair], Callable[[], int]]:
    ds = open_ds(path)
    n = SHAPE[0] - SPAN + 1  # anchors
    order: Any = None
    if shuffle is True:
        order = xb.ShuffleSampler(seed=0)
    elif shuffle == "chunks":  # the same chunk-aware order for both
        order = xb.BlockShuffleSampler(seed=0)
    gx = xb.BatchGenerator(
        ds[["t2m", "u10", "z_static"]].isel(time=slice(0, n + HIST - 1)),
        {"time": HIST, **PATCH},
        input_overlap={"time": HIST - 1},
        batch_size=BATCH,
        sampler=order,
        block_cache_bytes=cache,
    )
    gy = xb.BatchGenerator(
        ds[["t2m"]].isel(time=slice(SPAN - 1, None)),
        PATCH,
        batch_size=BATCH,
        sampler=order,
        block_cache_bytes=cache,
    )

    if not np.array_equal(gx.batch_units(0), gy.batch_units(0)):
        MISPAIRED.add(str(shuffle))  # the two orders differ: wrong pairs

    def pairs() -> Iterator[Pair]:
        for bx, by in zip(gx.arrays, gy.arrays, strict=True):
            assert isinstance(bx, dict)
            assert isinstance(by, dict)
            out = sum(a.nbytes for a in bx.values()) + by["t2m"].nbytes
            yield bx, by["t2m"], out

    def decoded() -> int:
        return sum(g.block_cache.stats()["decoded_bytes"] for g in (gx, gy))

    return pairs(), decoded


MODES: dict[
    str, Callable[[str, Any, str], tuple[Iterator[Pair], Callable[[], int]]]
] = {
    "ours": ours,
    "big window": big_window,
    "two generators": two_generators,
}


def check(path: str) -> None:
    """The three give the same pairs (in-order epoch, first and last batches)."""
    got = {name: list(make(path, False, "512MiB")[0]) for name, make in MODES.items()}
    ref = got["ours"]
    for name, pairs in got.items():
        assert len(pairs) == len(ref), (name, len(pairs), len(ref))
        for k in (0, len(ref) - 1):
            for v in ("t2m", "u10", "z_static"):
                np.testing.assert_array_equal(pairs[k][0][v], ref[k][0][v])
            np.testing.assert_array_equal(pairs[k][1], ref[k][1])


def run(path: str, make: Any, shuffle: Any, cache: str) -> tuple[float, int, int]:
    pairs, decoded = make(path, shuffle, cache)
    t0 = time.perf_counter()
    n = gathered = 0
    for _x, y, nbytes in pairs:
        n += 1
        gathered += nbytes
        y.sum()  # touch the target
    return n / (time.perf_counter() - t0), decoded(), gathered


def main(argv: list[str] | None = None) -> None:
    warnings.simplefilter("ignore", XbatcherWarning)  # shuffle=True over a small cache
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    path = store_path()
    check(path)
    print(
        f"data {SHAPE} float32 x 2 + static, chunks {CHUNKS}; {HIST} input steps, "
        f"lead {LEAD}, patch {PATCH}, batch {BATCH}; median of {args.repeats}"
    )
    print(
        "| order (chunk cache) | reader | batches/s | ours / this | MB decoded "
        "| MB gathered |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    orders = [
        ("in order", False, "512MiB"),
        ("shuffle='chunks'", "chunks", "512MiB"),
        ("shuffle=True (16 MiB)", True, "16MiB"),
    ]
    for label, shuffle, cache in orders:
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        decoded: dict[str, int] = {}
        gathered: dict[str, int] = {}
        for r in range(args.repeats):
            names = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for name in names:
                rate, nbytes, out = run(path, MODES[name], shuffle, cache)
                rates[name].append(rate)
                decoded[name], gathered[name] = nbytes, out
        med = {m: statistics.median(v) for m, v in rates.items()}
        for name in MODES:
            mark = (
                " (wrong pairs*)"
                if name == "two generators" and str(shuffle) in MISPAIRED
                else ""
            )
            print(
                f"| {label} | {name}{mark} | {med[name]:.1f} | "
                f"{med['ours'] / med[name]:.2f}x | {decoded[name] / 1e6:.1f} | "
                f"{gathered[name] / 1e6:.1f} |"
            )
    if MISPAIRED:
        print(
            "\n*two chunk-aware shuffles group their own units by their own chunks, "
            "so the input and target generators visit different samples: timed, but "
            "not a usable pipeline."
        )


if __name__ == "__main__":
    main()
