"""Shared fixtures: small datasets with real coords on every backend, and schemas."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import assume
from hypothesis import strategies as st

from reference import sliced_dims, window_starts

BACKENDS = ("numpy", "dask", "zarr", "zarr-dask")
DIMS = ("time", "level", "lat", "lon")
SHAPE = (6, 3, 10, 12)


# --------------------------------------------------------------------------- data
def make_dataset(
    shape: tuple[int, ...] = SHAPE, dims: tuple[str, ...] = DIMS
) -> xr.Dataset:
    """A Dataset with two variables whose values encode their position.

    ``air`` holds the flat (row-major) index of each point as float64 and ``mask``
    its negative as int32, so every batch can be traced back to its window. Coords:
    datetime64 ``time``, integer ``level``, float ``lat``/``lon`` index coords, a 2-D
    non-index coord ``area(lat, lon)`` and a 1-D non-index coord ``doy(time)``.
    """
    sizes = dict(zip(dims, shape, strict=True))
    flat = np.arange(math.prod(shape)).reshape(shape)
    coords: dict[str, Any] = {}
    for d, n in sizes.items():
        if d == "time":
            coords[d] = (
                "time",
                pd.date_range("2000-01-01", periods=n, freq="D").values.astype(
                    "datetime64[ns]"
                ),
                {"long_name": "time"},
            )
        elif d == "level":
            coords[d] = (
                "level",
                np.arange(n, dtype=np.int64) * 100 + 100,
                {"units": "hPa"},
            )
        else:
            coords[d] = (
                d,
                np.round(np.linspace(-30.0, 30.0, n), 3)
                + (0.25 if d == "lon" else 0.0),
                {"units": "degrees"},
            )
    if "lat" in sizes and "lon" in sizes:
        area = np.cos(np.deg2rad(coords["lat"][1]))[:, None] * np.ones(sizes["lon"])
        coords["area"] = (("lat", "lon"), area, {"units": "m2"})
    if "time" in sizes:
        coords["doy"] = ("time", np.arange(sizes["time"], dtype=np.int64) + 1)
    return xr.Dataset(
        {
            "air": (
                dims,
                flat.astype(np.float64),
                {"units": "K", "long_name": "air temperature"},
            ),
            "mask": (dims, (-flat).astype(np.int32), {"flag": "negated position"}),
        },
        coords=coords,
        attrs={"title": "xbatcher test data", "source": "conftest"},
    )


def make_dataarray(
    shape: tuple[int, ...] = SHAPE, dims: tuple[str, ...] = DIMS
) -> xr.DataArray:
    """The ``air`` variable of :func:`make_dataset` (keeps its coords and attrs)."""
    return make_dataset(shape, dims)["air"]


def positional(
    sizes: dict[str, int], kind: str = "DataArray"
) -> xr.Dataset | xr.DataArray:
    """Data over ``sizes`` whose value is the flat index; float index coords."""
    shape = tuple(sizes.values())
    flat = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    coords = {
        d: (d, np.arange(n) * 0.5 + 10.0 * (i + 1))
        for i, (d, n) in enumerate(sizes.items())
    }
    da = xr.DataArray(
        flat, dims=tuple(sizes), coords=coords, name="v", attrs={"units": "1"}
    )
    if kind == "DataArray":
        return da
    return xr.Dataset(
        {"v": da, "w": (-da).astype(np.float32)}, attrs={"title": "positional"}
    )


def to_backend(
    obj: xr.Dataset | xr.DataArray, backend: str, path: Path
) -> xr.Dataset | xr.DataArray:
    """The same data, held in memory, in dask, or in a Zarr store on disk.

    ``zarr`` reopens the store lazily without dask (``chunks=None``); ``zarr-dask``
    reopens it with ``xr.open_zarr`` (dask arrays, one per storage chunk).
    """
    if backend == "numpy":
        return obj
    chunks = {d: max(1, -(-n // 2)) for d, n in obj.sizes.items()}
    if backend == "dask":
        return obj.chunk(chunks)
    name = obj.name if isinstance(obj, xr.DataArray) else None
    ds = obj.to_dataset() if isinstance(obj, xr.DataArray) else obj
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 consolidated-metadata notice
        ds.chunk(chunks).to_zarr(path, mode="w", consolidated=False)
        if backend == "zarr":
            out = xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False)
        elif backend == "zarr-dask":
            out = xr.open_zarr(path, consolidated=False)
        else:
            raise ValueError(backend)
    return out[name] if name is not None else out


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def as_backend(backend: str, tmp_path: Path) -> Callable[[Any], Any]:
    """Function putting an xarray object on the current backend."""
    counter = itertools.count()
    return lambda obj: to_backend(obj, backend, tmp_path / f"store{next(counter)}.zarr")


@pytest.fixture(params=["DataArray", "Dataset"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(kind: str, as_backend: Callable[[Any], Any]) -> xr.Dataset | xr.DataArray:
    """The standard test data, as DataArray or Dataset, on every backend."""
    return as_backend(make_dataarray() if kind == "DataArray" else make_dataset())


# --------------------------------------------------------------------------- processes
@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python ARGS...`` in a child process that imports this same xbatcher
    (installed or from ``src/``); returns the completed process (text output)."""
    import xbatcher

    root = str(Path(xbatcher.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )

    return run


# --------------------------------------------------------------------------- services
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[dict[str, Any]]:
    """A real S3 endpoint over HTTP: moto's server in a child process.

    Yields fsspec ``storage_options`` for s3fs pointing at it (an empty bucket
    ``xbatcher-test`` exists). Skips only where moto's server or s3fs is missing;
    the ``test`` extra installs both.
    """
    if (
        importlib.util.find_spec("moto") is None
        or importlib.util.find_spec("s3fs") is None
    ):
        reason = "moto[server] and s3fs are not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):  # CI installs them: a skip there would hide a gap
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": url, "region_name": "eu-west-1"},
        }
        import s3fs

        s3fs.S3FileSystem(**options).mkdir("xbatcher-test")
        yield options
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- schemas
DIM_POOL = ("t", "z", "y", "x")


