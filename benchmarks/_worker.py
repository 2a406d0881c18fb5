"""Benchmark worker: runs in its own process, prints one JSON line per workload.

    python _worker.py --lib ours --data DIR --workloads W2a,S1 --phase bench
    python _worker.py --lib xb04 ...        # under the xbatcher 0.4 venv

``--lib ours`` runs the references ("limit") and our library, interleaved per
workload; ``--lib xb04`` runs xbatcher 0.4. Both import the module named
``xbatcher``: the driver (run.py) picks the interpreter and PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import _common as C

warnings.filterwarnings("ignore")


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.lib: str = args.lib
        self.data: str = args.data
        self.cap: float = args.cap
        self.min_time: float = args.min_time
        self.deadline: float = args.deadline
        self.dump_dir: str | None = args.dump_dir
        self.xb: Any = None
        self.xb_error: str | None = None

    def over_budget(self) -> bool:
        return self.deadline > 0 and time.time() > self.deadline

    def measure(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if self.over_budget():
            return {"skipped": "wall-time budget of the run is spent"}
        try:
            return fn()
        except Exception:
            return {"error": traceback.format_exc(limit=8)}


def load_xbatcher(ctx: Ctx) -> None:
    try:
        import xbatcher

        xbatcher.BatchGenerator  # noqa: B018
        ctx.xb = xbatcher
    except Exception:
        ctx.xb_error = traceback.format_exc(limit=4)


def warm_up(ctx: Ctx) -> None:
    """Run each code path once on tiny data so first-call costs (lazy imports,
    thread pools, codec set-up) do not land in the first measurement."""
    import dask.array as dska
    import xarray as xr

    dska.ones(10, chunks=5).sum().compute()
    _, _, get = C.zarr_chunk_getter(ctx.data)
    get(0)
    for kind in ("w2_zarr_lazy", "w2_zarr_dask"):
        _ = (
            C.open_source(kind, ctx.data)
            .isel(time=0, lat=slice(0, 4), lon=slice(0, 4))
            .values
        )
    if ctx.xb is None:
        return

    da = C.w2_dataarray(np.zeros((16, 64, 64), np.float32))
    try:
        for kw in (
            {"batch_dims": {"time": 8}},
            {"batch_dims": {"time": 8}, "concat_input_dims": True},
        ):
            bgen = ctx.xb.BatchGenerator(da, {"lat": 32, "lon": 32}, **kw)
            C.materialise(bgen[0])
            if ctx.lib == "ours":
                bgen.arrays[0]
        C.materialise(
            next(
                iter(
                    ctx.xb.BatchGenerator(xr.Dataset({"a": da}), {"lat": 32, "lon": 32})
                )
            )
        )
        if ctx.lib == "ours":
            b = ctx.xb.BatchGenerator(
                da,
                input_dims={"lat": 32, "lon": 32},
                batch_size=4,
                shuffle=True,
                seed=0,
            )
            b.arrays[0]
    except Exception:
        pass


# --------------------------------------------------------------------------
# regular workloads
# --------------------------------------------------------------------------


def limit_epoch(
    w: C.Workload, ctx: Ctx, src: Any, raw: dict[str, np.ndarray]
) -> tuple[Callable[[], Any], int]:
    plan = C.make_plan(w.dims, w.shape, w.kwargs)
    n = plan.n_batches
    if w.limit == "gather":
        return gather_only_epoch(w, raw)
    getter = (
        C.zarr_chunk_getter(ctx.data)
        if w.limit == "zarr_chunks"
        else C.dask_chunk_getter(src)
    )

    def epoch_chunked() -> Any:
        cg = C.ChunkedGatherer(plan, *getter)  # fresh: every chunk read once per epoch
        for i in range(n):
            yield int(cg.gather(i).nbytes)

    return epoch_chunked, n


def gather_only_epoch(
    w: C.Workload, raw: dict[str, np.ndarray]
) -> tuple[Callable[[], Any], int]:
    plan = C.make_plan(w.dims, w.shape, w.kwargs)
    gs = [C.Gatherer(plan, a) for a in raw.values()]
    n = plan.n_batches
    if len(gs) == 1:
        g = gs[0]

        def epoch1() -> Any:
            for i in range(n):
                yield g.gather(i).nbytes

        return epoch1, n

    def epoch() -> Any:
        for i in range(n):
            yield sum([g.gather(i).nbytes for g in gs])

    return epoch, n


def ours_epoch(
    make: Callable[[], Any], path: str, fresh: bool
) -> tuple[Callable[[], Any], Callable[[Any], int], int]:
    """One epoch of our generator through the array or the xarray path, as
    (epoch, measure, batches per epoch) for ``C.timed``. With ``fresh`` every
    epoch starts from a new generator (nothing carried over from the previous
    epoch: storage-backed sources)."""
    first = make()
    n = len(first)

    def run(bgen: Any) -> Any:
        if path == "arrays":
            return bgen.arrays
        if path == "xarray_iter":
            return bgen  # for b in bgen
        return (bgen[i] for i in range(n))

    measure = C.nbytes_of if path == "arrays" else C.materialise
    if fresh:
        return (lambda: run(make())), measure, n
    return (lambda: run(first)), measure, n


def bench_workload(w: C.Workload, ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ctx.lib == "xb04":
        if w.xb04_reuse:
            return {"reuse": w.xb04_reuse}
        src = C.open_source(w.xb04_source or w.source, ctx.data)

        def run04() -> dict[str, Any]:
            bgen = ctx.xb.BatchGenerator(src, **w.kwargs)
            return C.timed(
                lambda: bgen, ctx.cap, ctx.min_time, len(bgen), measure=C.materialise
            )

        out["xb04"] = ctx.measure(run04)
        return out

    src = C.open_source(w.source, ctx.data)
    raw = C.open_raw(w.source, ctx.data)
    epoch, n = limit_epoch(w, ctx, src, raw)
    out["limit"] = ctx.measure(lambda: C.timed(epoch, ctx.cap, ctx.min_time, n))
    if w.limit != "gather":
        ge, gn = gather_only_epoch(w, raw)
        out["gather"] = ctx.measure(lambda: C.timed(ge, ctx.cap, ctx.min_time, gn))
    if ctx.xb is None:
        out["ours_xarray"] = out["ours_arrays"] = {"error": ctx.xb_error}
        return out

    def run(path: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            ep, measure, nb = ours_epoch(
                lambda: ctx.xb.BatchGenerator(src, **w.kwargs), path, w.fresh_per_epoch
            )
            return C.timed(ep, ctx.cap, ctx.min_time, nb, measure=measure)

        return go

    out["ours_xarray"] = ctx.measure(run("xarray"))
    out["ours_arrays"] = ctx.measure(run("arrays"))
    if w.limit != "gather":  # chunked sources: the xarray path iterated as well
        out["ours_xarray_iter"] = ctx.measure(run("xarray_iter"))
    return out


# --------------------------------------------------------------------------
# S1: sampling from Zarr (ours only)
# --------------------------------------------------------------------------


# S1's modes: in order, chunk-aware shuffle, full shuffle
S1_MODES: dict[str, Any] = {"inorder": False, "chunks": "chunks", "full": True}


def s1_kwargs(shuffle: Any) -> dict[str, Any]:
    return {**C.S1_KWARGS, "shuffle": shuffle, **({"seed": 0} if shuffle else {})}


def s1_starts(
    ctx: Ctx, src: Any, shuffle: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window starts ``(time, lat, lon)``, each ``(n_batches, batch_size)``, of the
    first epoch of our generator: the sample order the ideal gathers in."""
    bgen = ctx.xb.BatchGenerator(src, **s1_kwargs(shuffle))
    n = len(bgen)
    units = np.concatenate(bgen.plan.batch_units(bgen.epoch, 0, n))
    starts = bgen.engine.schema.unit_windows(units).starts
    t, y, x = (np.asarray(starts[d]).reshape(n, -1) for d in ("time", "lat", "lon"))
    return t, y, x


