"""Torch loaders on W2 stored as Zarr: how long a training step waits for data.

    python benchmarks/loaders.py [--steps 300] [--repeats 3] [--step-ms 10] [--no-04]

W2 (float32 365x256x256, Zarr chunks 30x256x256, zstd; ``_common.make_data``) is
opened lazily; batches are 32 shuffled 32x32 samples. Each configuration first
reads ``WARM`` batches (imports, worker start-up, the first decode of the chunks:
a long training run pays them once). Each configuration runs
``--steps`` training steps (two epochs without a step); a step sleeps ``--step-ms`` (the GPU's time: the CPU is
free meanwhile) and the loop measures the time spent waiting in ``next()``:

* ``arrays loop``: ``for x in bgen.arrays`` (the plain loop the loader must match);
* ``torch, 0 workers`` / ``torch, 2 workers``: ``IterableDataset`` through a
  ``DataLoader(batch_size=None)`` (persistent workers, started before timing);
* ``0.4 MapDataset``: xbatcher 0.4's ``MapDataset`` over ``open_zarr`` with
  ``batch_dims={"time": 32}`` (32 windows of 32x32 per batch: the same bytes; 0.4
  has no sample shuffle, so the DataLoader shuffles the batches), in its own
  interpreter: the current one with the 0.4.0 wheel (downloaded once with pip into
  ``benchmarks/.results/``) first on ``sys.path`` (the 0.4 venv of ``run.py`` has no
  torch).

Also without a step (``--step-ms 0`` part): batches/s of ``torch, 0 workers`` over the
arrays loop (target >= 0.9x). Each library runs in a subprocess; repeats alternate
them; the table shows medians. Keep runs short: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, ".results")
DATA = os.path.join(RESULTS, "data")
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

BATCH = 32
WARM = 100  # batches read before timing (a long run pays the start-up once)
WINDOW = {"lat": 32, "lon": 32}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------- measuring
def run_steps(batches: Iterator[Any], steps: int, step_s: float) -> dict[str, float]:
    """``steps`` training steps over ``batches``: seconds waiting for data, total."""
    wait = 0.0
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        t = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        wait += time.perf_counter() - t
        _ = batch  # the model would read it here
        if step_s:
            time.sleep(step_s)
        done += 1
    total = time.perf_counter() - t0
    return {
        "steps": done,
        "wait_s": wait,
        "total_s": total,
        "wait_fraction": wait / total if total else float("nan"),
        "batches_per_s": done / total if total else float("nan"),
    }


def endless(make: Any) -> Iterator[Any]:
    """Epoch after epoch of ``make()``."""
    while True:
        yield from make()


def worker_ours(steps: int, step_s: float) -> list[dict[str, Any]]:
    import torch
    import xarray as xr

    import xbatcher as xb
    from xbatcher.loaders.torch import IterableDataset

    path = os.path.join(DATA, "w2.zarr")

    def bgen() -> xb.BatchGenerator:
        ds = xr.open_dataset(path, engine="zarr", chunks=None)
        return xb.BatchGenerator(
            ds["v"], WINDOW, batch_size=BATCH, shuffle=True, seed=0
        )

    out = []
    epoch = len(bgen())
    for label, step, n in (("no step", 0.0, 2 * epoch), ("step", step_s, steps)):
        gen = bgen()
        it = endless(lambda g=gen: iter(g.arrays))
        run_steps(it, WARM, 0.0)  # imports, thread pools, decoded chunks
        row = run_steps(it, n, step)
        out.append({"config": "arrays loop", "mode": label, **row})
        for workers in (0, 2):
            dataset = IterableDataset(bgen())
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=None,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            it = endless(lambda ld=loader: iter(ld))
            run_steps(it, WARM, 0.0)  # workers started, their chunks decoded
            row = run_steps(it, n, step)
            out.append({"config": f"torch, {workers} workers", "mode": label, **row})
            del it, loader
    return out


def worker_04(steps: int, step_s: float) -> list[dict[str, Any]]:
    import torch
    import xarray as xr

    import xbatcher

    assert xbatcher.__version__ == "0.4.0", xbatcher.__file__
    from xbatcher.loaders.torch import MapDataset

    ds = xr.open_zarr(os.path.join(DATA, "w2.zarr"))
    gen = xbatcher.BatchGenerator(ds["v"], WINDOW, batch_dims={"time": BATCH})
    loader = torch.utils.data.DataLoader(
        MapDataset(gen),
        batch_size=None,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    it = endless(lambda: iter(loader))
    run_steps(it, 5, 0.0)
    row = run_steps(it, max(10, steps // 3), step_s)  # slow: fewer steps
    return [{"config": "0.4 MapDataset", "mode": "step", **row}]


# ----------------------------------------------------------------------- driver
def wheel_04() -> str | None:
    """The xbatcher 0.4.0 wheel extracted under ``.results`` (pip download, once)."""
    target = os.path.join(RESULTS, "xbatcher-0.4.0-src")
    if os.path.exists(os.path.join(target, "xbatcher", "__init__.py")):
        return target
    wheels = os.path.join(RESULTS, "wheels")
    cmd = [sys.executable, "-m", "pip", "download", "xbatcher==0.4.0", "--no-deps"]
    cmd += ["--only-binary=:all:", "--dest", wheels, "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    names = [n for n in os.listdir(wheels)] if os.path.isdir(wheels) else []
    wheel = next((n for n in names if n.startswith("xbatcher-0.4.0")), None)
    if done.returncode != 0 or wheel is None:
        log(f"[setup] no 0.4 wheel: {done.stderr.strip()[-300:]}")
        return None
    with zipfile.ZipFile(os.path.join(wheels, wheel)) as zf:
        zf.extractall(target)
    return target


def run_worker(lib: str, steps: int, step_ms: float, path_04: str | None) -> Any:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if lib == "ours":
        env["PYTHONPATH"] = os.path.join(REPO, "src")
    else:
        assert path_04 is not None
        env["PYTHONPATH"] = path_04  # ahead of the editable install of ours
    cmd = [sys.executable, __file__, "--worker", lib, "--steps", str(steps)]
    cmd += ["--step-ms", str(step_ms)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(f"[{lib}] failed:\n{done.stderr[-2000:]}")
        return []
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["mode"]), []).append(r)
    med = {
        k: {
            f: statistics.median(r[f] for r in v)
            for f in ("wait_fraction", "batches_per_s")
        }
        for k, v in groups.items()
    }
    lines = [
        "| config | step | data wait (% of time) | batches/s |",
        "| --- | --- | --- | --- |",
    ]
    for (config, mode), m in med.items():
        wait = f"{100 * m['wait_fraction']:.1f}" if mode == "step" else "-"
        lines.append(f"| {config} | {mode} | {wait} | {m['batches_per_s']:.1f} |")
    base = med.get(("arrays loop", "no step"))
    zero = med.get(("torch, 0 workers", "no step"))
    if base and zero:
        ratio = zero["batches_per_s"] / base["batches_per_s"]
        lines.append(
            f"\ntorch 0 workers / arrays loop (no step): {ratio:.2f}x (target >= 0.9x)"
        )
    old = med.get(("0.4 MapDataset", "step"))
    for w in (0, 2):
        ours = med.get((f"torch, {w} workers", "step"))
        if old and ours:
            ratio = ours["batches_per_s"] / old["batches_per_s"]
            lines.append(
                f"torch {w} workers / 0.4 MapDataset (with step): {ratio:.1f}x"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-04", action="store_true")
    p.add_argument("--worker", choices=("ours", "04"))
    args = p.parse_args()
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_04
        print(json.dumps(fn(args.steps, args.step_ms / 1000)))
        return 0
    if not C.data_ready(DATA):
        log(f"[setup] writing the benchmark data to {DATA}")
        C.make_data(DATA)
    path_04 = None if args.no_04 else wheel_04()
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        order = ["ours", "04"] if rep % 2 == 0 else ["04", "ours"]
        for lib in order:
            if lib == "04" and path_04 is None:
                continue
            log(f"[run] repeat {rep + 1}/{args.repeats}: {lib}")
            rows.extend(run_worker(lib, args.steps, args.step_ms, path_04))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