def count_windows(sizes: dict[str, int], params: dict[str, Any]) -> int:
    """Number of windows over the sliced dims (cheap arithmetic)."""
    input_dims, batch_dims = params["input_dims"], params.get("batch_dims") or {}
    overlap = params.get("input_overlap") or {}
    total = 1
    for d in sliced_dims(input_dims, batch_dims):
        w = input_dims.get(d, batch_dims.get(d))
        total *= len(
            window_starts(
                sizes[d], w, overlap.get(d, 0), params.get("keep_remainder", False)
            )
        )
    return total


@st.composite
def schemas(
    draw: st.DrawFn, *, sample_mode: bool = False, max_windows: int = 40
) -> tuple[dict[str, int], dict[str, Any]]:
    """A random valid schema over a random dataset shape.

    Returns ``(sizes, params)``: 2-4 dims of size 1..20; windows within sizes;
    overlaps < window (also on batch-only dims); optional batch_dims (an input dim in
    batch_dims gets a span >= its window); concat on/off; keep_remainder on/off.
    ``params`` holds BatchGenerator keyword arguments.
    """
    ndim = draw(st.integers(2, 4))
    dims = DIM_POOL[-ndim:]
    sizes = {d: draw(st.integers(1, 20), label=f"size[{d}]") for d in dims}
    n_input = draw(st.integers(1, ndim))
    input_names = draw(st.permutations(dims))[:n_input]
    input_dims = {
        d: draw(st.integers(1, sizes[d]), label=f"window[{d}]") for d in input_names
    }
    overlap = {}
    for d in input_names:
        if input_dims[d] > 1 and draw(st.booleans()):
            overlap[d] = draw(st.integers(0, input_dims[d] - 1))
    batch_dims: dict[str, int] = {}
    if draw(st.booleans()):
        for d in draw(st.permutations(dims)):
            if not draw(st.booleans()):
                continue
            batch_dims[d] = draw(st.integers(input_dims.get(d, 1), sizes[d]))
            if d not in input_dims and batch_dims[d] > 1 and draw(st.booleans()):
                overlap[d] = draw(st.integers(0, batch_dims[d] - 1))
    params: dict[str, Any] = {
        "input_dims": input_dims,
        "input_overlap": overlap or None,
        "batch_dims": batch_dims or None,
        "concat_input_dims": False if sample_mode else draw(st.booleans()),
        "keep_remainder": draw(st.booleans()),
    }
    assume(count_windows(sizes, params) <= max_windows)
    return sizes, params


# --------------------------------------------------------------------------- xbatcher 0.4
# The 0.4.0 wheel: its tests run against us (test_compat04.py) and its code is the
# other side of the differential tests (test_differential04.py).
VERSION_04 = "0.4.0"
WHEEL = f"xbatcher-{VERSION_04}-py3-none-any.whl"
WHEEL_SHA256 = "a52dfa4e772c83f7a1937261c9a51cba656edefd09f5ffd780f62da2ad0dbea2"
IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where everything the tests need is installed."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: this must not be skipped)")
    pytest.skip(reason)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_dir(config: pytest.Config) -> Path:
    """The pytest cache's folder for the wheel, or ~/.cache/xbatcher-tests."""
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir(f"xbatcher-{VERSION_04}"))
    path = Path.home() / ".cache" / "xbatcher-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def wheel_04(pytestconfig: pytest.Config) -> Path:
    """The xbatcher 0.4.0 wheel (0.4's code and its test suite), downloaded once with
    pip and checked against its published sha256."""
    folder = _cache_dir(pytestconfig)
    wheel = folder / WHEEL
    if not (wheel.is_file() and _sha256(wheel) == WHEEL_SHA256):
        cmd = [sys.executable, "-m", "pip", "download", f"xbatcher=={VERSION_04}"]
        cmd += ["--no-deps", "--only-binary=:all:", "--dest", str(folder)]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=300, check=False
            )
        except subprocess.TimeoutExpired:
            unavailable(f"pip download xbatcher=={VERSION_04} timed out after 300 s")
        if done.returncode != 0 or not wheel.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            unavailable(
                f"could not download the xbatcher {VERSION_04} wheel with pip "
                f"(exit {done.returncode}): {' | '.join(tail)}"
            )
    digest = _sha256(wheel)
    assert digest == WHEEL_SHA256, (
        f"{wheel} has sha256 {digest}, not the published {WHEEL_SHA256}; delete it"
    )
    return wheel


