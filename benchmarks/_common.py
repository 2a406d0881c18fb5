"""Shared benchmark pieces: data, workloads, reference gathers and timing.

This module is imported by the workers of *both* libraries (our xbatcher and
xbatcher 0.4, each in its own interpreter), so it must never import
``xbatcher``. It needs numpy, xarray, dask and zarr only.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bump when the generated data changes, so cached copies are rebuilt.
DATA_VERSION = 1
SEED = 20240601

W1_SHAPE = (100_000, 8)
W2_SHAPE = (365, 256, 256)
W3_SHAPE = (365, 128, 128)
W3_VARS = ("a", "b", "c")
ZARR_CHUNKS = (30, 256, 256)
DASK_CHUNKS = {"time": 30}


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def _coords_time(n: int, unit: str) -> np.ndarray:
    return np.datetime64("2000-01-01T00", unit) + np.arange(n).astype(
        f"timedelta64[{unit}]"
    )


def _coords_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(-90.0, 90.0, n)
    lon = np.linspace(0.0, 360.0, n, endpoint=False)
    return lat, lon


def write_w2_zarr(values: np.ndarray, path: str) -> None:
    """``values`` (time, 256, 256) as the W2 Zarr store: variable ``v`` with W2's
    coordinates, chunks ``ZARR_CHUNKS``, zstd level 3, no ``_FillValue``."""
    import xarray as xr
    import zarr

    warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
    xr.Dataset({"v": w2_dataarray(values)}).to_zarr(
        path,
        mode="w",
        encoding={
            "v": {
                "chunks": ZARR_CHUNKS,
                "compressors": (zarr.codecs.ZstdCodec(level=3),),
                "_FillValue": None,  # no NaN masking pass on read
            }
        },
        consolidated=True,
    )


def make_data(data_dir: str) -> None:
    """Write every array the benchmarks need into ``data_dir`` (once)."""

    os.makedirs(data_dir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    np.save(os.path.join(data_dir, "w1.npy"), rng.random(W1_SHAPE, dtype=np.float32))
    w2 = rng.random(W2_SHAPE, dtype=np.float32)
    np.save(os.path.join(data_dir, "w2.npy"), w2)
    for name in W3_VARS:
        np.save(
            os.path.join(data_dir, f"w3_{name}.npy"),
            rng.random(W3_SHAPE, dtype=np.float32),
        )
    write_w2_zarr(w2, os.path.join(data_dir, "w2.zarr"))
    with open(os.path.join(data_dir, "READY"), "w") as f:
        json.dump({"version": DATA_VERSION, "seed": SEED}, f)


def ensure_s2_store(data_dir: str) -> str:
    """Write (once) the S2 store: S2_SHAPE float32 in S2_CHUNKS chunks, zstd level
    1, about 300 MB on disk; returns its path."""
    import zarr

    path = os.path.join(data_dir, "s2.zarr")
    marker = os.path.join(path, "READY")
    if os.path.exists(marker):
        return path
    rng = np.random.default_rng(SEED + 2)
    group = zarr.open_group(path, mode="w")
    z = group.create_array(
        "v",
        shape=S2_SHAPE,
        chunks=S2_CHUNKS,
        dtype="float32",
        compressors=zarr.codecs.ZstdCodec(level=1),
        fill_value=None,
        dimension_names=("time", "lat", "lon"),
    )
    step = S2_CHUNKS[0]
    for t in range(0, S2_SHAPE[0], step):
        z[t : t + step] = rng.random((step, *S2_SHAPE[1:]), dtype=np.float32)
    with open(marker, "w") as f:
        f.write("ok\n")
    return path


def data_ready(data_dir: str) -> bool:
    try:
        with open(os.path.join(data_dir, "READY")) as f:
            return json.load(f).get("version") == DATA_VERSION
    except (OSError, ValueError):
        return False


def w1_dataarray(arr: np.ndarray) -> Any:
    import xarray as xr

    return xr.DataArray(
        arr,
        dims=("time", "feature"),
        coords={"time": _coords_time(arr.shape[0], "h")},
        name="v",
    )


def w2_dataarray(arr: Any) -> Any:
    import xarray as xr

    lat, lon = _coords_grid(arr.shape[1])
    return xr.DataArray(
        arr,
        dims=("time", "lat", "lon"),
        coords={"time": _coords_time(arr.shape[0], "D"), "lat": lat, "lon": lon},
        name="v",
    )


def w3_dataset(arrays: dict[str, np.ndarray]) -> Any:
    import xarray as xr

    first = next(iter(arrays.values()))
    lat, lon = _coords_grid(first.shape[1])
    return xr.Dataset(
        {k: (("time", "lat", "lon"), v) for k, v in arrays.items()},
        coords={"time": _coords_time(first.shape[0], "D"), "lat": lat, "lon": lon},
    )


def open_source(kind: str, data_dir: str) -> Any:
    """Open one benchmark source. Every worker opens the same files."""
    import xarray as xr

    path = os.path.join(data_dir, "w2.zarr")
    if kind.endswith("_nc"):  # same values, no coordinate variables
        src = open_source(kind[:-3], data_dir)
        return src.drop_vars(list(src.coords))
    if kind == "w1":
        return w1_dataarray(np.load(os.path.join(data_dir, "w1.npy")))
    if kind == "w2":
        return w2_dataarray(np.load(os.path.join(data_dir, "w2.npy")))
    if kind == "w3":
        return w3_dataset(
            {n: np.load(os.path.join(data_dir, f"w3_{n}.npy")) for n in W3_VARS}
        )
    if kind == "w2_dask":
        return w2_dataarray(np.load(os.path.join(data_dir, "w2.npy"))).chunk(
            DASK_CHUNKS
        )
    if kind == "w2_zarr_lazy":
        return xr.open_dataset(path, engine="zarr", chunks=None)["v"]
    if kind == "w2_zarr_dask":
        return xr.open_zarr(path)["v"]
    raise ValueError(f"unknown source {kind!r}")


def open_raw(kind: str, data_dir: str) -> dict[str, np.ndarray]:
    """The raw numpy arrays behind a source (for the reference gathers)."""
    kind = kind.removesuffix("_nc")
    if kind == "w1":
        return {"v": np.load(os.path.join(data_dir, "w1.npy"))}
    if kind in ("w2", "w2_dask", "w2_zarr_lazy", "w2_zarr_dask"):
        return {"v": np.load(os.path.join(data_dir, "w2.npy"))}
    if kind == "w3":
        return {n: np.load(os.path.join(data_dir, f"w3_{n}.npy")) for n in W3_VARS}
    raise ValueError(f"unknown source {kind!r}")


# --------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    source: str  # source kind for our library (see open_source)
    dims: tuple[str, ...]  # dataset dim order
    shape: tuple[int, ...]
    kwargs: dict[str, Any]  # BatchGenerator keyword arguments (0.4-compatible)
    limit: str = "gather"  # gather | dask_chunks | zarr_chunks
    xb04_source: str | None = None  # None: same as ``source``
    xb04_reuse: str | None = None  # reuse 0.4 numbers of another workload
    compare: str = "values"  # values | shapes (0.4 rules differ)
    fresh_per_epoch: bool = False  # storage-backed: a fresh generator every epoch
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_W2_DIMS = ("time", "lat", "lon")
NO_COORDS_NOTE = (
    "Source without coordinates: with an index coordinate on an input dim, 0.4's "
    "concat mode on a DataArray outer-joins the windows (its `newdim in out` tests "
    "the values, not the coords), giving NaN-padded (512, 256, 256) batches for W2c."
)
_W2A = {"input_dims": {"lat": 32, "lon": 32}, "batch_dims": {"time": 8}}

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "W1a",
            "DataArray (100000x8), window time=64, overlap 63",
            "w1",
            ("time", "feature"),
            W1_SHAPE,
            {"input_dims": {"time": 64}, "input_overlap": {"time": 63}},
        ),
        Workload(
            "W1b",
            "W1a + batch_dims time=2048, concat_input_dims (no coords)",
            "w1_nc",
            ("time", "feature"),
            W1_SHAPE,
            {
                "input_dims": {"time": 64},
                "input_overlap": {"time": 63},
                "batch_dims": {"time": 2048},
                "concat_input_dims": True,
            },
            notes=NO_COORDS_NOTE
            + " Both put ceil(B/s)=2048 windows in each of 48 batches (0.4's rule).",
        ),
        Workload(
            "W2a",
            "DataArray (365x256x256), input 32x32, batch_dims time=8",
            "w2",
            _W2_DIMS,
            W2_SHAPE,
            _W2A,
        ),
        Workload(
            "W2b",
            "W2a + input_overlap 16x16",
            "w2",
            _W2_DIMS,
            W2_SHAPE,
            {**_W2A, "input_overlap": {"lat": 16, "lon": 16}},
        ),
        Workload(
            "W2c",
            "W2a + concat_input_dims (no coords)",
            "w2_nc",
            _W2_DIMS,
            W2_SHAPE,
            {**_W2A, "concat_input_dims": True},
            notes=NO_COORDS_NOTE,
        ),
        Workload(
            "W3",
            "Dataset of 3 vars (365x128x128), input 64x64, batch_dims time=16",
            "w3",
            _W2_DIMS,
            W3_SHAPE,
            {"input_dims": {"lat": 64, "lon": 64}, "batch_dims": {"time": 16}},
        ),
        Workload(
            "W4d",
            "W2a dask-backed (chunks time=30)",
            "w2_dask",
            _W2_DIMS,
            W2_SHAPE,
            _W2A,
            limit="dask_chunks",
            fresh_per_epoch=True,
        ),
        Workload(
            "W4z",
            "W2a from Zarr, ours lazy (open_dataset chunks=None), 0.4 open_zarr",
            "w2_zarr_lazy",
            _W2_DIMS,
            W2_SHAPE,
            _W2A,
            limit="zarr_chunks",
            xb04_source="w2_zarr_dask",
            fresh_per_epoch=True,
        ),
        Workload(
            "W4zd",
            "W2a from Zarr, ours and 0.4 both via open_zarr (dask)",
            "w2_zarr_dask",
            _W2_DIMS,
            W2_SHAPE,
            _W2A,
            limit="zarr_chunks",
            xb04_reuse="W4z",
            fresh_per_epoch=True,
        ),
    ]
}

# Sampling workload (issue 3) and construction workloads have their own code.
S1_KWARGS = {"input_dims": {"lat": 32, "lon": 32}, "batch_size": 32}
# S2: the S1 sampling over a store bigger than a small chunk cache (its own store,
# written once next to the others, so adding it rebuilt none of them)
S2_SHAPE = (1200, 256, 256)
S2_CHUNKS = (30, 128, 128)
S2_CACHES = ("64MiB", "512MiB")
SPECIAL = ("S1", "S2", "C1", "C2")
ALL_NAMES = (*WORKLOADS, *SPECIAL)


# --------------------------------------------------------------------------
# the batching rules (docs/batching.md), re-derived here for the references
# --------------------------------------------------------------------------


@dataclass
class Plan:
    """Window grid of a 0.4-layout schema, for the reference gathers."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    sliced: list[str]  # batch-only dims, then input dims
    win: dict[str, int]
    stride: dict[str, int]
    nwin: dict[str, int]
    group: dict[str, int]  # windows per batch along each sliced dim
    nbatch: dict[str, int]
    concat: bool
    input_dims: list[str]

    @property
    def n_batches(self) -> int:
        return int(np.prod([self.nbatch[d] for d in self.sliced]))

    def first_windows(self, i: int) -> dict[str, int]:
        """Index of the first window of batch ``i`` along each sliced dim
        (batches are numbered row-major over the sliced dims)."""
        out = {}
        for d in reversed(self.sliced):
            i, j = divmod(i, self.nbatch[d])
            out[d] = j * self.group[d]
        return out

    def window_slices(self, i: int) -> tuple[slice, ...]:
        """The region of the (non-concat) batch ``i``, in dataset dim order."""
        sl = [slice(None)] * len(self.dims)
        for d in reversed(self.sliced):
            i, j = divmod(i, self.nbatch[d])
            s = j * self.stride[d]
            sl[self.dims.index(d)] = slice(s, s + self.win[d])
        return tuple(sl)


