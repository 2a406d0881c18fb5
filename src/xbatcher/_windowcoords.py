"""The coordinates of window batches, cut once and kept.

A window batch (0.4's default layout) carries the source's coordinates cut to its
window, as ``obj.isel(window)`` gives them. Cutting an indexed coordinate builds a new
pandas index (tens of microseconds), so :class:`WindowCoords` keeps each coordinate's
cut by the window's starts along the coordinate's sliced dims, and each window's
whole set of cuts by the window's starts, and hands out new dicts for every batch (a
batch's coordinates may be changed in place without touching the next batch's).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import xarray as xr

from ._xarray_private import own_variables
from .schema import BatchSchema

__all__ = ["WindowCoords"]

# cut coordinates kept (per coordinate and window start) before starting over
_CUTS = 8192


class WindowCoords:
    """Coordinates ``names`` of ``obj`` cut to windows of ``schema`` (cached).

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        The source (its coordinates and indexes).
    schema : BatchSchema
        The windows (sliced dims and window lengths).
    names : iterable of hashable
        The coordinates to cut (those held in memory).

    The caches travel empty when pickled (a worker fills its own).
    """

    def __init__(
        self,
        obj: xr.Dataset | xr.DataArray,
        schema: BatchSchema,
        names: Iterable[Hashable],
    ) -> None:
        self._sliced = set(schema.sliced_dims)
        self._lengths = {w.dim: w.window for w in schema.sliced}
        coords = obj.coords.variables  # obj.coords[c] would build a DataArray
        self._vars = {c: coords[c] for c in names}
        self._xindexes = dict(obj.xindexes)
        # each coordinate with its sliced dims (its key in _cuts)
        self._keys = [
            (c, tuple(d for d in var.dims if d in self._sliced))
            for c, var in self._vars.items()
        ]
        self._cuts: dict[tuple[Hashable, tuple[int, ...]], tuple[xr.Variable, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cuts": {}}

    def cut(
        self, name: Hashable, first_starts: Mapping[Hashable, int]
    ) -> tuple[xr.Variable, Any]:
        """The coordinate ``name`` cut to the window starting at ``first_starts``,
        and its index (None for a coordinate without one); cached."""
        var = self._vars[name]
        starts = tuple(first_starts[d] for d in var.dims if d in self._sliced)
        key = (name, starts)
        hit = self._cuts.get(key)
        if hit is not None:
            return hit
        key_slices = tuple(
            slice(first_starts[d], first_starts[d] + self._lengths[d])
            if d in self._sliced
            else slice(None)
            for d in var.dims
        )
        index = None
        if name in self._xindexes:
            index = self._xindexes[name].isel({name: key_slices[0]})
            assert index is not None  # a slice of a PandasIndex stays an index
            cut = index.create_variables({name: var})[name]
        else:
            cut = var[key_slices]
        if len(self._cuts) > _CUTS:
            self._cuts.clear()
        self._cuts[key] = (cut, index)
        return cut, index

    def window(
        self, first_starts: Mapping[Hashable, int]
    ) -> tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]]:
        """Every coordinate cut to the window, and the indexes among them, as new
        dicts of new Variables (each coordinate's cut is cached; a batch's
        coordinates are the user's to change)."""
        cuts = self._cuts
        coords: dict[Hashable, xr.Variable] = {}
        indexes: dict[Hashable, Any] = {}
        for name, dims in self._keys:
            hit = cuts.get((name, tuple([first_starts[d] for d in dims])))
            if hit is None:
                hit = self.cut(name, first_starts)
            coords[name] = hit[0]
            if hit[1] is not None:
                indexes[name] = hit[1]
        return own_variables(coords), indexes
