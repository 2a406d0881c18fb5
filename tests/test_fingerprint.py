"""The resume fingerprint covers the data (a bounded sample of it), not its path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
from xbatcher.errors import StateError
from xbatcher.generator import source_fingerprint

pytest.importorskip("zarr")


def make(values_offset: float = 0.0) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {"v": (("time", "x"), rng.random((40, 30)) + values_offset)},
        coords={"time": np.arange(40), "x": np.arange(30) * 0.5},
    )


def open_store(path: Path, how: str) -> xr.Dataset:
    if how == "lazy":
        return xr.open_dataset(path, engine="zarr", chunks=None)
    return xr.open_zarr(path)


def state_after_two(ds: xr.Dataset) -> dict:
    bgen = xb.BatchGenerator(ds, {"x": 5}, batch_size=8, shuffle=True, seed=1)
    it = iter(bgen)
    next(it), next(it)
    return bgen.state_dict()


@pytest.mark.parametrize("how", ["lazy", "dask"])
def test_copy_at_another_path_resumes(tmp_path: Path, how: str) -> None:
    make().chunk(time=10).to_zarr(tmp_path / "a.zarr")
    shutil.copytree(tmp_path / "a.zarr", tmp_path / "b.zarr")
    state = state_after_two(open_store(tmp_path / "a.zarr", how))
    copy = xb.BatchGenerator(
        open_store(tmp_path / "b.zarr", how),
        {"x": 5},
        batch_size=8,
        shuffle=True,
        seed=1,
    )
    copy.load_state_dict(state)  # accepted: same data
    assert copy.state_dict() == state


@pytest.mark.parametrize("how", ["lazy", "dask", "memory"])
def test_different_values_of_the_same_shape_are_refused(
    tmp_path: Path, how: str
) -> None:
    if how == "memory":
        a, b = make(), make(1.0)
    else:
        make().chunk(time=10).to_zarr(tmp_path / "a.zarr")
        make(1.0).chunk(time=10).to_zarr(tmp_path / "b.zarr")
        a, b = (
            open_store(tmp_path / "a.zarr", how),
            open_store(tmp_path / "b.zarr", how),
        )
    state = state_after_two(a)
    other = xb.BatchGenerator(b, {"x": 5}, batch_size=8, shuffle=True, seed=1)
    with pytest.raises(StateError, match="fingerprint"):
        other.load_state_dict(state)


def test_fingerprint_samples_values_everywhere() -> None:
    """In-memory data: one changed value among 4096 spread points changes it; the
    hash is the same for an equal copy and for every way of holding the data."""
    ds = make()
    assert source_fingerprint(ds) == source_fingerprint(ds.copy(deep=True))
    changed = ds.copy(deep=True)
    changed["v"][-1, -1] = -1.0  # the last point is always sampled
    assert source_fingerprint(changed) != source_fingerprint(ds)
    assert source_fingerprint(ds.chunk(time=7)) == source_fingerprint(ds.chunk(time=7))


def test_fingerprint_reads_few_chunks(tmp_path: Path) -> None:
    """A lazily opened store: the fingerprint decodes a bounded number of chunks."""
    make().chunk(time=2, x=3).to_zarr(tmp_path / "a.zarr")  # 200 chunks
    ds = open_store(tmp_path / "a.zarr", "lazy")
    bgen = xb.BatchGenerator(ds, {"x": 5}, batch_size=8)
    before = bgen.block_cache.stats()["misses"]
    bgen.state_dict()
    bgen.state_dict()  # computed once
    assert bgen.block_cache.stats()["misses"] - before <= 16
