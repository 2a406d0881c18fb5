"""A batch is the user's to change: changing one batch's metadata in place (the
attrs of its coordinates, data and the batch itself) never shows in another batch,
in the source, or in a later read of the same batch, as with ``ds.isel(...)``."""

from __future__ import annotations

from typing import Any

import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import DIMS, make_dataset

DIMS3 = ("time", "lat", "lon")

PARAMS: dict[str, dict[str, Any]] = {
    "window": {"input_dims": {"lat": 5, "lon": 4}, "batch_dims": {"time": 2}},
    "concat": {
        "input_dims": {"lat": 5, "lon": 4},
        "batch_dims": {"time": 2},
        "concat_input_dims": True,
    },
    "sample": {"input_dims": {"lat": 5, "lon": 4}, "batch_size": 3},
}


def _attrs_of(batch: xr.Dataset | xr.DataArray) -> dict[Any, dict[Any, Any]]:
    out = {("coord", n): dict(batch.coords[n].attrs) for n in batch.coords}
    if isinstance(batch, xr.Dataset):
        out.update({("var", n): dict(batch[n].attrs) for n in batch.data_vars})
    out[("self",)] = dict(batch.attrs)
    return out


def _scribble(batch: xr.Dataset | xr.DataArray) -> None:
    """Change every attrs dict of ``batch`` in place (coords, variables, itself)."""
    for n in batch.coords:
        batch.coords[n].attrs["scribbled"] = True
    if isinstance(batch, xr.Dataset):
        for n in batch.data_vars:
            batch[n].attrs["scribbled"] = True
    batch.attrs["scribbled"] = True


def _generator(
    kind: str, mode: str, cache: bool, levels: bool = False
) -> xb.BatchGenerator:
    shape, dims = ((6, 3, 10, 12), DIMS) if levels else ((6, 10, 12), DIMS3)
    data = make_dataset(shape, dims)
    if kind == "DataArray":
        data = data["air"]
    kwargs: dict[str, Any] = dict(PARAMS[mode])
    if cache:
        kwargs["cache"] = "memory://?max_bytes=64MB"
    return xb.BatchGenerator(data, **kwargs)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["DataArray", "Dataset"]),
    mode=st.sampled_from(sorted(PARAMS)),
    cache=st.booleans(),
    iterate=st.booleans(),
    chunked=st.booleans(),
    levels=st.booleans(),
    data=st.data(),
)
def test_changing_a_batchs_attrs_in_place_changes_no_other_batch(
    kind, mode, cache, iterate, chunked, levels, data
):
    bgen = _generator(kind, mode, cache, levels)
    if chunked:
        bgen = xb.BatchGenerator(
            bgen.ds.chunk({"time": 2}), cache=bgen.cache, **PARAMS[mode]
        )
    n = len(bgen)
    fresh = [_attrs_of(b) for b in bgen]  # what every batch holds, untouched
    source = _attrs_of(bgen.ds)
    target = data.draw(st.integers(0, n - 1), label="changed batch")
    batches = list(bgen) if iterate else [bgen[i] for i in range(n)]
    _scribble(batches[target])
    assert _attrs_of(bgen.ds) == source
    for i, b in enumerate(batches):
        if i != target:
            assert _attrs_of(b) == fresh[i], f"batch {i} changed with batch {target}"
    again = list(bgen) if iterate else [bgen[i] for i in range(n)]
    assert [_attrs_of(b) for b in again] == fresh


@pytest.mark.parametrize("cache", [False, True])
def test_changing_a_coordinates_attrs_does_not_reach_the_next_read(cache):
    """The case that failed: two reads of one window shared their coordinate
    Variables, so ``b.lat.attrs[...] = ...`` on one showed in the other."""
    bgen = _generator("DataArray", "window", cache)
    first = bgen[0]
    first.lat.attrs["units"] = "changed"
    assert bgen[0].lat.attrs["units"] == "degrees"
    assert bgen[2].lat.attrs["units"] == "degrees"  # the same lat/lon window
    assert bgen.ds.lat.attrs["units"] == "degrees"


@pytest.mark.parametrize("cache", [False, True])
def test_role_batches_are_the_users_to_change(cache):
    """``windows=``: changing one role's coordinates in place reaches no other batch."""
    windows = {
        "x": xb.Window(offsets={"time": [0, 1]}),
        "y": xb.Window(variables=["air"], offsets={"time": 2}),
    }
    kwargs: dict[str, Any] = {"cache": "memory://"} if cache else {}
    ds = make_dataset((6, 10, 12), DIMS3)
    bgen = xb.BatchGenerator(
        ds, {"lat": 5, "lon": 4}, batch_size=3, windows=windows, **kwargs
    )
    fresh = [{r: _attrs_of(b[r]) for r in b} for b in bgen]
    first = bgen[0]
    for role in first:
        _scribble(first[role])
    assert [{r: _attrs_of(b[r]) for r in b} for b in bgen] == fresh
    assert [{r: _attrs_of(bgen[i][r]) for r in windows} for i in range(len(bgen))] == (
        fresh
    )


def test_own_copies_take_the_public_route_when_the_probe_fails(monkeypatch):
    """Should xarray change a Variable's slots, the probe says so and the copies
    go through ``Variable.copy(deep=False)``: batches stay the user's to change."""
    from xbatcher import _xarray_private as private

    assert private.slots_work.__wrapped__() is True  # this xarray: the fast copy
    monkeypatch.setattr(private, "_SLOTS", ("_dims", "_data", "_attrs"))
    assert private.slots_work.__wrapped__() is False  # a changed layout: refused
    monkeypatch.setattr(private, "slots_work", lambda: False)
    bgen = _generator("DataArray", "window", False)
    first = bgen[0]
    first.lat.attrs["units"] = "changed"
    assert bgen[0].lat.attrs["units"] == "degrees"
    var = xr.Variable(("x",), [1.0, 2.0], {"a": 1}, {"e": 2})
    copy = private.own_variable(var)
    assert copy.identical(var) and copy.attrs is not var.attrs
    assert copy.encoding == var.encoding and copy.encoding is not var.encoding
