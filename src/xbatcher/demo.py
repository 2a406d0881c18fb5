"""A synthetic ERA5-like dataset and the end-to-end demo behind ``xbatcher demo``.

Everything is built in memory from a seed; nothing is downloaded. The fields are
*plausible* (a pole-to-equator temperature gradient, seasonal and diurnal cycles,
travelling pressure waves, jets and trade winds, plus noise) but they are not real
reanalysis data.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, TextIO, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from xbatcher.errors import OptionalDependencyError
from xbatcher.generator import BatchGenerator

__all__ = ["DemoStats", "make_era5_like", "run_demo"]

_T = TypeVar("_T")
_F32 = npt.NDArray[np.float32]

#: Default sizes of ``run_demo``: 1 degree grid, two years of 12-hourly fields
#: (about 1.5 GB of float32 over four variables, 10010 batches of 8 x 32 x 32).
DEFAULT_SIZES: dict[str, int] = {"time": 1460, "lat": 181, "lon": 360}

_VARIABLES: dict[str, dict[str, str]] = {
    "t2m": {
        "units": "K",
        "long_name": "2 metre temperature",
        "standard_name": "air_temperature",
    },
    "u10": {
        "units": "m s**-1",
        "long_name": "10 metre U wind component",
        "standard_name": "eastward_wind",
    },
    "v10": {
        "units": "m s**-1",
        "long_name": "10 metre V wind component",
        "standard_name": "northward_wind",
    },
    "msl": {
        "units": "Pa",
        "long_name": "Mean sea level pressure",
        "standard_name": "air_pressure_at_mean_sea_level",
    },
}


class DemoStats(TypedDict, total=False):
    """Statistics returned by :func:`run_demo` (the ``xarray_*`` keys only with
    ``xarray=True``)."""

    n_batches: int
    epochs: int
    batch_bytes: int
    dataset_bytes: int
    build_seconds: float
    seconds: float
    batches_per_s: float
    gb_per_s: float
    xarray_seconds: float
    xarray_batches_per_s: float
    xarray_gb_per_s: float


def _field(
    terms: Iterable[tuple[_F32, _F32, _F32]],
    noise: float,
    rng: np.random.Generator,
) -> _F32:
    """Sum of separable terms ``a(time) * b(lat) * c(lon)`` plus white noise.

    The smooth part is one matrix product ``(time, term) @ (term, lat * lon)``. The
    noise (uniform, standard deviation ``noise``; uniform draws are several times
    cheaper than Gaussian ones) is added in place a few time steps at a time, so memory
    stays at about one array per variable.
    """
    a, b, c = (np.stack(factors) for factors in zip(*terms, strict=True))
    n_time, n_lat, n_lon = a.shape[1], b.shape[1], c.shape[1]
    spatial = (b[:, :, None] * c[:, None, :]).reshape(len(a), n_lat * n_lon)
    out: _F32 = np.matmul(a.T, spatial).reshape(n_time, n_lat, n_lon)
    step = max(1, 2**20 // (n_lat * n_lon))
    buf = np.empty((step, n_lat, n_lon), dtype=np.float32)
    half_width = np.float32(noise * np.sqrt(3.0))  # uniform(-h, h) has std h / sqrt(3)
    for i in range(0, n_time, step):
        block = out[i : i + step]
        draw = buf[: len(block)]
        rng.random(out=draw, dtype=np.float32)
        draw -= np.float32(0.5)
        draw *= 2 * half_width
        block += draw
    return out


def make_era5_like(
    n_time: int = 365,
    n_lat: int = 181,
    n_lon: int = 360,
    seed: int = 0,
    *,
    freq: str = "12h",
    start: str = "2020-01-01",
) -> xr.Dataset:
    """Build a synthetic dataset shaped like ERA5 single-level reanalysis fields.

    Parameters
    ----------
    n_time : int, default 365
        Number of time steps.
    n_lat : int, default 181
        Number of latitudes, evenly spaced from 90 down to -90 (inclusive).
    n_lon : int, default 360
        Number of longitudes, evenly spaced over ``[0, 360)``.
    seed : int, default 0
        Seed of the noise; equal arguments give identical datasets.
    freq : str, default "12h"
        Time step, as a pandas frequency string (``"1h"``, ``"6h"``, ``"1D"``, ...).
    start : str, default "2020-01-01"
        First time stamp.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, lat, lon)``; float32 variables ``t2m`` (K), ``u10`` and ``v10``
        (m s**-1) and ``msl`` (Pa), each with ``units``, ``long_name`` and
        ``standard_name`` attributes; ``time`` is ``datetime64[ns]``, ``lat`` is
        descending and ``lon`` ascending, as in ERA5.

    Raises
    ------
    ValueError
        If a size is smaller than 1 (2 for ``n_lat``).

    Examples
    --------
    >>> from xbatcher.demo import make_era5_like
    >>> ds = make_era5_like(n_time=4, n_lat=19, n_lon=36)
    >>> dict(ds.sizes)
    {'time': 4, 'lat': 19, 'lon': 36}
    >>> float(ds.lat[0]), float(ds.lat[-1]), float(ds.lon[1])
    (90.0, -90.0, 10.0)
    >>> ds.t2m.dtype
    dtype('float32')
    """
    for name, value, low in (("n_time", n_time, 1), ("n_lat", n_lat, 2)):
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value}")
    if n_lon < 1:
        raise ValueError(f"n_lon must be an int >= 1; got {n_lon}")

    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=n_time, freq=freq).as_unit("ns")
    lat = np.linspace(90.0, -90.0, n_lat)
    lon = np.arange(n_lon) * (360.0 / n_lon)

    def f32(x: npt.ArrayLike) -> _F32:
        return np.asarray(x, dtype=np.float32)

    # time factors: seasonal and diurnal phase, travelling-wave phase
    t_days = (times - times[0]).total_seconds().to_numpy() / 86400.0
    doy = times.day_of_year.to_numpy() - 1.0
    seasonal = f32(np.cos(2 * np.pi * (doy - 15) / 365.25))  # +1 mid-January
    hours = (times - times.normalize()).total_seconds().to_numpy() / 3600.0
    diurnal_phase = 2 * np.pi * hours / 24.0
    peak = 2 * np.pi * 15.0 / 24.0
    wave_phase = 2 * np.pi * t_days / 5.0  # a pressure wave circles in 5 days
    ones_t = np.ones(n_time, dtype=np.float32)

    # latitude factors
    phi = np.deg2rad(lat)
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)

    # longitude factors
    lam = np.deg2rad(lon)
    ones_x = np.ones(n_lon, dtype=np.float32)
    k = 4  # zonal wave number of the travelling waves

    storm = cos_phi * np.sin(2 * phi) ** 2  # mid-latitude storm tracks
    t2m = _field(
        [
            (ones_t, f32(240.0 + 60.0 * cos_phi**2), ones_x),  # 300 K tropics
            (seasonal, f32(-15.0 * sin_phi), ones_x),  # NH winter in January
            # diurnal cycle, warmest at 15:00 local solar time (UTC + lon / 15 h):
            # cos(d + lam - p) = cos(d) cos(lam - p) - sin(d) sin(lam - p)
            (f32(np.cos(diurnal_phase)), f32(4.0 * cos_phi), f32(np.cos(lam - peak))),
            (f32(np.sin(diurnal_phase)), f32(4.0 * cos_phi), f32(-np.sin(lam - peak))),
            (ones_t, f32(3.0 * cos_phi), f32(np.cos(2 * lam))),  # land/sea contrast
        ],
        noise=1.0,
        rng=rng,
    )
    msl = _field(
        [
            (ones_t, f32(101325.0 - 800.0 * np.cos(4 * phi)), ones_x),  # highs at 30°
            (f32(np.cos(wave_phase)), f32(1500.0 * storm), f32(np.cos(k * lam))),
            (f32(np.sin(wave_phase)), f32(1500.0 * storm), f32(np.sin(k * lam))),
        ],
        noise=150.0,
        rng=rng,
    )
    u10 = _field(
        [
            # trade easterlies in the tropics, westerlies at mid-latitudes
            (ones_t, f32(-7.0 * np.cos(3 * phi) * cos_phi), ones_x),
            (f32(np.cos(wave_phase)), f32(-5.0 * storm), f32(np.sin(k * lam))),
            (f32(np.sin(wave_phase)), f32(5.0 * storm), f32(np.cos(k * lam))),
        ],
        noise=1.5,
        rng=rng,
    )
    v10 = _field(
        [
            (ones_t, f32(-2.0 * np.sin(6 * phi)), ones_x),  # Hadley-cell return flow
            (f32(np.cos(wave_phase)), f32(5.0 * storm), f32(-np.sin(k * lam))),
            (f32(np.sin(wave_phase)), f32(5.0 * storm), f32(np.cos(k * lam))),
        ],
        noise=1.5,
        rng=rng,
    )
    dims = ("time", "lat", "lon")
    data = {"t2m": t2m, "u10": u10, "v10": v10, "msl": msl}
    ds = xr.Dataset(
        {name: (dims, values, dict(_VARIABLES[name])) for name, values in data.items()},
        coords={
            "time": ("time", times.values, {"long_name": "time"}),
            "lat": (
                "lat",
                lat,
                {
                    "units": "degrees_north",
                    "long_name": "latitude",
                    "standard_name": "latitude",
                },
            ),
            "lon": (
                "lon",
                lon,
                {
                    "units": "degrees_east",
                    "long_name": "longitude",
                    "standard_name": "longitude",
                },
            ),
        },
        attrs={
            "title": "Synthetic ERA5-like single-level fields",
            "source": "xbatcher.demo.make_era5_like (synthetic, not reanalysis data)",
            "Conventions": "CF-1.8",
        },
    )
    return ds


def _payload_bytes(batch: object) -> int:
    """Bytes of data in one batch: an ndarray, a dict of ndarrays or an xarray object.

    Coordinates are not counted, so the array and xarray paths report the same volume.
    """
    if isinstance(batch, np.ndarray):
        return int(batch.nbytes)
    if isinstance(batch, xr.Dataset):
        return sum(int(v.nbytes) for v in batch.data_vars.values())
    if isinstance(batch, xr.DataArray):
        return int(batch.variable.nbytes)
    if isinstance(batch, Mapping):
        return sum(_payload_bytes(v) for v in batch.values())
    raise TypeError(f"unexpected batch type {type(batch).__name__}")


def _plain_progress(
    items: Iterable[_T], total: int, desc: str, file: TextIO
) -> Iterator[_T]:
    """A bare ``desc: i/total`` counter, redrawn at most 5 times a second."""
    last = 0.0
    i = 0
    for i, item in enumerate(items, 1):
        now = time.perf_counter()
        if now - last > 0.2:
            print(f"\r{desc}: {i}/{total}", end="", file=file, flush=True)
            last = now
        yield item
    print(f"\r{desc}: {i}/{total}", file=file, flush=True)


def _progress(
    items: Iterable[_T], total: int, desc: str, enabled: bool, file: TextIO
) -> Iterator[_T]:
    """Wrap ``items`` in a progress bar: tqdm if installed (``xbatcher[cli]``), else a
    plain counter; none when not ``enabled``."""
    if not enabled:
        return iter(items)
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, total, desc, file)
    bar: Iterator[_T] = tqdm(
        items, total=total, desc=desc, unit="batch", file=file, mininterval=0.2
    )
    return bar


def _describe(name: str, array: xr.DataArray) -> str:
    """One line: name, dims, dtype and shape of a variable."""
    dims = ", ".join(map(str, array.dims))
    return f"    {name:<8} ({dims})  {array.dtype}  {array.shape}"


def _print_layout(bgen: BatchGenerator, out: TextIO) -> None:
    """Print dims, shapes and dtypes of batch 0, as xarray and as arrays."""
    batch = bgen[0]
    kind = type(batch).__name__
    print(f"batch 0 as xarray.{kind}: dims {dict(batch.sizes)}", file=out)
    if isinstance(batch, xr.Dataset):
        for name, var in batch.data_vars.items():
            print(_describe(str(name), var), file=out)
    else:
        print(_describe(str(batch.name), batch), file=out)
    print(f"    coords: {', '.join(map(str, batch.coords))}", file=out)
    arrays = bgen.arrays[0]
    if isinstance(arrays, Mapping):
        shapes = {tuple(v.shape) for v in arrays.values()}
        dtypes = "/".join(sorted({str(v.dtype) for v in arrays.values()}))
        each = (
            f"each {shapes.pop()}"
            if len(shapes) == 1
            else str({str(k): v.shape for k, v in arrays.items()})
        )
        print(
            f"batch 0 as arrays (bgen.arrays[0]): dict of {len(arrays)} {dtypes} "
            f"ndarrays ({', '.join(map(str, arrays))}), {each}",
            file=out,
        )
    else:
        print(
            f"batch 0 as arrays (bgen.arrays[0]): ndarray {arrays.dtype} "
            f"{arrays.shape}",
            file=out,
        )


def _epochs(
    source: Iterable[object],
    n: int,
    epochs: int,
    label: str,
    progress: bool,
    out: TextIO,
    err: TextIO,
) -> tuple[int, int, float]:
    """Iterate ``source`` ``epochs`` times; return (batches, bytes, seconds)."""
    count = 0
    nbytes = 0
    out.flush()  # the report so far, before the progress bar starts on stderr
    start = time.perf_counter()
    for epoch in range(epochs):
        desc = f"{label} epoch {epoch + 1}/{epochs}"
        for batch in _progress(source, n, desc, progress, err):
            nbytes += _payload_bytes(batch)
            count += 1
    return count, nbytes, time.perf_counter() - start


def _report(label: str, count: int, nbytes: int, seconds: float, out: TextIO) -> None:
    rate = count / seconds if seconds > 0 else float("inf")
    gbps = nbytes / seconds / 1e9 if seconds > 0 else float("inf")
    print(
        f"{label}: {count} batches, {nbytes / 1e9:.3f} GB in {seconds:.2f} s -> "
        f"{rate:.1f} batches/s, {gbps:.3f} GB/s",
        file=out,
    )


ZARR_CHUNK_TIME = 24  # time steps per Zarr chunk in the demo store (~6 MB per chunk)


def _to_zarr_and_reopen(
    ds: xr.Dataset, store: str | os.PathLike[str], out: TextIO
) -> xr.Dataset:
    """Write ``ds`` to a Zarr store and open it again lazily (no dask)."""
    try:
        from zarr.codecs import ZstdCodec
    except ImportError:
        raise OptionalDependencyError(
            "the demo's Zarr store needs zarr: pip install 'xbatcher[zarr]'"
        ) from None
    chunks: dict[Hashable, int] = {
        "time": ZARR_CHUNK_TIME,
        "lat": ds.sizes["lat"],
        "lon": ds.sizes["lon"],
    }
    encoding = {
        name: {
            "chunks": tuple(chunks[d] for d in ds[name].dims),
            "compressors": (ZstdCodec(level=3),),
        }
        for name in ds.data_vars
    }
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's consolidated-metadata notice
        ds.to_zarr(store, mode="w", encoding=encoding, consolidated=False)
        lazy = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)
    stored = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
    print(
        f"zarr store: {os.fspath(store)} (zstd, chunks time={ZARR_CHUNK_TIME}), "
        f"{stored / 1e9:.2f} GB on disk, written in {time.perf_counter() - start:.1f} s; "
        "batches are read from it lazily",
        file=out,
    )
    return lazy


def run_demo(
    n_time: int = DEFAULT_SIZES["time"],
    n_lat: int = DEFAULT_SIZES["lat"],
    n_lon: int = DEFAULT_SIZES["lon"],
    *,
    input_dims: Mapping[str, int] | None = None,
    batch_dims: Mapping[str, int] | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    epochs: int = 1,
    xarray: bool = False,
    zarr_store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    file: TextIO | None = None,
) -> DemoStats:
    """Build a synthetic dataset, batch it and time epochs of the array fast path.

    Prints the dataset size, the layout of batch 0 (as xarray and as arrays) and, for
    each path timed, the number of batches, batches/s and GB/s (data variables only,
    decimal GB).

    Parameters
    ----------
    n_time, n_lat, n_lon : int
        Sizes of the dataset built by :func:`make_era5_like`.
    input_dims : mapping of str to int, optional
        Window size per dim; default ``{"lat": 32, "lon": 32}``.
    batch_dims : mapping of str to int, optional
        0.4-layout batch dims; default ``{"time": 8}``. Not used when ``batch_size``
        is given (then every time step is a separate sample).
    batch_size : int, optional
        Switch to sample-level batches of this many windows.
    shuffle : bool, default False
        Shuffle the order of batches (or samples with ``batch_size``): a full
        shuffle in memory, the chunk-aware shuffle (``shuffle="chunks"``) on a Zarr
        store.
    seed : int, default 0
        Seed of the dataset noise and of the shuffle.
    epochs : int, default 1
        Number of epochs timed on each path.
    xarray : bool, default False
        Also time the xarray (0.4-compatible) path, ``for batch in bgen``.
    zarr_store : path, optional
        Write the dataset to a Zarr store here (zstd, chunks of
        ``ZARR_CHUNK_TIME`` time steps; overwritten) and batch it lazily from disk
        (``xr.open_dataset(..., engine="zarr")``), as a dataset too big for memory
        would be. Needs the ``zarr`` extra.
    progress : bool, default True
        Show a progress bar on stderr: tqdm when installed (``xbatcher[cli]``), a
        plain counter otherwise.
    file : file-like, optional
        Where to print the report; defaults to ``sys.stdout``.

    Returns
    -------
    DemoStats
        ``n_batches`` (batches per epoch, as counted while iterating the array path),
        ``epochs``, ``batch_bytes`` (bytes per epoch), ``dataset_bytes``,
        ``build_seconds``, ``seconds``, ``batches_per_s``, ``gb_per_s`` and, with
        ``xarray=True``, the ``xarray_*`` timings.

    Raises
    ------
    ValueError
        If ``epochs`` is smaller than 1, or a size is invalid.

    Examples
    --------
    >>> import io
    >>> from xbatcher.demo import run_demo
    >>> stats = run_demo(16, 64, 64, progress=False, file=io.StringIO())
    >>> stats["n_batches"]  # 16 // 8 time blocks x 2 x 2 windows
    8
    """
    if epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs}")
    out = sys.stdout if file is None else file
    err = sys.stderr
    windows: dict[Hashable, int] = {"lat": 32, "lon": 32}
    if input_dims is not None:
        windows = dict(input_dims.items())
    blocks: dict[Hashable, int] = {"time": 8}
    if batch_dims is not None:
        blocks = dict(batch_dims.items())

    start = time.perf_counter()
    ds = make_era5_like(n_time, n_lat, n_lon, seed=seed)
    build_seconds = time.perf_counter() - start
    dataset_bytes = _payload_bytes(ds)
    sizes = " x ".join(f"{d}={n}" for d, n in ds.sizes.items())
    print(
        f"dataset: synthetic ERA5-like, {sizes}, {len(ds.data_vars)} float32 "
        f"variables ({', '.join(map(str, ds.data_vars))}), "
        f"{dataset_bytes / 1e9:.2f} GB in memory, built in {build_seconds:.1f} s",
        file=out,
    )

    if zarr_store is not None:
        ds = _to_zarr_and_reopen(ds, zarr_store, out)

    shuffle_seed = seed if shuffle else None  # a seed without shuffle warns
    order: bool | Literal["chunks"] = shuffle
    if shuffle and zarr_store is not None:
        order = "chunks"  # a full shuffle would decode chunks again and again
    if batch_size is None:
        bgen = BatchGenerator(
            ds,
            input_dims=windows,
            batch_dims=blocks,
            shuffle=order,
            seed=shuffle_seed,
        )
        spec = f"input_dims={windows}, batch_dims={blocks}"
    else:
        bgen = BatchGenerator(
            ds,
            input_dims=windows,
            batch_size=batch_size,
            shuffle=order,
            seed=shuffle_seed,
        )
        spec = f"input_dims={windows}, batch_size={batch_size}"
    n = len(bgen)
    print(f"BatchGenerator({spec}, shuffle={order!r}): {n} batches", file=out)
    _print_layout(bgen, out)

    count, nbytes, seconds = _epochs(
        bgen.arrays, n, epochs, "arrays", progress, out, err
    )
    _report("array fast path (bgen.arrays)", count, nbytes, seconds, out)
    stats: DemoStats = {
        "n_batches": count // epochs,
        "epochs": epochs,
        "batch_bytes": nbytes // epochs,
        "dataset_bytes": dataset_bytes,
        "build_seconds": build_seconds,
        "seconds": seconds,
        "batches_per_s": count / seconds if seconds > 0 else float("inf"),
        "gb_per_s": nbytes / seconds / 1e9 if seconds > 0 else float("inf"),
    }
    if xarray:
        x_count, x_bytes, x_seconds = _epochs(
            bgen, n, epochs, "xarray", progress, out, err
        )
        _report("xarray path (for batch in bgen)", x_count, x_bytes, x_seconds, out)
        stats["xarray_seconds"] = x_seconds
        stats["xarray_batches_per_s"] = (
            x_count / x_seconds if x_seconds > 0 else float("inf")
        )
        stats["xarray_gb_per_s"] = (
            x_bytes / x_seconds / 1e9 if x_seconds > 0 else float("inf")
        )
    return stats