# --------------------------------------------------------------------------- dask cluster
@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A real ``distributed`` cluster: a ``LocalCluster`` of 2 worker processes
    (1 thread, 1 GiB each), one per test module (starting one takes seconds).
    Tests that kill a worker wait for its nanny to restart it."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="1GiB",
            dashboard_address=None,
        )
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


# --------------------------------------------------------------------------- caches
REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """A real ``redis-server`` child process on a free port (no persistence)."""

    def __init__(self, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", *self.extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _need_redis() -> None:
    if not os.path.exists(REDIS_SERVER):
        unavailable(f"{REDIS_SERVER} is missing (apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        unavailable('the redis client is missing (pip install "xbatcher[redis]")')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a real redis-server started for the session (skipped, with the
    reason, only where the binary or the client is missing; failed in CI)."""
    _need_redis()
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own (it may kill and restart it)."""
    _need_redis()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["memory", "dir", "s3", "redis"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A function opening the same (fresh) cache again, as another process would:
    one per backend (memory, a local folder, S3 through moto, a real Redis)."""
    import uuid

    from xbatcher.caches import MemoryCache, open_cache

    name = uuid.uuid4().hex[:8]
    if request.param == "memory":
        mem = MemoryCache("64MB")
        return lambda: mem
    if request.param == "dir":
        return lambda: open_cache(f"file://{tmp_path}/c")
    if request.param == "s3":
        opts = request.getfixturevalue("s3_endpoint")
        return lambda: open_cache(f"s3://xbatcher-test/{name}", storage_options=opts)
    url = request.getfixturevalue("redis_url")
    return lambda: open_cache(f"{url}?prefix={name}:")


def count_source_reads(bgen: Any, strict: bool = True) -> list[int]:
    """Count the chunks the original sources under ``chunk_cache=`` decode from now
    on (``[n]``, updated in place). ``strict``: every source of ``bgen`` must be
    wrapped by the chunk cache; else in-memory (unwrapped) sources are skipped."""
    from xbatcher.caches import ChunkCachedSource

    count = [0]
    for src in bgen.engine.sources.values():
        if not isinstance(src, ChunkCachedSource):
            assert not strict, f"{src!r} is not read through the chunk cache"
            continue
        inner = src.inner
        read_chunks, submit = inner.read_chunks, inner.submit_chunk

        def counted_read(ids: Any, *args: Any, _f: Any = read_chunks) -> Any:
            count[0] += len(ids)
            return _f(ids, *args)

        def counted_submit(cid: Any, *args: Any, _f: Any = submit) -> Any:
            count[0] += 1
            return _f(cid, *args)

        inner.read_chunks = counted_read
        inner.submit_chunk = counted_submit
    return count


# --------------------------------------------------------------------------- dask chunks
class ChunkCounter:
    """A dask array that records which of its chunks get computed."""

    def __init__(self, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
        self.lock = threading.Lock()
        self.computed: list[tuple[int, ...]] = []
        self.values = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
        base = dsa.from_array(self.values, chunks=chunks)
        self.array = base.map_blocks(self._record, dtype=np.float64)
        self.chunks = chunks

    def _record(self, block: np.ndarray, block_info: Any = None) -> np.ndarray:
        if block_info is not None and None in block_info:
            with self.lock:
                self.computed.append(tuple(block_info[None]["chunk-location"]))
        return block

    def needed(self, region: dict[int, tuple[int, int]]) -> set[tuple[int, ...]]:
        """Chunks that overlap ``{axis: (start, stop)}`` (other axes whole)."""
        ranges = []
        for axis, (n, c) in enumerate(zip(self.array.shape, self.chunks, strict=True)):
            lo, hi = region.get(axis, (0, n))
            ranges.append(range(lo // c, (hi - 1) // c + 1))
        return set(itertools.product(*ranges))

    def all_chunks(self) -> set[tuple[int, ...]]:
        return self.needed({})


def assert_batches_equal(got: list[Any], want: list[Any]) -> None:
    """Two lists of ``{name: array}`` batches hold the same keys, values and dtypes."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            np.testing.assert_array_equal(g[k], w[k])
            assert g[k].dtype == w[k].dtype
