"""What constructing a ``BatchGenerator`` does (and does not do): its fixed cost
counts once per epoch when a fresh generator is built for each epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import xarray as xr

import xbatcher as xb
from conftest import make_dataset

MODES: dict[str, dict[str, Any]] = {
    "window": {"input_dims": {"lat": 5, "lon": 4}},
    "concat": {"input_dims": {"lat": 5, "lon": 4}, "concat_input_dims": True},
    "sample": {"input_dims": {"lat": 5, "lon": 4}, "batch_size": 3, "shuffle": True},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_construction_builds_no_dataarray_per_variable(
    mode: str,
    kind: str,
    as_backend: Callable[[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine, the xarray builder and the schema read dims, attrs and backing
    arrays from the Variables: ``ds[name]`` (or ``ds.coords[name]``) would build a
    DataArray, with its coordinates and indexes, for each variable and coordinate
    (about 30 us each, 23 of them for a one-variable Zarr store)."""
    ds = make_dataset()
    obj = as_backend(ds["air"] if kind == "DataArray" else ds)
    built = []
    init = xr.DataArray.__init__

    def counting_init(self: xr.DataArray, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(xr.DataArray, "__init__", counting_init)
    bgen = xb.BatchGenerator(obj, **MODES[mode], seed=0 if mode == "sample" else None)
    assert built == []
    monkeypatch.undo()
    # the values batches carry are compared with isel in depth by test_generator and
    # test_compat04 (run over the same modes and backends)
    assert len(bgen) > 0
