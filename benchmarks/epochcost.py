"""Fixed per-epoch costs of S1: generator construction for both Zarr openings, the
whole-epoch order ``plan.batch_units(epoch, 0, len(bgen))`` of the full and the
chunk-aware shuffle, and the permutation under the full one. Medians of ``--repeats`` runs, in ms.

``python benchmarks/epochcost.py --baseline /work/main/src`` also runs the same
measurements against another checkout's ``src`` and prints the ratio ours/baseline.
Each side runs in its own child process, alternately, ``--rounds`` times; the table
shows the median over the rounds of each round's median (wall time; on a busy machine
the rounds differ by up to 2x, so compare the two columns of one run only). Needs the
benchmark data (``benchmarks/run.py`` writes it; ``--data`` points at it). Runs in
about ten seconds a round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(data: str, repeats: int) -> dict[str, float]:
    """Each fixed cost's median (ms), by name."""
    import numpy as np

    import xbatcher as xb
    from xbatcher.sampling import permute

    kw: dict[str, Any] = {**C.S1_KWARGS, "shuffle": True, "seed": 0}
    out: dict[str, float] = {}
    for kind in ("w2_zarr_lazy", "w2_zarr_dask"):
        src = C.open_source(kind, data)
        out[f"construct {kind}"] = median_ms(
            lambda src=src: xb.BatchGenerator(src, **kw), repeats
        )
    bgen = xb.BatchGenerator(C.open_source("w2_zarr_lazy", data), **kw)
    n = bgen.plan.n_units
    epoch = [0]

    def whole_epoch() -> None:
        epoch[0] += 1  # a new epoch each time: nothing kept from the last call
        bgen.plan.batch_units(epoch[0], 0, len(bgen))

    out[f"batch_units whole epoch ({n} units)"] = median_ms(whole_epoch, repeats)
    chunks = xb.BatchGenerator(
        C.open_source("w2_zarr_lazy", data), **{**kw, "shuffle": "chunks"}
    )

    def whole_chunk_aware_epoch() -> None:
        epoch[0] += 1
        chunks.plan.batch_units(epoch[0], 0, len(chunks))

    out["batch_units whole epoch, shuffle='chunks'"] = median_ms(
        whole_chunk_aware_epoch, repeats
    )
    positions = np.arange(n)
    out[f"permute {n} positions"] = median_ms(
        lambda: permute(n, 12345, positions), repeats
    )
    return out


def _child(src: str | None, args: argparse.Namespace) -> dict[str, float]:
    """``measure`` in a child process whose ``xbatcher`` is the one under ``src``."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, __file__, "--json", "--data", args.data]
    cmd += ["--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", default=os.path.join(os.path.dirname(__file__), ".results", "data")
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout's src directory")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.data, args.repeats)))
        return
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "baseline": []}
    for _ in range(args.rounds):
        runs["ours"].append(_child(os.environ.get("PYTHONPATH"), args))
        if args.baseline:
            runs["baseline"].append(_child(args.baseline, args))
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for side, rs in runs.items()
        if rs
    }
    ours, base = med["ours"], med.get("baseline", {})
    head = f"median of {args.rounds} x {args.repeats}"
    print(f"{head:44s} {'ours':>9s} {'baseline':>9s} ratio")
    for name, ms in ours.items():
        if name in base:
            print(f"{name:44s} {ms:7.3f}ms {base[name]:7.3f}ms {ms / base[name]:5.2f}")
        else:
            print(f"{name:44s} {ms:7.3f}ms")


if __name__ == "__main__":
    main()
