"""Differential tests against xbatcher 0.4 itself, run in a child process.

The 0.4 side is xbatcher 0.4.0's own code, unpacked from its wheel (the ``wheel_04``
fixture of conftest.py downloads it once) and imported by a child process of this
interpreter, so both sides share numpy, pandas and xarray; batches cross the process
boundary as pickles.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from reference import concat_group, reference_batches, window_starts

RUNNER = """
import os, pickle, sys, warnings
import xbatcher
# 0.4 from the unpacked wheel, not ours
assert xbatcher.__file__.startswith(os.environ["PYTHONPATH"]), xbatcher.__file__
assert hasattr(xbatcher.generators, "BatchGenerator")
with open(sys.argv[1], "rb") as f:
    cases = pickle.load(f)
out = []
for obj, params in cases:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = xbatcher.BatchGenerator(obj, **params)
        batches = []
        for i in range(len(gen)):
            try:
                batches.append(("ok", gen[i].compute()))
            except Exception as err:
                batches.append(("error", repr(err)[:200]))
    out.append((len(gen), batches))
with open(sys.argv[2], "wb") as f:
    pickle.dump(out, f)
"""


@pytest.fixture(scope="module")
def run04(wheel_04: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    package = tmp_path_factory.mktemp("xbatcher04-package")
    with zipfile.ZipFile(wheel_04) as zf:
        for name in zf.namelist():
            if name.startswith("xbatcher/") and "/tests/" not in name:
                zf.extract(name, package)
    # the child imports 0.4 from the unpacked wheel, before our installed package
    env = {**os.environ, "PYTHONPATH": str(package)}
    py = sys.executable
    folder = tmp_path_factory.mktemp("xb04")
    script = folder / "runner.py"
    script.write_text(RUNNER)

    def run(cases: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
        src, dst = folder / "cases.pkl", folder / "out.pkl"
        src.write_bytes(pickle.dumps(cases))
        proc = subprocess.run(
            [py, str(script), str(src), str(dst)],
            capture_output=True, text=True, check=False, timeout=600, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return pickle.loads(dst.read_bytes())  # type: ignore[no-any-return]

    return run


# --------------------------------------------------------------------------- data
@st.composite
def cases(draw: st.DrawFn, concat: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """A small Dataset/DataArray (values and coordinates all distinct) and a 0.4
    schema: windows, overlaps, batch dims (some also input dims), concat on/off;
    Dataset variables may lack some dims."""
    n_dims = draw(st.integers(1, 3))
    dims = [f"d{i}" for i in range(n_dims)]
    sizes = {d: draw(st.integers(1, 9)) for d in dims}
    kind = draw(st.sampled_from(["Dataset", "DataArray"]))
    base = 1000 * np.arange(math.prod(sizes.values())).reshape(tuple(sizes.values()))
    data_vars: dict[str, Any] = {"v": (dims, base.astype(np.float64))}
    if kind == "Dataset":
        for k in range(draw(st.integers(0, 2))):
            sub = draw(st.lists(st.sampled_from(dims), unique=True, max_size=n_dims))
            sub = sub if len(sub) < n_dims else sub[1:]  # fewer dims than v
            shape = tuple(sizes[d] for d in sub)
            values = np.arange(math.prod(shape)).reshape(shape) + 0.5 + k
            data_vars[f"w{k}"] = (sub, values)
    coords: dict[str, Any] = {}
    for i, d in enumerate(dims):
        if draw(st.booleans()):
            coords[d] = (d, np.arange(sizes[d]) * 0.5 + 10.0 * (i + 1))
    if n_dims >= 2 and draw(st.booleans()):
        shape = (sizes["d0"], sizes["d1"])
        coords["area"] = (("d0", "d1"), -np.arange(math.prod(shape)).reshape(shape))
    ds = xr.Dataset(data_vars, coords=coords)
    obj: Any = ds["v"] if kind == "DataArray" else ds
    input_names = draw(st.lists(st.sampled_from(dims), unique=True, min_size=1))
    input_dims = {d: draw(st.integers(1, sizes[d])) for d in input_names}
    overlap = {
        d: draw(st.integers(0, w - 1))
        for d, w in input_dims.items()
        if w > 1 and draw(st.booleans())
    }
    batch_dims: dict[str, int] = {}
    for d in dims:
        if draw(st.booleans()):
            batch_dims[d] = draw(st.integers(1, sizes[d]))
    params: dict[str, Any] = {
        "input_dims": input_dims,
        "input_overlap": overlap,
        "batch_dims": batch_dims,
        "concat_input_dims": draw(st.booleans()) if concat is None else concat,
    }
    return obj, params


def _n_windows(obj: Any, params: dict[str, Any]) -> int:
    sliced = [d for d in params["batch_dims"] if d not in params["input_dims"]]
    sliced += list(params["input_dims"])
    total = 1
    for d in sliced:
        w = params["input_dims"].get(d, params["batch_dims"].get(d))
        ov = params["input_overlap"].get(d, 0)
        total *= len(window_starts(obj.sizes[d], w, ov, False))
    return total


def _dataarray_04_misaligns(obj: Any, params: dict[str, Any]) -> bool:
    """0.4 concatenates DataArray windows with different index labels along an input
    dim with an outer join: NaN-padded batches (a documented difference)."""
    if not (isinstance(obj, xr.DataArray) and params["concat_input_dims"]):
        return False
    return any(
        d in obj.indexes
        and concat_group(
            obj, d, params["input_dims"], params["input_overlap"], params["batch_dims"]
        )
        > 1
        for d in params["input_dims"]
    )


def _data(batch: Any) -> dict[Hashable, Any]:
    if isinstance(batch, xr.DataArray):
        return {None: batch}
    return dict(batch.data_vars)


def check_against_04(
    obj: Any, params: dict[str, Any], n04: int, got04: list[Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gen = xb.BatchGenerator(obj, **params)
        ours = [gen[i] for i in range(len(gen))]
    # ours equals the written-out contract (tests/reference.py) ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = reference_batches(obj, **params)
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        xr.testing.assert_identical(a, b)
        arrays = gen.arrays[i]
        got = arrays if isinstance(arrays, dict) else {None: arrays}
        for name, var in _data(a).items():
            np.testing.assert_array_equal(got[name], var.values)
            assert got[name].shape == var.shape
    # ... and 0.4's batches, wherever 0.4's are full and correct: ours are 0.4's
    # full batches in 0.4's order; 0.4's short or failing batches are left out
    full = [
        theirs
        for status, theirs in got04
        if status == "ok"
        and _n_input_batch(theirs, params) == gen.schema.windows_per_unit
    ]
    assert len(ours) == len(full)
    if not _dataarray_04_misaligns(obj, params):
        for mine, theirs in zip(ours, full, strict=True):
            xr.testing.assert_identical(mine, theirs)


def _n_input_batch(batch: Any, params: dict[str, Any]) -> int:
    """Windows in a 0.4 batch (1 without concat_input_dims)."""
    if not params["concat_input_dims"]:
        return 1
    if "input_batch" in batch.dims:
        return int(batch.sizes["input_batch"])
    return len(np.unique(batch["input_batch"].values))


@settings(
    max_examples=4,
    deadline=None,
    # each example runs 0.4 in a child process: report the first failure unshrunk
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(family=st.lists(cases(), min_size=30, max_size=30))
def test_matches_04_where_04_is_right(run04: Any, family: list[Any]) -> None:
    family = [(o, p) for o, p in family if _n_windows(o, p) <= 80]
    results = run04(family)
    for (obj, params), (n04, got04) in zip(family, results, strict=True):
        check_against_04(obj, params, n04, got04)


def test_concat_duplicate_dim_04_count(run04: Any) -> None:
    """The issue's case at small scale: B = 64, stride 8 (window 8 or 32) gives
    ceil(64 / 8) = 8 consecutive windows per batch and len() = L // B, as in 0.4,
    except 0.4's short last batch (window 32: 22 windows, so 0.4's third batch
    holds 6), which is left out."""
    x = np.arange(200, dtype=np.float64)
    da = xr.DataArray(np.stack([x, -x]), dims=("c", "x"), name="v")
    family = [
        (da, {"input_dims": {"x": 8}, "input_overlap": {}, "batch_dims": {"x": 64},
              "concat_input_dims": True}),
        (da, {"input_dims": {"x": 32}, "input_overlap": {"x": 24},
              "batch_dims": {"x": 64}, "concat_input_dims": True}),
    ]  # fmt: skip
    results = run04(family)
    for (obj, params), (n04, got04), n in zip(family, results, [3, 2], strict=True):
        gen = xb.BatchGenerator(obj, **params)
        assert n04 == 200 // 64
        assert len(gen) == n
        assert all(b.sizes["sample"] == 8 * 2 for b in gen)  # 8 windows x 2 (c)
        check_against_04(obj, params, n04, got04)


def test_variables_lacking_dims_match_04(run04: Any) -> None:
    """Static fields next to time series, surface next to pressure levels."""
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "t": (("time", "level", "lat", "lon"), rng.random((4, 3, 6, 8))),
            "t2m": (("time", "lat", "lon"), rng.random((4, 6, 8))),
            "lsm": (("lat", "lon"), rng.random((6, 8))),
            "series": (("time",), rng.random(4)),
        },
        coords={"lat": np.linspace(-10, 10, 6), "time": np.arange(4) * 6},
    )
    family = [
        (ds, {"input_dims": {"lat": 3, "lon": 4}, "input_overlap": {},
              "batch_dims": {"time": 2}, "concat_input_dims": concat})
        for concat in (False, True)
    ] + [
        (ds, {"input_dims": {"time": 2, "lat": 3}, "input_overlap": {"lat": 1},
              "batch_dims": {}, "concat_input_dims": False}),
        (ds, {"input_dims": {"lon": 4}, "input_overlap": {},
              "batch_dims": {"lon": 8, "level": 1}, "concat_input_dims": True}),
    ]  # fmt: skip
    results = run04(family)
    for (obj, params), (n04, got04) in zip(family, results, strict=True):
        assert n04 > 0
        check_against_04(obj, params, n04, got04)
