"""Warm-up (``bgen.cache_all``, ``xbatcher cache warm``) and several processes
filling one cache at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
from conftest import make_dataset, to_backend
from xbatcher.caches import BatchCache, ChunkCachedSource, decode, open_cache
from xbatcher.cli import main


def _lazy_store(tmp_path: Path) -> tuple[str, xr.Dataset]:
    path = tmp_path / "src.zarr"
    to_backend(make_dataset(), "zarr", path)
    return str(path), xr.open_dataset(
        path, engine="zarr", chunks=None, consolidated=False
    )


def test_cache_all_fills_the_batch_cache(tmp_path: Path) -> None:
    calls: list[int] = []

    def prep(batch: Any) -> Any:
        calls.append(1)
        return batch

    ds = make_dataset()
    url = f"file://{tmp_path}/b"
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 4}, cache=url, cache_preprocess=prep)
    counts = bgen.cache_all()
    assert counts["batches"] == counts["batches_built"] == len(bgen) == len(calls)
    assert bgen.cache_all()["batches_built"] == 0  # all there
    again = xb.BatchGenerator(
        ds, {"lat": 5, "lon": 4}, cache=url, cache_preprocess=prep
    )
    fresh = xb.BatchGenerator(ds, {"lat": 5, "lon": 4})
    for i in range(len(again)):
        xr.testing.assert_identical(again[i], fresh[i])
    assert len(calls) == len(bgen)  # every batch of the new generator was a hit


def test_cache_all_with_a_mutable_mapping() -> None:
    store: dict[str, Any] = {}
    bgen = xb.BatchGenerator(make_dataset(), {"lat": 5}, cache=store)
    assert bgen.cache_all()["batches_built"] == len(bgen)
    assert bgen.cache_all()["batches_built"] == 0
    assert "0/.zgroup" in store


def test_cache_all_fills_the_chunk_cache(tmp_path: Path) -> None:
    _, ds = _lazy_store(tmp_path)
    url = str(tmp_path / "chunks")
    bgen = xb.BatchGenerator(ds, {"lat": 5}, batch_size=4, chunk_cache=url)
    counts = bgen.cache_all()
    nchunks = sum(int(np.prod(s.nchunks)) for s in bgen.engine.sources.values())
    assert counts["chunks"] == counts["chunks_decoded"] == nchunks
    assert bgen.cache_all()["chunks_decoded"] == 0
    later = xb.BatchGenerator(
        ds, {"lat": 3}, batch_size=4, shuffle=True, chunk_cache=url
    )
    decoded = [0]
    for src in later.engine.sources.values():
        assert isinstance(src, ChunkCachedSource)
        src.inner.submit_chunk = lambda *a: decoded.__setitem__(0, 1)  # type: ignore[method-assign]
        src.inner.read_chunks = lambda *a: decoded.__setitem__(0, 1)  # type: ignore[method-assign]
    fresh = xb.BatchGenerator(
        make_dataset(), {"lat": 3}, batch_size=4, shuffle=True, seed=later.seed
    )
    for i in range(len(later)):
        np.testing.assert_array_equal(later.arrays[i]["air"], fresh.arrays[i]["air"])
    assert decoded[0] == 0


def test_cache_all_progress_bars(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    bgen = xb.BatchGenerator(make_dataset(), {"lat": 5}, cache="memory://")
    bgen.cache_all(progress=True)
    assert f"{len(bgen)}/{len(bgen)}" in capsys.readouterr().err


def test_cache_all_without_caches_says_what_to_pass() -> None:
    bgen = xb.BatchGenerator(make_dataset(), {"lat": 5})
    with pytest.raises(ValueError, match="neither cache= nor chunk_cache="):
        bgen.cache_all()


def test_cli_cache_warm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, ds = _lazy_store(tmp_path)
    batches, chunks = f"file://{tmp_path}/b", f"file://{tmp_path}/c"
    argv = ["cache", "warm", path, "--input-dims", "lat=5,lon=4", "--batch-size", "6"]
    argv += ["--cache", batches, "--chunk-cache", chunks, "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 4}, batch_size=6, cache=batches)
    n = len(bgen)
    assert f"batches: {n} ({n} built)" in out and "chunks: 32 (32 decoded)" in out
    assert main(argv) == 0
    assert f"chunks: 32 (0 decoded), batches: {n} (0 built)" in capsys.readouterr().out
    fresh = xb.BatchGenerator(make_dataset(), {"lat": 5, "lon": 4}, batch_size=6)
    for i in range(len(bgen)):
        xr.testing.assert_identical(bgen[i], fresh[i])
    assert isinstance(bgen._batch_cache, BatchCache)
    assert bgen._batch_cache.cache.stats()["misses"] == 0


def test_cli_cache_warm_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _lazy_store(tmp_path)
    assert main(["cache", "warm", path, "--input-dims", "lat=5"]) == 1
    assert "needs --cache URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cache", "warm", path, "--input-dims", "lat"])
    assert "expected DIM=N" in capsys.readouterr().err


WORKER = """
import hashlib, sys, xarray as xr, xbatcher as xb
url, chunk_url, store = sys.argv[1:4]
built = []
def count(batch):
    built.append(1)
    return batch
