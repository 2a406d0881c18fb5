"""Normalisation statistics (Dask) against numpy, training split only, file round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import SchemaError, StateError
from xbatcher.normalize import Normalizer, window_region


def weather(nt: int = 24, nz: int = 3, nx: int = 10, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    t = rng.normal(280.0, 10.0, (nt, nz, nx))
    t[rng.random(t.shape) < 0.1] = np.nan
    q = rng.gamma(2.0, 1.0, (nt, nz, nx)).astype(np.float32)
    return xr.Dataset(
        {
            "t": (("time", "level", "x"), t),
            "q": (("time", "level", "x"), q),
            "land": (("x",), (np.arange(nx) % 2).astype(np.int8)),
        }
    ).chunk(time=5)


def test_stats_equal_numpy_per_variable_and_per_level() -> None:
    ds = weather()
    norm = Normalizer(keep_dims=["level"]).fit(ds)
    assert set(norm.stats) == {"t", "q"}  # floating variables only
    t = ds["t"].values
    s = norm.stats["t"]
    assert s.dims == ("level",)
    np.testing.assert_allclose(s.mean, np.nanmean(t, axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(s.std, np.nanstd(t, axis=(0, 2)), rtol=1e-10)
    np.testing.assert_array_equal(s.min, np.nanmin(t, axis=(0, 2)))
    np.testing.assert_array_equal(s.max, np.nanmax(t, axis=(0, 2)))
    np.testing.assert_array_equal(s.count, (~np.isnan(t)).sum(axis=(0, 2)))
    q = ds["q"].values.astype(np.float64)
    whole = Normalizer().fit(ds).stats["q"]
    assert whole.dims == ()
    np.testing.assert_allclose(whole.mean, q.mean(), rtol=1e-12)
    np.testing.assert_allclose(whole.std, q.std(), rtol=1e-10)


def test_training_split_only() -> None:
    ds = weather(nt=40)
    bgen = xb.BatchGenerator(ds, {"x": 5, "level": 3}, batch_size=4)
    train = bgen.split("time", train=0.75, val=0.25)["train"]
    norm = Normalizer().fit(train)
    want = ds["t"].isel(time=slice(0, 30)).values
    np.testing.assert_allclose(norm.stats["t"].mean, np.nanmean(want), rtol=1e-12)
    # values outside the training split do not move the statistics
    wild = ds.copy(deep=True)
    wild["t"][30:] = 1e9
    wild_train = xb.BatchGenerator(wild, {"x": 5, "level": 3}, batch_size=4).split(
        "time", train=0.75, val=0.25
    )["train"]
    other = Normalizer().fit(wild_train)
    for k in ("mean", "std", "min", "max", "count"):
        np.testing.assert_array_equal(
            getattr(other.stats["t"], k), getattr(norm.stats["t"], k)
        )
    # and neither do points that no window covers (a dropped remainder along x)
    bgen7 = xb.BatchGenerator(ds, {"x": 3}, batch_size=4)
    assert window_region(bgen7) == {"x": slice(0, 9)}
    cut = Normalizer().fit(bgen7).stats["t"]
    np.testing.assert_allclose(
        cut.mean, np.nanmean(ds["t"].values[..., :9]), rtol=1e-12
    )


def test_fit_on_a_lazily_opened_store_and_on_a_cluster(
    tmp_path: Path, dask_client: Any
) -> None:
    ds = weather()
    ds.to_zarr(tmp_path / "w.zarr", consolidated=False)
    lazy = xr.open_dataset(
        tmp_path / "w.zarr", engine="zarr", chunks=None, consolidated=False
    )
    norm = Normalizer(keep_dims="level").fit(lazy, client=dask_client)
    ref = Normalizer(keep_dims="level").fit(ds.compute())
    for name in ("t", "q"):
        np.testing.assert_allclose(norm.stats[name].mean, ref.stats[name].mean)
        np.testing.assert_allclose(norm.stats[name].std, ref.stats[name].std)


def test_file_round_trip_is_exact(tmp_path: Path) -> None:
    ds = weather()
    bgen = xb.BatchGenerator(ds, {"x": 5, "level": 3}, batch_size=4)
    norm = Normalizer(keep_dims=["level"]).fit(bgen)
    norm.save(tmp_path / "stats.json")
    back = Normalizer.load(tmp_path / "stats.json")
    assert back.batch_dims == norm.batch_dims
    for name, s in norm.stats.items():
        for k in ("mean", "std", "min", "max", "count"):
            np.testing.assert_array_equal(getattr(back.stats[name], k), getattr(s, k))
    batch = bgen.arrays[0]
    for k, v in norm(batch).items():
        np.testing.assert_array_equal(back(batch)[k], v)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(StateError, match="not an xbatcher normaliser file"):
        Normalizer.load(bad)


def test_per_level_transform_on_numpy_equals_xarray() -> None:
    ds = weather()
    bgen = xb.BatchGenerator(ds, {"x": 5, "level": 3}, batch_size=4)
    norm = Normalizer(keep_dims=["level"]).fit(bgen)
    arrays = norm(bgen.arrays[1])
    xbatch = norm(bgen[1])
    for k in ("t", "q"):
        np.testing.assert_allclose(arrays[k], xbatch[k].values, rtol=1e-6)
        assert arrays[k].dtype == bgen.arrays[1][k].dtype
    np.testing.assert_array_equal(arrays["land"], bgen.arrays[1]["land"])
    # by hand, along the batch's level axis
    s = norm.stats["t"]
    t = bgen.arrays[1]["t"]
    axis = norm.batch_dims["t"].index("level_input")
    shape = [1, 1, 1]
    shape[axis] = 3
    want = (t - s.mean.reshape(shape)) / s.std.reshape(shape)
    np.testing.assert_allclose(arrays["t"], want, rtol=1e-12)


def test_per_level_needs_a_level_axis() -> None:
    ds = weather()
    bgen = xb.BatchGenerator(ds, {"x": 5}, batch_size=4)  # level stacked in sample
    norm = Normalizer(keep_dims=["level"]).fit(bgen)
    with pytest.raises(SchemaError, match="its batches have no 'level' axis"):
        norm(bgen.arrays[0])


def test_errors() -> None:
    with pytest.raises(SchemaError, match="method must be 'standard' or 'minmax'"):
        Normalizer("zscore")  # type: ignore[arg-type]
    with pytest.raises(StateError, match="not fitted"):
        Normalizer()(np.zeros(3))
    with pytest.raises(SchemaError, match=r"variables \['nope'\] are not in the data"):
        Normalizer(variables=["nope"]).fit(weather())
    with pytest.raises(KeyError, match="region dims"):
        Normalizer().fit(weather(), region={"y": slice(0, 2)})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6),
        elements=st.floats(-1e3, 1e3) | st.just(np.nan),
    ),
    method=st.sampled_from(["standard", "minmax"]),
    keep=st.booleans(),
)
def test_transform_inverse_round_trip(
    data: np.ndarray, method: str, keep: bool
) -> None:
    dims = ("a", "b", "c")[: data.ndim]
    ds = xr.Dataset({"v": (dims, data)}).chunk({"a": 2})
    # windows span every dim but the first: the generator's region is the data
    windows = dict(zip(dims[1:], data.shape[1:], strict=True))
    bgen = xb.BatchGenerator(ds, windows, batch_size=2)
    norm = Normalizer(method, keep_dims=["b"] if keep else []).fit(bgen)  # type: ignore[arg-type]
    s = norm.stats["v"]
    axes = tuple(i for i, d in enumerate(dims) if not (keep and d == "b"))
    with _nowarn():
        np.testing.assert_allclose(s.mean, _nanmean(data, axes), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(s.count, (~np.isnan(data)).sum(axis=axes))
    batch = bgen.arrays[0]
    out = norm(batch)
    np.testing.assert_array_equal(np.isnan(out["v"]), np.isnan(batch["v"]))
    back = norm.inverse_transform(out)
    np.testing.assert_allclose(back["v"], batch["v"], rtol=1e-9, atol=1e-9)
    finite = out["v"][np.isfinite(out["v"])]
    if method == "minmax" and not keep and finite.size:  # batch 0 may be all NaN
        assert finite.min() >= -1e-12 and finite.max() <= 1 + 1e-12


class _nowarn:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a: object) -> None:
        self._w.__exit__(*a)


def _nanmean(data: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.nanmean(data, axis=axes)
