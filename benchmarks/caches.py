"""Cache benchmarks (issue 15): batch-level and chunk-level reuse.

    python benchmarks/caches.py [--repeats 3] [--time 48] [--latency 0.03]

Batch level (W2a-like: DataArray time x 256 x 256 float32, input 32x32,
batch_dims time=8; W4z-like: the same from a lazily opened Zarr store): the second,
in-order epoch through each backend (memory, local dir, Redis when
/usr/bin/redis-server exists) against the first epoch read from the source, and
memory-cache hits against the numpy gather (``bgen.arrays``).

Chunk level: a shuffled sample epoch (batch_size 64) over a Zarr store served by a
moto S3 server (in a child process) with ``--latency`` seconds added to every
request (a zarr ``WrapperStore`` that sleeps before each get, concurrent requests
overlapping as on object storage). Compared: the epoch straight from S3, the
second epoch through a local-disk chunk cache filled by the first, and the same
epoch from a local copy of the store. Each epoch uses a new generator (an empty
in-memory chunk cache), as a new process would.

Small data (default 48 time steps, 12 MiB) keeps a run to a minute or two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

import xbatcher as xb
from xbatcher.caches import open_cache

warnings.filterwarnings("ignore")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_da(n_time: int) -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(
        rng.random((n_time, 256, 256), dtype=np.float32),
        dims=("time", "lat", "lon"),
        coords={
            "time": np.datetime64("2000-01-01", "h")
            + np.arange(n_time).astype("timedelta64[h]"),
            "lat": np.linspace(-90, 90, 256),
            "lon": np.linspace(0, 360, 256, endpoint=False),
        },
        name="v",
    )


def epoch_time(make: Callable[[], Any], consume: Callable[[Any], None]) -> float:
    obj = make()
    t0 = time.perf_counter()
    consume(obj)
    return time.perf_counter() - t0


def xarray_epoch(bgen: Any) -> None:
    for b in bgen:
        np.asarray(b.values)


def arrays_epoch(bgen: Any) -> None:
    for b in bgen.arrays:
        np.asarray(b)


def median(values: list[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------- batch
def batch_level(args: argparse.Namespace, tmp: str) -> list[str]:
    da = make_da(args.time)
    store = os.path.join(tmp, "w4.zarr")
    da.to_dataset().to_zarr(
        store, mode="w", consolidated=False, encoding={"v": {"chunks": (8, 256, 256)}}
    )
    lazy = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)["v"]
    params: dict[str, Any] = {
        "input_dims": {"lat": 32, "lon": 32},
        "batch_dims": {"time": 8},
    }
    backends: dict[str, Callable[[str], Any]] = {
        "memory": lambda tag: open_cache("memory://?max_bytes=4GB"),
        "dir": lambda tag: open_cache(os.path.join(tmp, f"batches-{tag}")),
    }
    redis_proc = None
    if os.path.exists("/usr/bin/redis-server"):
        port = _free_port()
        redis_proc = subprocess.Popen(
            [
                *("/usr/bin/redis-server", "--port", str(port), "--save", ""),
                *("--appendonly", "no", "--bind", "127.0.0.1"),
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        backends["redis"] = lambda tag: open_cache(
            f"redis://127.0.0.1:{port}/0?prefix={tag}:"
        )
    lines = []
    try:
        for wname, data in (("W2a", da), ("W4z", lazy)):
            source = [
                epoch_time(lambda d=data: xb.BatchGenerator(d, **params), xarray_epoch)
                for _ in range(args.repeats)
            ]
            gather = [
                epoch_time(lambda d=data: xb.BatchGenerator(d, **params), arrays_epoch)
                for _ in range(args.repeats)
            ]
            lines.append(
                f"{wname} first epoch from source: {median(source):.3f} s; numpy "
                f"gather (bgen.arrays): {median(gather):.3f} s"
            )
            for name, opener in backends.items():
                tag = f"{wname}-{name}"
                cache = opener(tag)
                xarray_epoch(xb.BatchGenerator(data, cache=cache, **params))  # fill
                hits = [
                    epoch_time(
                        lambda d=data, c=cache: xb.BatchGenerator(d, cache=c, **params),
                        xarray_epoch,
                    )
                    for _ in range(args.repeats)
                ]
                speed = median(source) / median(hits)
                extra = ""
                if name == "memory":
                    extra = f"; vs numpy gather {median(gather) / median(hits):.2f}x"
                lines.append(
                    f"  {wname} second epoch via {name}: {median(hits):.3f} s "
                    f"({speed:.2f}x the first epoch{extra})"
                )
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
    return lines


# --------------------------------------------------------------------------- chunk
def _latency_store(store: Any, latency: float) -> Any:
    from zarr.storage import WrapperStore

    class SlowStore(WrapperStore[Any]):
        """Every get waits ``latency`` seconds first (an object store's latency)."""

        async def get(self, *a: Any, **k: Any) -> Any:
            await asyncio.sleep(latency)
            return await self._store.get(*a, **k)

        async def get_partial_values(self, *a: Any, **k: Any) -> Any:
            await asyncio.sleep(latency)
            return await self._store.get_partial_values(*a, **k)

    return SlowStore(store)


def chunk_level(args: argparse.Namespace, tmp: str) -> list[str]:
    import s3fs
    import zarr
    from zarr.storage import FsspecStore

    port = _free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        opts = {
            "key": "k",
            "secret": "s",
            "client_kwargs": {"endpoint_url": url, "region_name": "eu-west-1"},
            "asynchronous": True,
        }
        local = os.path.join(tmp, "local.zarr")
        da = make_da(args.time)
        da.to_dataset().to_zarr(
            local, mode="w", consolidated=True, encoding={"v": {"chunks": (4, 64, 64)}}
        )
        fs = s3fs.S3FileSystem(**{**opts, "asynchronous": False})
        fs.mkdir("bench")
        fs.put(local, "bench/data.zarr", recursive=True)

        def open_s3() -> xr.DataArray:
            afs = s3fs.S3FileSystem(**opts)
            store = FsspecStore(afs, path="bench/data.zarr", read_only=True)
            slow = _latency_store(store, args.latency)
            group = zarr.open_group(slow, mode="r")
            del group
            return xr.open_dataset(slow, engine="zarr", chunks=None, consolidated=True)[
                "v"
            ]

        def open_local() -> xr.DataArray:
            return xr.open_dataset(local, engine="zarr", chunks=None)["v"]

        params: dict[str, Any] = {
            "input_dims": {"lat": 32, "lon": 32},
            "batch_size": 64,
            "shuffle": True,
        }
        cache_dir = os.path.join(tmp, "chunks")
        # epoch 1 fills the local-disk chunk cache
        xarray_epoch(
            xb.BatchGenerator(open_s3(), chunk_cache=cache_dir, seed=0, **params)
        )
        s3: list[float] = []
        cached: list[float] = []
        copy: list[float] = []
        for r in range(args.repeats):
            s3.append(
                epoch_time(
                    lambda r=r: xb.BatchGenerator(open_s3(), seed=r + 1, **params),
                    arrays_epoch,
                )
            )
            cached.append(
                epoch_time(
                    lambda r=r: xb.BatchGenerator(
                        open_s3(), chunk_cache=cache_dir, seed=r + 1, **params
                    ),
                    arrays_epoch,
                )
            )
            copy.append(
                epoch_time(
                    lambda r=r: xb.BatchGenerator(open_local(), seed=r + 1, **params),
                    arrays_epoch,
                )
            )
        nchunks = (args.time // 4) * 16
        return [
            f"chunk level, shuffled epoch, {nchunks} chunks of 64 KiB, "
            f"{args.latency * 1000:.0f} ms per S3 request:",
            f"  straight from S3: {median(s3):.3f} s",
            f"  via local-disk chunk cache: {median(cached):.3f} s "
            f"({median(s3) / median(cached):.2f}x faster than S3; "
            f"{median(copy) / median(cached):.2f}x the local copy)",
            f"  local copy of the store: {median(copy):.3f} s",
        ]
    finally:
        moto.terminate()
        moto.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--only", choices=["batch", "chunk"], default=None)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="xb-cache-bench-")
    try:
        if args.only in (None, "batch"):
            print("\n".join(batch_level(args, tmp)), flush=True)
        if args.only in (None, "chunk"):
            print("\n".join(chunk_level(args, tmp)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