ds = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)
bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, batch_size=5, cache=url,
                         chunk_cache=chunk_url, cache_preprocess=count)
bgen.cache_all()
h = hashlib.sha256()
for i in range(len(bgen)):
    h.update(bgen[i]["air"].values.tobytes())
print(h.hexdigest(), len(built))
"""


@pytest.mark.parametrize("backend", ["dir", "redis"])
def test_four_processes_fill_one_cache_at_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store, _ = _lazy_store(tmp_path)
    if backend == "dir":
        url, chunk_url = f"file://{tmp_path}/b", f"file://{tmp_path}/c"
    else:
        base = request.getfixturevalue("redis_url")
        url, chunk_url = f"{base}?prefix=mp-b:", f"{base}?prefix=mp-c:"
        open_cache(url).clear()
        open_cache(chunk_url).clear()
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    src = str(Path(xb.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, chunk_url, store],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    fresh = xb.BatchGenerator(make_dataset(), {"lat": 3, "lon": 4}, batch_size=5)
    h = hashlib.sha256()
    for i in range(len(fresh)):
        h.update(fresh[i]["air"].values.tobytes())
    assert {o[0].split()[0] for o in outs} == {h.hexdigest()}
    # leases: each batch was built by one process only
    assert sum(int(o[0].split()[1]) for o in outs) == len(fresh)
    # every entry is whole: it decodes (checksum included), one per batch
    if backend == "dir":
        raws = [
            p.read_bytes()
            for p in (tmp_path / "b").rglob("*")
            if p.is_file() and ".leases" not in p.parts
        ]
    else:
        client = open_cache(url).client  # type: ignore[attr-defined]
        names = [n for n in client.scan_iter(match="mp-b:*") if b"lease:" not in n]
        raws = [client.get(n) for n in names]
    batches = [decode(raw) for raw in raws]
    assert len(batches) == len(fresh)
    by_first = {int(b["sample"].values[0]): b for b in batches}
    for i in range(len(fresh)):
        want = fresh[i]
        xr.testing.assert_identical(by_first[int(want["sample"].values[0])], want)
    if backend == "dir":
        leftovers = [p for p in tmp_path.rglob(".tmp-*")]
        assert leftovers == []


def test_cache_all_on_a_dask_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    _, ds = _lazy_store(tmp_path)
    batches, chunks = f"file://{tmp_path}/b", f"file://{tmp_path}/c"
    params: dict[str, Any] = dict(input_dims={"lat": 5, "lon": 4}, batch_size=6)
    bgen = xb.BatchGenerator(ds, cache=batches, chunk_cache=chunks, **params)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        counts = bgen.cache_all(client=client)
    nchunks = sum(int(np.prod(s.nchunks)) for s in bgen.engine.sources.values())
    assert counts == {
        "chunks": nchunks,
        "chunks_decoded": nchunks,
        "batches": len(bgen),
        "batches_built": len(bgen),
    }
    again = bgen.cache_all()  # everything is there now
    assert again["chunks_decoded"] == 0 and again["batches_built"] == 0
    fresh = xb.BatchGenerator(make_dataset(), **params)
    for i in range(len(bgen)):
        xr.testing.assert_identical(bgen[i], fresh[i])


def test_cache_all_on_a_cluster_refuses_a_per_process_cache() -> None:
    bgen = xb.BatchGenerator(make_dataset(), {"lat": 5}, cache="memory://")
    with pytest.raises(ValueError, match="shared across processes; got MemoryCache"):
        bgen.cache_all(client=object())
