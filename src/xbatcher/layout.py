"""Batch layout: turn gathered windows into numpy arrays or xarray objects.

The reader returns, per variable, an array of shape ``(n_windows, *window)`` in the
variable's own dim order. This module applies the 0.4 layout rules of
``docs/batching.md`` (stacking into ``sample``, ``*_input`` renames) to those buffers:
:func:`layout_array` for the array fast path, :class:`XarrayBuilder` for xarray output.
Both start from the same buffers, so the two paths cannot disagree on values.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray
from xarray.indexes import PandasIndex, PandasMultiIndex

from ._windowcoords import WindowCoords
from ._xarray_private import in_memory, own_variables
from .schema import BatchSchema, canonical_dims

__all__ = ["VarLayout", "layout_array", "plan_layout"]

INPUT_SUFFIX = "_input"


@dataclass(frozen=True, slots=True)
class VarLayout:
    """How one variable's gathered windows become its batch array.

    ``squeeze`` axes are dropped, then the axes are permuted by ``perm`` and
    ``broadcast`` axes inserted (``(axis, size)`` pairs, in increasing axis order: the
    stacked dims the variable lacks, repeated as ``Dataset.stack`` does), then the
    leading ``n_stack`` axes are merged.
    """

    dims: tuple[Hashable, ...]  # the variable's dims in the source
    out_dims: tuple[Hashable, ...]  # dims of the batch array (xarray names)
    squeeze: tuple[int, ...]
    perm: tuple[int, ...]
    n_stack: int
    windowed: bool  # False: the variable is the same for every window (take window 0)
    broadcast: tuple[tuple[int, int], ...] = ()


def input_name(dim: Hashable) -> str:
    return f"{dim}{INPUT_SUFFIX}"


def stack_dims(schema: BatchSchema, dims: Sequence[Hashable]) -> list[Hashable]:
    """Dims stacked into ``sample`` in window/concat mode (may be fewer than 2)."""
    input_dims = dict(schema.input_dims)
    rest = [d for d in dims if d not in input_dims]
    if schema.mode == "concat":
        return ["input_batch", *rest]
    return rest


def plan_layout(
    schema: BatchSchema,
    ds_dims: Sequence[Hashable],
    var_dims: Sequence[Hashable],
    sizes: Mapping[Hashable, int] | None = None,
) -> VarLayout:
    """Layout of a variable with dims ``var_dims`` in a dataset with ``ds_dims``.

    ``sizes`` (the dataset's dim sizes; default the schema's) gives the length of a
    stacked dim the variable lacks.
    """
    var_dims = tuple(var_dims)
    input_dims = list(dict(schema.input_dims))
    mode = schema.mode
    if mode == "sample":
        sliced = schema.sliced_dims
        sample_dims = {d for d, _ in schema.unsliced}  # one index per sample
        keep = [d for d in sliced if d in var_dims]
        squeeze = tuple(1 + i for i, d in enumerate(var_dims) if d in sample_dims)
        kept_order = [d for d in var_dims if d not in sample_dims]
        others = [d for d in var_dims if d not in sample_dims and d not in sliced]
        perm = (0, *(1 + kept_order.index(d) for d in keep + others))
        out = ("sample", *(input_name(d) for d in keep), *others)
        return VarLayout(var_dims, out, squeeze, perm, 0, True)
    # window and concat: leading window axis, then the variable's dims
    full = ["input_batch", *var_dims] if mode == "concat" else list(var_dims)
    names = {
        d: (input_name(d) if mode == "concat" and d in input_dims else d)
        for d in var_dims
    }
    stacked = stack_dims(schema, ds_dims)
    squeeze = () if mode == "concat" else (0,)
    present = [d for d in stacked if d in full]
    if len(stacked) < 2 or not present:
        # not stacked (a variable without stacked dims is only transposed)
        lead = ["input_batch"] if mode == "concat" else []
        if len(stacked) < 2:
            order = lead + list(var_dims)
        else:
            order = lead + [d for d in input_dims if d in var_dims]
        perm = tuple(full.index(d) for d in order)
        out = tuple(lead) + tuple(names[d] for d in order if d != "input_batch")
        return VarLayout(var_dims, out, squeeze, perm, 0, True)
    # stacked layout: (sample, *input dims in input_dims order); the stacked dims the
    # variable lacks are broadcast (xarray's Dataset.stack does the same)
    windows = {w.dim: w.window for w in schema.sliced}
    all_sizes = dict(schema.sizes) if sizes is None else dict(sizes)
    broadcast = tuple(
        (j, windows.get(d, all_sizes.get(d, 1)))
        for j, d in enumerate(stacked)
        if d not in full
    )
    order = present + [d for d in input_dims if d in full]
    perm = tuple(full.index(d) for d in order)
    out_dims = ("sample", *(names[d] for d in input_dims if d in full))
    return VarLayout(var_dims, out_dims, squeeze, perm, len(stacked), True, broadcast)


def layout_array(gathered: NDArray[Any], lay: VarLayout) -> NDArray[Any]:
    """Apply a :class:`VarLayout` to a ``(n_windows, *window)`` buffer."""
    a = gathered
    if lay.squeeze:
        a = a.reshape([n for i, n in enumerate(a.shape) if i not in lay.squeeze])
    if lay.perm != tuple(range(a.ndim)):
        a = a.transpose(lay.perm)
    if lay.broadcast:
        for axis, _ in lay.broadcast:
            a = np.expand_dims(a, axis)
        shape = list(a.shape)
        for axis, n in lay.broadcast:
            shape[axis] = n
        a = np.broadcast_to(a, shape)
    if lay.n_stack > 1:
        a = a.reshape((-1, *a.shape[lay.n_stack :]))
    elif lay.broadcast:
        a = np.ascontiguousarray(a)
    return a


def rename_single_inputs(
    single_inputs: Sequence[Hashable],
    is_dataarray: bool,
    variables: Mapping[Hashable, xr.Variable],
    indexes: Mapping[Hashable, Any],
) -> tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]]:
    """Concat mode, shared coordinates on an input dim ``d`` with one window per
    batch: ``d`` becomes ``d_input``; the index coordinate ``d`` stays a non-index
    coordinate ``d`` (Dataset) or becomes the index ``d_input`` (DataArray), as 0.4
    gives."""
    ren = {d: input_name(d) for d in single_inputs}
    out: dict[Hashable, xr.Variable] = {}
    out_indexes = {k: v for k, v in indexes.items() if k not in ren}
    for name, var in variables.items():
        if not set(var.dims) & set(ren):
            out[name] = var
            continue
        dims = tuple(ren.get(d, d) for d in var.dims)
        if name in ren and is_dataarray:
            new = ren[name]
            index = PandasIndex(pd.Index(var.values, name=new), new)
            out[new] = index.create_variables(
                {new: xr.Variable(dims, var.values, var.attrs)}
            )[new]
            out_indexes[new] = index
        else:
            out[name] = xr.Variable(dims, var.values, var.attrs)
    return out, out_indexes


def _window_by_isel(
    builder: XarrayBuilder,
    arrays: Mapping[Hashable, Any],
    coord_arrays: Mapping[Hashable, Any],
    selector: Mapping[Hashable, slice],
) -> xr.Dataset | xr.DataArray:
    """A window batch (before stacking) as ``obj.isel(selector)``, with the lazy
    variables and coordinates replaced by their gathered values: the route for
    anything the direct constructors do not handle."""
    obj = builder.obj
    result = obj.isel(selector) if selector else obj.copy(deep=False)
    if builder.block_coords:
        result = result.assign_coords(
            {
                name: xr.Variable(
                    builder.coord_meta[name][0],
                    coord_arrays[name][0],
                    builder.coord_meta[name][1],
                )
                for name in builder.block_coords
            }
        )
    lazy = builder.lazy_vars
    if isinstance(result, xr.DataArray):
        if lazy:
            result = result.copy(deep=False, data=arrays[lazy[0]][0])
    elif lazy:
        result = result.assign(
            {
                name: xr.Variable(
                    builder.data_vars[name][0],
                    arrays[name][0],
                    builder.data_vars[name][1],
                )
                for name in lazy
            }
        )
    return result


class XarrayBuilder:
    """Builds xarray batches (0.4 layouts and sample layout) around gathered arrays.

    Attributes
    ----------
    lazy_vars : list
        The data variables not held in memory (dask, Zarr...): window batches take
        their values from the gathered arrays handed to :meth:`build_window`, the
        other variables are cut as views, like ``isel``.
    windowed_coords, block_coords : list
        Coordinates gathered per window, and lazy coordinates shared by a batch's
        windows but cut by a sliced dim (both read through the engine's sources).
    """

    def __init__(self, obj: xr.Dataset | xr.DataArray, schema: BatchSchema) -> None:
        self.is_dataarray = isinstance(obj, xr.DataArray)
        self.schema = schema
        ds = obj._to_temp_dataset() if isinstance(obj, xr.DataArray) else obj
        self.name = obj.name if isinstance(obj, xr.DataArray) else None
        self.attrs = dict(obj.attrs)
        data_dims, coord_only = canonical_dims(obj)
        self.ds_dims = data_dims + coord_only  # stacking order: not the open order
        self.sizes = dict(obj.sizes)
        self.template = ds.coords.to_dataset()
        # Variables: ds[c] (or ds.data_vars.items()) would build a DataArray each time
        variables = ds.variables
        data_variables = ds.data_vars.variables
        self.data_vars = {k: (v.dims, dict(v.attrs)) for k, v in data_variables.items()}
        self.coord_names = list(ds.coords)
        input_dims = dict(schema.input_dims)
        sliced = set(schema.sliced_dims)
        mode = schema.mode
        # concat mode: input dims along which a batch holds one window (0.4 shares
        # their coordinates across the batch; a DataArray keeps `d_input` indexed)
        self.single_inputs = [
            w.dim
            for w in schema.sliced
            if mode == "concat" and w.dim in input_dims and w.group == 1
        ]
        # coordinates gathered per window (the others are shared by the whole batch)
        if mode == "sample":
            self.windowed_coords = [
                c for c in self.coord_names if variables[c].ndim > 0
            ]
        elif mode == "concat":
            varying = set(input_dims) - set(self.single_inputs)
            self.windowed_coords = [
                c
                for c in self.coord_names
                if any(d in varying for d in variables[c].dims)
            ]
        else:
            self.windowed_coords = []
        # lazy (dask, Zarr...) coordinates shared by the batch's windows but cut by a
        # sliced dim go through the reader and its cache too (first window's values)
        self.block_coords = [
            c
            for c in self.coord_names
            if c not in self.windowed_coords
            and any(d in sliced for d in variables[c].dims)
            and not in_memory(variables[c])
        ]
        unsliced_lazy = [
            c
            for c in self.coord_names
            if not any(d in sliced for d in variables[c].dims)
            and not in_memory(variables[c])
        ]
        if unsliced_lazy:  # the same for every batch: load once
            self.template = self.template.assign_coords(
                {c: self.template.variables[c].load() for c in unsliced_lazy}
            )
        self.coord_meta = {
            c: (variables[c].dims, dict(variables[c].attrs)) for c in self.coord_names
        }
        self.shared_template = self.template.drop_vars(
            self.windowed_coords + self.block_coords
        )
        self.block_dims = [
            d
            for d in schema.sliced_dims
            if d not in input_dims or mode == "window" or d in self.single_inputs
        ]
        self._sliced = sliced
        self.obj = obj
        # window mode builds DataArrays directly from cached window coordinates (the
        # result is what obj.isel(window) gives, about 10x cheaper); anything unusual
        # (custom or multi-indexes) takes the isel route
        plain_indexes = (
            mode == "window"
            and all(
                isinstance(idx, PandasIndex) and not isinstance(idx, PandasMultiIndex)
                for idx in obj.xindexes.values()
            )
            and set(obj.xindexes) <= set(obj.dims)
        )
        self.fast_dataarray = plain_indexes and isinstance(obj, xr.DataArray)
        # Datasets: built with xarray's internal constructor when it is there (it has
        # been for years); any failure falls back to isel for good
        self.fast_dataset = plain_indexes and isinstance(obj, xr.Dataset)
        self._data_variables = {k: ds.variables[k] for k in self.data_vars}
        self._lengths = {w.dim: w.window for w in schema.sliced}
        self._window_stacked = stack_dims(schema, self.ds_dims)  # isel keeps every dim
        self.lazy_vars: list[Hashable] = [
            k for k, v in data_variables.items() if not in_memory(v)
        ]
        self._fixed_coords = [c for c in self.coord_names if c not in self.block_coords]
        self.window_coords = WindowCoords(obj, schema, self._fixed_coords)
        # sample batches: built with xarray's internal constructors as well (checked
        # against the public-constructor route in the tests)
        self.fast_sample = mode == "sample" and not self.block_coords
        self._layouts: dict[tuple[Hashable, ...], VarLayout] = {}

    def _layout(self, dims: tuple[Hashable, ...]) -> VarLayout:
        lay = self._layouts.get(dims)
        if lay is None:
            lay = self._layouts[dims] = plan_layout(
                self.schema, self.ds_dims, dims, self.sizes
            )
        return lay

    def _sample_direct(
        self,
        arrays: Mapping[Hashable, Any],
        coord_arrays: Mapping[Hashable, Any],
        units: NDArray[np.int64],
    ) -> xr.Dataset | xr.DataArray:
        """What :meth:`build` gives in sample mode, without xarray's merge and
        alignment machinery (the parts are aligned by construction)."""
        from xarray.core.variable import calculate_dimensions

        data: dict[Hashable, xr.Variable] = {}
        for name, (dims, attrs) in self.data_vars.items():
            lay = self._layout(dims)
            data[name] = xr.Variable(
                lay.out_dims, layout_array(arrays[name], lay), attrs, fastpath=True
            )
        coords = own_variables(dict(self.shared_template.coords.variables))
        for name in self.windowed_coords:
            dims, attrs = self.coord_meta[name]
            lay = self._layout(dims)
            coords[name] = xr.Variable(
                lay.out_dims,
                layout_array(coord_arrays[name], lay),
                attrs,
                fastpath=True,
            )
        index = PandasIndex(pd.Index(units, name="sample"), "sample")
        coords["sample"] = index.create_variables(
            {"sample": xr.Variable("sample", units)}
        )["sample"]
        indexes = {**self.shared_template.xindexes, "sample": index}
        if self.is_dataarray:
            (var,) = data.values()
            return xr.DataArray(
                var, coords=coords, name=self.name, indexes=indexes, fastpath=True
            )
        variables = {**data, **coords}
        return xr.Dataset._construct_direct(
            variables,
            coord_names=set(coords),
            dims=calculate_dimensions(variables),
            attrs=dict(self.attrs),
            indexes=indexes,
        )

    def _window_coords(
        self, coord_arrays: Mapping[Hashable, Any], first_starts: Mapping[Hashable, int]
    ) -> tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]]:
        """Every coordinate cut to a window (cached), and the indexes among them:
        new dicts on each call (a batch's coordinates may be changed in place)."""
        coords, indexes = self.window_coords.window(first_starts)
        for name in self.block_coords:
            dims, attrs = self.coord_meta[name]
            coords[name] = xr.Variable(dims, coord_arrays[name][0], attrs)
        return coords, indexes

    def _dataset_window(
        self,
        arrays: Mapping[Hashable, Any],
        coord_arrays: Mapping[Hashable, Any],
        first_starts: Mapping[Hashable, int],
        selector: Mapping[Hashable, slice],
    ) -> xr.Dataset:
        """``ds.isel(window)`` for a Dataset, from cached window coordinates."""
        variables, indexes = self._window_coords(coord_arrays, first_starts)
        for name, var in self._data_variables.items():
            if name in arrays:
                data = arrays[name][0]
            else:
                data = var.data[tuple(selector.get(d, slice(None)) for d in var.dims)]
            variables[name] = xr.Variable(var.dims, data, var.attrs)
        sizes = dict(self.obj.sizes)
        out_sizes = {
            d: (self._lengths[d] if d in selector else n) for d, n in sizes.items()
        }
        return xr.Dataset._construct_direct(
            variables,
            coord_names=set(self.coord_names),
            dims=out_sizes,
            attrs=dict(self.attrs),
            indexes=indexes,
        )

    def build_window(
        self,
        arrays: Mapping[Hashable, Any],
        coord_arrays: Mapping[Hashable, Any],
        first_starts: Mapping[Hashable, int],
    ) -> xr.Dataset | xr.DataArray:
        """Window mode (0.4 default): ``obj.isel(window)``, stacked as 0.4 does.

        ``arrays`` holds gathered data only for lazy (dask, Zarr) variables; in-memory
        variables are cut as views, like ``isel``.
        """
        lengths = self._lengths
        result: xr.Dataset | xr.DataArray
        if self.fast_dataarray:
            assert isinstance(self.obj, xr.DataArray)
            var = self.obj.variable
            if self.lazy_vars:
                data = arrays[self.lazy_vars[0]][0]
            else:
                data = var.data[
                    tuple(
                        slice(first_starts[d], first_starts[d] + lengths[d])
                        if d in self._sliced
                        else slice(None)
                        for d in var.dims
                    )
                ]
            coords, indexes = self._window_coords(coord_arrays, first_starts)
            # the data already is what a Variable holds (a window of one, as isel
            # cuts it): no conversion to repeat
            result = xr.DataArray(
                xr.Variable(var.dims, data, var.attrs, fastpath=True),
                coords=coords,
                name=self.name,
                indexes=indexes,
                fastpath=True,
            )
            if len(self._window_stacked) < 2:
                return result
            return result.stack(sample=self._window_stacked).transpose(
                "sample", *dict(self.schema.input_dims)
            )
        selector = {
            d: slice(first_starts[d], first_starts[d] + lengths[d])
            for d in self.block_dims
        }
        if self.fast_dataset:
            try:
                result = self._dataset_window(
                    arrays, coord_arrays, first_starts, selector
                )
            except (AttributeError, TypeError):  # xarray internals changed: use isel
                self.fast_dataset = False
                return self.build_window(arrays, coord_arrays, first_starts)
        else:
            result = _window_by_isel(self, arrays, coord_arrays, selector)
        stacked = self._window_stacked
        if len(stacked) >= 2:
            result = result.stack(sample=stacked).transpose(
                "sample", *dict(self.schema.input_dims)
            )
        return result

    def build(
        self,
        arrays: Mapping[Hashable, Any],
        coord_arrays: Mapping[Hashable, Any],
        first_starts: Mapping[Hashable, int],
        units: NDArray[np.int64],
    ) -> xr.Dataset | xr.DataArray:
        """Assemble one batch.

        ``arrays`` holds each data variable's gathered ``(n_windows, ...)`` array (numpy
        or dask), ``coord_arrays`` the same for windowed coordinates, ``first_starts``
        the window start of the batch's first window along each sliced dim.
        """
        schema = self.schema
        mode = schema.mode
        if mode == "sample" and self.fast_sample:
            try:
                return self._sample_direct(arrays, coord_arrays, units)
            except (AttributeError, TypeError, ImportError):  # xarray changed
                self.fast_sample = False
        lengths = {w.dim: w.window for w in schema.sliced}
        selector = {
            d: slice(first_starts[d], first_starts[d] + lengths[d])
            for d in self.block_dims
        }
        coords_ds = (
            self.shared_template.isel(selector, missing_dims="ignore")
            if selector
            else self.shared_template
        )
        variables: dict[Hashable, xr.Variable] = {}
        input_dims = dict(schema.input_dims)
        if mode == "sample":
            for name in self.windowed_coords:
                dims, attrs = self.coord_meta[name]
                lay = self._layout(dims)
                variables[name] = xr.Variable(
                    lay.out_dims, layout_array(coord_arrays[name], lay), attrs
                )
            variables["sample"] = xr.Variable("sample", units)
        elif mode == "concat":
            for name in self.windowed_coords:
                dims, attrs = self.coord_meta[name]
                out_dims = (
                    "input_batch",
                    *(input_name(d) if d in input_dims else d for d in dims),
                )
                variables[name] = xr.Variable(out_dims, coord_arrays[name], attrs)
        for name in self.block_coords:
            dims, attrs = self.coord_meta[name]
            variables[name] = xr.Variable(dims, coord_arrays[name][0], attrs)
        data: dict[Hashable, xr.Variable] = {}
        for name, (dims, attrs) in self.data_vars.items():
            a = arrays[name]
            if mode == "sample":
                lay = self._layout(dims)
                data[name] = xr.Variable(lay.out_dims, layout_array(a, lay), attrs)
            elif mode == "concat":
                out_dims = (
                    "input_batch",
                    *(input_name(d) if d in input_dims else d for d in dims),
                )
                data[name] = xr.Variable(out_dims, a, attrs)
            else:
                data[name] = xr.Variable(dims, a[0], attrs)
        shared = dict(coords_ds.coords.variables)
        shared_indexes = dict(coords_ds.xindexes)
        if self.single_inputs:
            shared, shared_indexes = rename_single_inputs(
                self.single_inputs, self.is_dataarray, shared, shared_indexes
            )
        coords = xr.Coordinates(
            {**shared, **variables},
            indexes={
                **shared_indexes,
                **(
                    {"sample": PandasIndex(pd.Index(units, name="sample"), "sample")}
                    if mode == "sample"
                    else {}
                ),
            },
        )
        result = xr.Dataset(data, coords=coords, attrs=dict(self.attrs))
        if mode != "sample":
            names = (
                [input_name(d) for d in input_dims]
                if mode == "concat"
                else list(input_dims)
            )
            stacked = [d for d in stack_dims(schema, self.ds_dims) if d in result.dims]
            if mode == "concat" and "input_batch" not in stacked:
                stacked.insert(0, "input_batch")
            if len(stacked) >= 2:
                result = result.stack(sample=stacked).transpose("sample", *names)
        if self.is_dataarray:
            (var_name,) = list(self.data_vars)
            out = result[var_name]
            out.name = self.name
            out.attrs = dict(self.data_vars[var_name][1])
            return out
        return result