def bench_s1(ctx: Ctx) -> dict[str, Any]:
    if ctx.lib != "ours":
        return {"skipped": "0.4 has no batch_size / shuffle"}
    out: dict[str, Any] = {}
    src = C.open_source("w2_zarr_lazy", ctx.data)
    src_dask = C.open_source("w2_zarr_dask", ctx.data)
    nt, ny, nx = C.W2_SHAPE
    wy, wx = C.S1_KWARGS["input_dims"]["lat"], C.S1_KWARGS["input_dims"]["lon"]
    bs = C.S1_KWARGS["batch_size"]
    n_samples = nt * (ny // wy) * (nx // wx)
    n_batches = -(-n_samples // bs)

    def passes_until_min_time(
        one_pass: Callable[[], None], note: str
    ) -> dict[str, Any]:
        """Whole passes over the data until min_time, like the epochs of the others."""
        passes = 0
        t0 = time.perf_counter()
        while True:
            one_pass()
            passes += 1
            el = time.perf_counter() - t0
            if el >= ctx.min_time or el >= ctx.cap:
                break
        return {
            "batches": n_batches * passes,
            "seconds": el,
            "epochs": passes,
            "capped": False,
            "n_per_epoch": n_batches,
            "bps": n_batches * passes / el,
            "gbps": n_samples * wy * wx * 4 * passes / el / 1e9,
            "note": note,
        }

    def run_limit() -> dict[str, Any]:
        nchunks, _, get = C.zarr_chunk_getter(ctx.data)

        def one_pass() -> None:
            for k in range(nchunks):
                get(k)

        return passes_until_min_time(
            one_pass,
            "decode every chunk once per epoch (no gather); GB/s counts the batch "
            "output bytes of the epoch",
        )

    def run_floor() -> dict[str, Any]:
        """Every chunk's raw bytes decoded with numcodecs in one thread per core:
        the fastest decode of an epoch's data, with no gather and no Zarr."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        import numcodecs

        root = os.path.join(ctx.data, "w2.zarr", "v", "c")
        files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)
        codec = numcodecs.Zstd()
        shape = C.ZARR_CHUNKS

        def decode(path: str) -> None:
            with open(path, "rb") as f:
                raw = f.read()
            codec.decode(raw, out=np.empty(shape, np.float32))

        with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:

            def one_pass() -> None:
                for _ in pool.map(decode, files):
                    pass

            return passes_until_min_time(
                one_pass, "raw chunk bytes + numcodecs zstd on every core, no gather"
            )

    def run_naive() -> dict[str, Any]:
        order = np.random.default_rng(0).permutation(n_samples)
        buf = np.empty((bs, wy, wx), np.float32)
        shape = (nt, ny // wy, nx // wx)

        def epoch() -> Any:
            for b0 in range(0, n_samples, bs):
                chunk = order[b0 : b0 + bs]
                for j, s in enumerate(chunk):
                    t, iy, ix = np.unravel_index(s, shape)
                    buf[j] = src.isel(
                        time=int(t),
                        lat=slice(iy * wy, iy * wy + wy),
                        lon=slice(ix * wx, ix * wx + wx),
                    ).values
                yield len(chunk) * wy * wx * 4

        return C.timed(epoch, ctx.cap, ctx.min_time, n_batches, True)

    def run_ours(
        shuffle: Any, path: str, source: Any = None
    ) -> Callable[[], dict[str, Any]]:
        source = src if source is None else source

        def run() -> dict[str, Any]:
            ep, measure, nb = ours_epoch(
                lambda: ctx.xb.BatchGenerator(source, **s1_kwargs(shuffle)),
                path,
                fresh=True,
            )
            return C.timed(ep, ctx.cap, ctx.min_time, nb, measure=measure)

        return run

    def run_ideal(shuffle: Any) -> dict[str, Any]:
        """The all-core decode-once ideal in ``shuffle``'s sample order
        (``C.S1Ideal``): decode on every core, gather each batch as soon as its
        chunks are decoded, and on every core once the decode is done ("hybrid",
        never slower than the two simpler overlaps by more than the noise, see
        benchmarks/README.md). The two simpler overlaps are measured too, for the
        record: taking the fastest of three noisy measurements as the reference
        would bias it upwards."""
        from concurrent.futures import ThreadPoolExecutor

        ideal = C.S1Ideal(ctx.data, s1_starts(ctx, src, shuffle))
        runs: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(ideal.cores) as pool:
            for how in ("hybrid", "pipelined", "all_cores"):
                runs[how] = C.timed(
                    lambda how=how: ideal.epoch(pool, how),
                    ctx.cap,
                    ctx.min_time,
                    n_batches,
                )
        best = dict(runs["hybrid"], how="hybrid")
        best["note"] = "b/s: " + ", ".join(
            f"{how} {r['bps']:.0f}" for how, r in runs.items()
        )
        return best

    out["limit"] = ctx.measure(run_limit)
    out["floor"] = ctx.measure(run_floor)
    if ctx.xb is not None:
        # per mode: the ideal, then ours through both openings, back to back
        for mode, shuffle in S1_MODES.items():
            out[f"ideal_{mode}"] = ctx.measure(
                lambda shuffle=shuffle: run_ideal(shuffle)
            )
            out[f"{mode}_arrays"] = ctx.measure(run_ours(shuffle, "arrays"))
            out[f"{mode}_arrays_dask"] = ctx.measure(
                run_ours(shuffle, "arrays", src_dask)
            )
        out["chunks_xarray"] = ctx.measure(run_ours("chunks", "xarray"))
    else:
        out["chunks_arrays"] = {"error": ctx.xb_error}
    out["naive"] = ctx.measure(run_naive)
    return out


def bench_s2(ctx: Ctx) -> dict[str, Any]:
    """S1's sampling over a store bigger than the small cache: both shuffles with
    block_cache_bytes 64 MiB (smaller than the store) and 512 MiB (holds it all)."""
    if ctx.lib != "ours":
        return {"skipped": "0.4 has no batch_size / shuffle"}

    import xarray as xr
    import zarr

    path = os.path.join(ctx.data, "s2.zarr")
    src = xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False)["v"]
    out: dict[str, Any] = {}
    z = zarr.open_array(os.path.join(path, "v"), mode="r")
    step = C.S2_CHUNKS[0]
    nt, ny, nx = C.S2_SHAPE
    wy, wx = C.S1_KWARGS["input_dims"]["lat"], C.S1_KWARGS["input_dims"]["lon"]
    n_batches = -(-nt * (ny // wy) * (nx // wx) // C.S1_KWARGS["batch_size"])

    def run_limit() -> dict[str, Any]:
        def epoch() -> Any:
            for t in range(0, nt, step):  # one read per row of chunks, all decoded
                z[t : t + step]
            yield 0

        t0 = time.perf_counter()
        passes = 0
        while True:
            for _ in epoch():
                pass
            passes += 1
            el = time.perf_counter() - t0
            if el >= ctx.min_time or el >= ctx.cap:
                break
        return {"bps": n_batches * passes / el, "seconds": el, "epochs": passes}

    def run_ours(shuffle: Any, cache: str) -> Callable[[], dict[str, Any]]:
        def make() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "more than block_cache_bytes"
                return ctx.xb.BatchGenerator(
                    src,
                    **C.S1_KWARGS,
                    shuffle=shuffle,
                    seed=0,
                    block_cache_bytes=cache,
                )

        def run() -> dict[str, Any]:
            ep, measure, nb = ours_epoch(make, "arrays", fresh=True)
            return C.timed(ep, ctx.cap, ctx.min_time, nb, measure=measure)

        return run

    out["limit"] = ctx.measure(run_limit)
    if ctx.xb is None:
        return {"error": ctx.xb_error}
    for cache in C.S2_CACHES:
        out[f"chunks_{cache}"] = ctx.measure(run_ours("chunks", cache))
        out[f"full_{cache}"] = ctx.measure(run_ours(True, cache))
    return out


# --------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------


def _construct_ms(
    make: Callable[[], Any], budget: float = 2.0, max_n: int = 7
) -> dict[str, Any]:
    times = []
    t_start = time.perf_counter()
    obj = None
    while len(times) < max_n and (not times or time.perf_counter() - t_start < budget):
        t0 = time.perf_counter()
        obj = make()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": float(np.median(times)), "n": len(times), "len": len(obj)}


def bench_c1(ctx: Ctx) -> dict[str, Any]:
    w = C.WORKLOADS["W1a"]
    src = C.open_source("w1", ctx.data)
    key = "xb04" if ctx.lib == "xb04" else "ours"
    if ctx.xb is None:
        return {key: {"error": ctx.xb_error}}
    return {
        key: ctx.measure(
            lambda: _construct_ms(lambda: ctx.xb.BatchGenerator(src, **w.kwargs))
        )
    }


def huge_source() -> Any:
    import dask.array as da
    import xarray as xr

    arr = da.zeros((10**5, 10**3, 10**3), dtype=np.float32, chunks=(1, 10**3, 10**3))
    return xr.DataArray(arr, dims=("time", "y", "x"))


HUGE_KW = {
    "input_dims": {"y": 8, "x": 8},
    "input_overlap": {"y": 5, "x": 5},
    "batch_dims": {"time": 1},
}
HUGE_SAMPLE_KW = {
    "input_dims": {"y": 8, "x": 8},
    "input_overlap": {"y": 5, "x": 5},
    "batch_size": 32,
    "shuffle": True,
    "seed": 0,
}


def bench_c2(ctx: Ctx) -> dict[str, Any]:
    if ctx.lib == "xb04":
        return {
            "xb04": {
                "skipped": "0.4 builds one selector dict per window: 1.1e10 windows would not finish"
            }
        }
    if ctx.xb is None:
        return {"ours": {"error": ctx.xb_error}}
    src = huge_source()
    out: dict[str, Any] = {}

    def one(kw: dict[str, Any]) -> dict[str, Any]:
        r = _construct_ms(lambda: ctx.xb.BatchGenerator(src, **kw), budget=1.0, max_n=5)
        bgen = ctx.xb.BatchGenerator(src, **kw)
        for name, i in (("first_batch_ms", 0), ("last_batch_ms", len(bgen) - 1)):
            t0 = time.perf_counter()
            a = bgen.arrays[i]
            r[name] = (time.perf_counter() - t0) * 1e3
            r["batch_shape"] = list(np.shape(a))
        return r

    out["ours"] = ctx.measure(lambda: one(HUGE_KW))
    out["ours_samples"] = ctx.measure(lambda: one(HUGE_SAMPLE_KW))
    return out


# --------------------------------------------------------------------------
# dump (sanity checks): a few batches as .npy for the driver to compare
# --------------------------------------------------------------------------


def _save(
    ctx: Ctx, tag: str, w: str, i: int, arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    assert ctx.dump_dir
    shapes = {}
    for var, a in arrays.items():
        a = np.asarray(a)
        np.save(os.path.join(ctx.dump_dir, f"{tag}_{w}_{i}_{var}.npy"), a)
        shapes[var] = list(a.shape)
    return shapes


def _as_dict(x: Any) -> dict[str, np.ndarray]:
    if isinstance(x, dict):
        return {str(k): np.asarray(v) for k, v in x.items()}
    if hasattr(x, "data_vars"):
        return {str(k): np.asarray(v.values) for k, v in x.data_vars.items()}
    if hasattr(x, "values"):
        return {"v": np.asarray(x.values)}
    return {"v": np.asarray(x)}


def _dims(b: Any) -> list[str]:
    if hasattr(b, "data_vars"):
        return [str(d) for d in next(iter(b.data_vars.values())).dims]
    return [str(d) for d in b.dims]


def _dump_indices(w: C.Workload, n: int) -> list[int]:
    if w.compare == "shapes":  # 0.4 batches differ; one batch is enough (and slow)
        return [0]
    return sorted({0, 1, n // 2, n - 1})


def dump_workload(w: C.Workload, ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ctx.lib == "xb04":
        if w.xb04_reuse:
            return {"skipped": "reuse"}
        src = C.open_source(w.xb04_source or w.source, ctx.data)
        bgen = ctx.xb.BatchGenerator(src, **w.kwargs)
        n = len(bgen)
        rec: dict[str, Any] = {"n": n, "batches": {}}
        for i in _dump_indices(w, n):
            b = bgen[i]
            rec["batches"][i] = {
                "dims": _dims(b),
                "shapes": _save(ctx, "xb04", w.name, i, _as_dict(b)),
            }
        out["xb04"] = rec
        return out
    src = C.open_source(w.source, ctx.data)
    raw = C.open_raw(w.source, ctx.data)
    plan = C.make_plan(w.dims, w.shape, w.kwargs)
    n = plan.n_batches
    ref = {"n": n, "batches": {}}
    for i in _dump_indices(w, n):
        ref["batches"][i] = {
            "shapes": _save(
                ctx,
                "ref",
                w.name,
                i,
                {k: C.Gatherer(plan, a).gather(i) for k, a in raw.items()},
            )
        }
    if w.limit != "gather":  # the chunked limit must produce the same batches
        getter = (
            C.zarr_chunk_getter(ctx.data)
            if w.limit == "zarr_chunks"
            else C.dask_chunk_getter(src)
        )
        for i in _dump_indices(w, n):
            cg = C.ChunkedGatherer(plan, *getter)
            _save(ctx, "refchunk", w.name, i, {"v": cg.gather(i)})
    out["ref"] = ref
    if ctx.xb is None:
        out["ours"] = {"error": ctx.xb_error}
        return out
    try:
        bgen = ctx.xb.BatchGenerator(src, **w.kwargs)
        n = len(bgen)
        rec = {"n": n, "batches": {}}
        for i in _dump_indices(w, n):
            b = bgen[i]
            rec["batches"][i] = {
                "dims": _dims(b),
                "shapes": _save(ctx, "ours", w.name, i, _as_dict(b)),
            }
            rec["batches"][i]["arr_shapes"] = _save(
                ctx, "oursarr", w.name, i, _as_dict(bgen.arrays[i])
            )
        out["ours"] = rec
    except Exception:
        out["ours"] = {"error": traceback.format_exc(limit=8)}
    return out


def dump_s1(ctx: Ctx) -> dict[str, Any]:
    """Every sample exactly once per epoch, for both shuffles (cheap: reads
    sample numbers only if the generator exposes them; otherwise shapes)."""
    if ctx.lib != "ours" or ctx.xb is None:
        return {"skipped": "ours only" if ctx.lib != "ours" else ctx.xb_error}
    src = C.open_source("w2_zarr_lazy", ctx.data)
    out: dict[str, Any] = {}
    for shuffle in ("chunks", True):
        try:
            bgen = ctx.xb.BatchGenerator(src, **C.S1_KWARGS, shuffle=shuffle, seed=0)
            b0 = bgen[0]
            rec: dict[str, Any] = {
                "n": len(bgen),
                "dims": _dims(b0),
                "shape": list(b0.shape),
            }
            if "sample" in b0.coords:
                seen = []
                for i in range(len(bgen)):
                    seen.append(np.asarray(bgen[i]["sample"].values))
                allv = np.concatenate(seen)
                rec["n_samples"] = int(allv.size)
                rec["unique"] = int(np.unique(allv).size)
                # check values of the first batch against isel
                nt, ny, nx = C.W2_SHAPE
                shape = (nt, ny // 32, nx // 32)
                bad = 0
                arr0 = np.asarray(bgen.arrays[0])
                for j, s in enumerate(np.asarray(b0["sample"].values)):
                    t, iy, ix = np.unravel_index(int(s), shape)
                    exp = src.isel(
                        time=int(t),
                        lat=slice(iy * 32, iy * 32 + 32),
                        lon=slice(ix * 32, ix * 32 + 32),
                    ).values
                    bad += int(not np.array_equal(exp, np.asarray(b0.values[j])))
                    bad += int(not np.array_equal(exp, arr0[j]))
                rec["value_mismatches_batch0"] = bad
            out[str(shuffle)] = rec
        except Exception:
            out[str(shuffle)] = {"error": traceback.format_exc(limit=8)}
    out.update(check_s1_ideal(ctx, src))
    return out


def check_s1_ideal(ctx: Ctx, src: Any) -> dict[str, Any]:
    """Per mode, every batch of an epoch of ours (array path, both openings)
    against the ideal's batch of the same position."""
    from concurrent.futures import ThreadPoolExecutor

    sources = {
        "open_dataset": src,
        "open_zarr": C.open_source("w2_zarr_dask", ctx.data),
    }
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(2) as pool:
        for mode, shuffle in S1_MODES.items():
            try:
                ideal = C.S1Ideal(ctx.data, s1_starts(ctx, src, shuffle))
                expected = ideal.batches(pool)
                rec: dict[str, Any] = {"n": int(expected.shape[0])}
                for name, source in sources.items():
                    bgen = ctx.xb.BatchGenerator(source, **s1_kwargs(shuffle))
                    bad = n = 0
                    for i, a in enumerate(bgen.arrays):
                        n += 1
                        bad += int(
                            i >= len(expected) or not np.array_equal(a, expected[i])
                        )
                    rec[name] = {"n": n, "mismatches": bad}
                out[f"ideal_{mode}"] = rec
            except Exception:
                out[f"ideal_{mode}"] = {"error": traceback.format_exc(limit=8)}
    return out


# --------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=("ours", "xb04"), required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--workloads", required=True)
    p.add_argument("--phase", choices=("bench", "dump"), default="bench")
    p.add_argument("--cap", type=float, default=15.0)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--deadline", type=float, default=0.0, help="unix time; 0 = none")
    p.add_argument("--repeat", type=int, default=0)
    p.add_argument("--dump-dir")
    args = p.parse_args()
    ctx = Ctx(args)
    load_xbatcher(ctx)
    info = {
        "xbatcher_file": getattr(ctx.xb, "__file__", None),
        "xbatcher_version": getattr(ctx.xb, "__version__", None),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    if ctx.lib == "xb04" and ctx.xb is None:
        print(
            json.dumps({"lib": ctx.lib, "workload": "*", "error": ctx.xb_error}),
            flush=True,
        )
        return
    if args.phase == "bench":
        warm_up(ctx)
    for name in args.workloads.split(","):
        t0 = time.perf_counter()
        try:
            if args.phase == "dump":
                res = (
                    dump_s1(ctx)
                    if name == "S1"
                    else (
                        dump_workload(C.WORKLOADS[name], ctx)
                        if name in C.WORKLOADS
                        else {}
                    )
                )
            elif name == "S1":
                res = bench_s1(ctx)
            elif name == "S2":
                res = bench_s2(ctx)
            elif name == "C1":
                res = bench_c1(ctx)
            elif name == "C2":
                res = bench_c2(ctx)
            else:
                res = bench_workload(C.WORKLOADS[name], ctx)
            err = None
        except Exception:
            res, err = {}, traceback.format_exc(limit=8)
        line = {
            "lib": ctx.lib,
            "workload": name,
            "repeat": args.repeat,
            "phase": args.phase,
            "results": res,
            "error": err,
            "wall_s": time.perf_counter() - t0,
            "info": info,
        }
        print(json.dumps(line, default=str), flush=True)


if __name__ == "__main__":
    main()