def make_plan(
    dims: tuple[str, ...], shape: tuple[int, ...], kw: dict[str, Any]
) -> Plan:
    input_dims = dict(kw["input_dims"])
    overlap = dict(kw.get("input_overlap") or {})
    batch_dims = dict(kw.get("batch_dims") or {})
    concat = bool(kw.get("concat_input_dims", False))
    size = dict(zip(dims, shape, strict=True))
    sliced = [d for d in batch_dims if d not in input_dims] + list(input_dims)
    win, stride, nwin, group, nbatch = {}, {}, {}, {}, {}
    for d in sliced:
        w = input_dims.get(d, batch_dims.get(d))
        s = w - overlap.get(d, 0) if d in input_dims else w
        win[d], stride[d] = w, s
        nwin[d] = (size[d] - w) // s + 1
        if not concat or d not in input_dims:
            group[d] = 1
        elif d in batch_dims:
            group[d] = -(-batch_dims[d] // s)  # 0.4's rule: ceil(B / s) windows
        else:
            group[d] = nwin[d]
        nbatch[d] = nwin[d] // group[d]
    return Plan(
        dims, shape, sliced, win, stride, nwin, group, nbatch, concat, list(input_dims)
    )


def out_shape(plan: Plan) -> tuple[int, ...]:
    """Shape of one batch array, per docs/batching.md."""
    full = dict(zip(plan.dims, plan.shape, strict=True))
    ext = {d: plan.win.get(d, full[d]) for d in plan.dims}
    non_input = [d for d in plan.dims if d not in plan.input_dims]
    inputs = [ext[d] for d in plan.input_dims]
    if plan.concat:
        nwin = int(np.prod([plan.group[d] for d in plan.sliced]))
        if not non_input:
            return (nwin, *[ext[d] for d in plan.dims])
        return (nwin * int(np.prod([ext[d] for d in non_input])), *inputs)
    if len(non_input) < 2:
        return tuple(ext[d] for d in plan.dims)
    return (int(np.prod([ext[d] for d in non_input])), *inputs)


class Gatherer:
    """The practical in-memory limit: copy each batch's windows out of a numpy
    array into a preallocated buffer with one vectorised copy."""

    def __init__(self, plan: Plan, arr: np.ndarray) -> None:
        self.plan = plan
        self.arr = np.ascontiguousarray(arr)
        self.shape = out_shape(plan)
        p = plan
        ax = {d: i for i, d in enumerate(p.dims)}
        st = self.arr.strides
        full = dict(zip(p.dims, p.shape, strict=True))
        if p.concat:
            # all windows of the array as one strided view:
            # (win index per sliced dim..., within-window axis per dataset dim...)
            wshape = [p.nwin[d] for d in p.sliced]
            wstrides = [p.stride[d] * st[ax[d]] for d in p.sliced]
            ishape = [p.win.get(d, full[d]) for d in p.dims]
            view = np.lib.stride_tricks.as_strided(
                self.arr, (*wshape, *ishape), (*wstrides, *st), writeable=False
            )
            k = len(p.sliced)
            non_input = [d for d in p.dims if d not in p.input_dims]
            order = list(range(k))
            if non_input:
                order += [k + ax[d] for d in non_input] + [
                    k + ax[d] for d in p.input_dims
                ]
            else:
                order += [k + ax[d] for d in p.dims]
            self.view = view.transpose(order)
            self.vshape = (*[p.group[d] for d in p.sliced], *self.view.shape[k:])
        elif len([d for d in p.dims if d not in p.input_dims]) >= 2:
            raise NotImplementedError(
                "stacked non-concat layout: not used by any workload"
            )
        self.buf = np.empty(self.shape, dtype=self.arr.dtype)

    def gather(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        out = self.buf if out is None else out
        p = self.plan
        if p.concat:
            first = p.first_windows(i)
            sel = tuple(slice(first[d], first[d] + p.group[d]) for d in p.sliced)
            np.copyto(out.reshape(self.vshape), self.view[sel])
        else:
            np.copyto(out, self.arr[p.window_slices(i)])
        return out


class ChunkedGatherer:
    """Limit for chunked sources: get each time-chunk exactly once (zarr decode
    or dask compute), in order, and gather the batches from the chunks in
    memory. Only for non-concat plans whose source is chunked along axis 0."""

    def __init__(
        self,
        plan: Plan,
        nchunks: int,
        chunk_len: int,
        get_chunk: Callable[[int], np.ndarray],
    ) -> None:
        assert not plan.concat
        self.plan = plan
        self.get_chunk = get_chunk
        self.chunk_len = chunk_len
        self.nchunks = nchunks
        self.buf = np.empty(out_shape(plan), dtype=np.float32)
        self.cache: dict[int, np.ndarray] = {}

    def gather(self, i: int) -> np.ndarray:
        sl = self.plan.window_slices(i)
        t0, t1 = sl[0].start or 0, sl[0].stop
        if t1 is None:
            t1 = self.plan.shape[0]
        rest = sl[1:]
        c = self.chunk_len
        for k in [k for k in self.cache if (k + 1) * c <= t0]:
            del self.cache[k]  # in-order walk: chunks behind us are done
        pos = 0
        for k in range(t0 // c, (t1 - 1) // c + 1):
            if k not in self.cache:
                self.cache[k] = self.get_chunk(k)
            a, b = max(t0, k * c), min(t1, (k + 1) * c)
            np.copyto(
                self.buf[pos : pos + b - a],
                self.cache[k][(slice(a - k * c, b - k * c), *rest)],
            )
            pos += b - a
        return self.buf


def zarr_chunk_getter(data_dir: str) -> tuple[int, int, Callable[[int], np.ndarray]]:
    import zarr

    z = zarr.open_array(os.path.join(data_dir, "w2.zarr", "v"), mode="r")
    c = z.chunks[0]
    n = -(-z.shape[0] // c)
    return n, c, lambda k: z[k * c : (k + 1) * c]


def dask_chunk_getter(source: Any) -> tuple[int, int, Callable[[int], np.ndarray]]:
    darr = source.data
    c = darr.chunks[0][0]
    return darr.numblocks[0], c, lambda k: np.asarray(darr.blocks[k].compute())


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


def timed(
    epoch: Callable[[], Iterable[Any]],
    cap: float,
    min_time: float,
    n_per_epoch: int,
    single_epoch: bool = False,
    measure: Callable[[Any], int] = int,
) -> dict[str, Any]:
    """Run ``epoch()`` until one epoch is done and ``min_time`` has passed, or
    until ``cap`` seconds have passed. ``epoch()`` yields batches and
    ``measure(batch)`` materialises one and returns its byte count (the
    references yield byte counts directly).

    The batches are consumed by a plain ``for`` loop, as a training loop would:
    the loop variable holds the previous batch while the next one is made,
    and nothing else does (wrapping the library's iterator in another
    generator changes how the allocator recycles the batch buffers and can
    halve the measured speed of fresh-buffer paths).

    Throughput comes from the batches actually done, so a time-boxed run that
    stops mid-epoch still gives batches/s and GB/s.
    """
    n = nbytes = epochs = 0
    capped = False
    t0 = time.perf_counter()
    while True:
        for b in epoch():
            n += 1
            nbytes += measure(b)
            if time.perf_counter() - t0 > cap:
                capped = True
                break
        else:
            epochs += 1
        el = time.perf_counter() - t0
        if capped or single_epoch or el >= min_time or n == 0:
            break
    el = time.perf_counter() - t0
    return {
        "batches": n,
        "bytes": nbytes,
        "seconds": el,
        "epochs": epochs,
        "capped": capped,
        "n_per_epoch": n_per_epoch,
        "bps": n / el if el > 0 else float("nan"),
        "gbps": nbytes / el / 1e9 if el > 0 else float("nan"),
    }


def nbytes_of(x: Any) -> int:
    if isinstance(x, dict):
        return sum(int(v.nbytes) for v in x.values())
    return int(x.nbytes)


def materialise(batch: Any) -> int:
    """Turn an xarray batch into numpy and return its byte count."""
    import xarray as xr

    # isinstance, not hasattr(batch, "data_vars"): on a DataArray that probe goes
    # through xarray's attribute lookup of coordinate names and raises (about as
    # costly as building a small batch), which is harness time, not the library's
    if isinstance(batch, xr.Dataset):
        return sum(int(np.asarray(v.values).nbytes) for v in batch.data_vars.values())
    return int(np.asarray(batch.values).nbytes)


# --------------------------------------------------------------------------
# S1 ideal: decode every chunk once on all cores + gather the batches
# --------------------------------------------------------------------------


class S1Ideal:
    """The all-core decode-once ideal of an S1 epoch, in plain numpy.

    Every storage chunk's raw bytes are read from disk and zstd-decoded with
    numcodecs in a pool of one thread per core, straight into its place in one
    epoch buffer of the whole array (chunks along time only, so each is a
    contiguous slab). The batches are copied out of that buffer with one fancy
    index per batch (or per block of batches; a window row of 128 bytes is one
    element of a void dtype) into fresh arrays, in the order ``starts`` gives
    (ours' sample order, computed outside the timing). Three ways to overlap the
    decode and the gather (the report keeps the fastest as the ideal):

    - ``"pipelined"``: the chunks are submitted in the order the batches first
      need them, and the calling thread gathers each batch as soon as the chunks
      it needs are decoded (the decode of later chunks goes on meanwhile);
    - ``"all_cores"``: decode everything, then gather blocks of batches on every
      core (a few blocks in flight);
    - ``"hybrid"``: pipelined until the last chunk is decoded, then the rest of
      the epoch as ``"all_cores"``.

    ``starts`` is ``(t, y, x)``, each ``(n_batches, batch_size)``.
    """

    HOWS = ("pipelined", "all_cores", "hybrid")
    BLOCK = 16  # batches gathered by one task of the all-core gather (2 MiB)

    def __init__(
        self, data_dir: str, starts: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        import numcodecs

        self.root = os.path.join(data_dir, "w2.zarr", "v", "c")
        self.codec = numcodecs.Zstd()
        self.t, self.y, self.x = (np.ascontiguousarray(a, np.intp) for a in starts)
        self.n_batches, self.bs = self.t.shape
        c = ZARR_CHUNKS[0]
        self.nchunks = -(-W2_SHAPE[0] // c)
        self.cores = len(os.sched_getaffinity(0))
        # the chunks each batch needs, and the order they are first needed in
        self.needs = [np.unique(row // c).tolist() for row in self.t]
        order: dict[int, None] = {}
        for need in self.needs:
            order.update(dict.fromkeys(need))
        order.update(dict.fromkeys(range(self.nchunks)))  # an epoch reads them all
        self.order = list(order)
        self.item = np.dtype((np.void, 32 * 4))

    def _decode(self, big: np.ndarray, k: int) -> None:
        c = ZARR_CHUNKS[0]
        with open(os.path.join(self.root, str(k), "0", "0"), "rb") as f:
            raw = f.read()
        self.codec.decode(raw, out=big[k * c : (k + 1) * c])

    def _rows(self, big: np.ndarray) -> np.ndarray:
        """Every 32x32 window of ``big`` as 32 rows of one void element each."""
        nt, ny, nx = W2_SHAPE
        s = big.strides
        return np.ndarray(
            (nt, ny - 31, nx - 31, 32), self.item, big, 0, (s[0], s[1], s[2], s[1])
        )

    def _gather(self, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Batches ``lo .. hi - 1`` as one ``(hi - lo, batch, 32, 32)`` array."""
        out = np.empty((hi - lo, self.bs, 32, 32), np.float32)
        sel = slice(lo, hi)
        out.view(self.item)[..., 0][...] = rows[self.t[sel], self.y[sel], self.x[sel]]
        return out

    def _all_cores(self, pool: Any, rows: np.ndarray, first: int) -> Iterable[int]:
        """Batches ``first ..`` gathered in blocks on every core, in order."""
        from collections import deque

        n, step = self.n_batches, self.BLOCK
        blocks = iter(range(first, n, step))
        flight: deque[Any] = deque()
        for lo in itertools.islice(blocks, 2 * self.cores):
            flight.append(pool.submit(self._gather, rows, lo, min(lo + step, n)))
        while flight:
            block = flight.popleft().result()
            lo = next(blocks, None)
            if lo is not None:
                flight.append(pool.submit(self._gather, rows, lo, min(lo + step, n)))
            for b in block:
                yield b.nbytes

    def epoch(self, pool: Any, how: str) -> Iterable[int]:
        """One epoch; yields the byte count of each batch."""
        c = ZARR_CHUNKS[0]
        big = np.empty((self.nchunks * c, *W2_SHAPE[1:]), np.float32)
        rows = self._rows(big)
        if how == "all_cores":
            for _ in pool.map(lambda k: self._decode(big, k), self.order):
                pass
            yield from self._all_cores(pool, rows, 0)
            return
        futures = {k: pool.submit(self._decode, big, k) for k in self.order}
        last = futures[self.order[-1]]
        done: set[int] = set()
        for i in range(self.n_batches):
            if how == "hybrid" and last.done():
                for f in futures.values():
                    f.result()
                yield from self._all_cores(pool, rows, i)
                return
            for k in self.needs[i]:
                if k not in done:
                    futures[k].result()
                    done.add(k)
            yield self._gather(rows, i, i + 1)[0].nbytes
        for f in futures.values():
            f.result()

    def batches(self, pool: Any) -> np.ndarray:
        """Every batch of one epoch, ``(n_batches, batch, 32, 32)`` (the checks)."""
        c = ZARR_CHUNKS[0]
        big = np.empty((self.nchunks * c, *W2_SHAPE[1:]), np.float32)
        for _ in pool.map(lambda k: self._decode(big, k), range(self.nchunks)):
            pass
        return self._gather(self._rows(big), 0, self.n_batches)
