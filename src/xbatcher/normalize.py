"""Normalisation statistics computed with Dask, saved to a small file, applied per batch.

:class:`Normalizer` computes, per variable (and optionally per point along kept dims
such as ``level``), the mean, standard deviation, minimum, maximum and count of the
non-NaN values with Dask reductions: chunk by chunk, in parallel, out of core, on a
``distributed`` cluster when one is given. It computes them over

- a :class:`~xbatcher.BatchGenerator` (e.g. the ``"train"`` part of
  ``bgen.split(...)``): exactly the region its windows cover (the bounding box of
  every window; points a dropped remainder leaves out and data of other splits are
  never read); or
- a Dataset / DataArray, optionally cut to ``region`` (``{dim: slice}``, as ``isel``).

NaN values are left out of the statistics (and stay NaN when transformed: compose
with :class:`~xbatcher.transforms.FillNaN` for a fill value or a mask channel). A
fitted normaliser is a per-batch transform (``norm(batch)``), has a scikit-learn
style ``fit`` / ``transform`` / ``inverse_transform`` and saves to JSON
(:meth:`Normalizer.save` / :meth:`Normalizer.load`) so inference uses the same
numbers.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .errors import DimensionError, InputTypeError, SchemaError, StateError

if TYPE_CHECKING:
    from .generator import BatchGenerator

__all__ = ["Normalizer", "VariableStats", "window_region"]

_FORMAT = "xbatcher-normalizer"
_VERSION = 1
Method = Literal["standard", "minmax"]
STAT_NAMES = ("mean", "std", "min", "max", "count")


@dataclass(frozen=True)
class VariableStats:
    """Statistics of one variable: arrays over ``dims`` (0-d when ``dims == ()``)."""

    dims: tuple[str, ...]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    count: NDArray[np.int64]

    def to_dict(self) -> dict[str, Any]:
        return {"dims": list(self.dims)} | {
            k: np.asarray(getattr(self, k)).tolist() for k in STAT_NAMES
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariableStats:
        arrays: dict[str, Any] = {
            k: np.asarray(data[k], dtype=np.int64 if k == "count" else np.float64)
            for k in STAT_NAMES
        }
        return cls(dims=tuple(data["dims"]), **arrays)


def window_region(bgen: BatchGenerator) -> dict[Hashable, slice]:
    """The region ``{dim: slice}`` of ``bgen.ds`` that its windows cover (their
    bounding box along each sliced dim; other dims whole).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.zeros((10, 7)), dims=("t", "x"))
    >>> window_region(xb.BatchGenerator(da, {"x": 3}))  # x=6 is in no window
    {'x': slice(0, 6, None)}
    """
    out: dict[Hashable, slice] = {}
    for w in bgen.schema.sliced:
        if w.n_windows > w.n_regular:
            stop = w.size
        else:
            stop = (w.n_regular - 1) * w.stride + w.window
        out[w.dim] = slice(0, stop)
    return out


def _as_dataset(data: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(data, xr.DataArray):
        return data.to_dataset(name=data.name if data.name is not None else "data")
    return data


class Normalizer:
    """Per-variable (optionally per-level) normalisation, fitted with Dask.

    Parameters
    ----------
    method : {"standard", "minmax"}
        ``(x - mean) / std`` or ``(x - min) / (max - min)`` (a zero spread divides
        by 1).
    keep_dims : sequence of str
        Dims along which statistics are kept apart (e.g. ``("level",)``); all
        other dims are reduced.
    variables : sequence of str, optional
        The variables to normalise (default: every floating-point variable);
        others pass through unchanged.

    Attributes
    ----------
    stats : dict of str to VariableStats
        After :meth:`fit`: the statistics of each variable.
    batch_dims : dict of str to tuple of str
        The dims of each variable's axes in a numpy batch (known when fitted on a
        generator, needed to apply per-level statistics to numpy batches).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(20.0).reshape(4, 5), dims=("t", "x"), name="v")
    >>> bgen = xb.BatchGenerator(da, {"x": 5}, batch_size=2)
    >>> norm = xb.Normalizer().fit(bgen)
    >>> float(norm.stats["v"].mean), round(float(norm.stats["v"].std), 4)
    (9.5, 5.7663)
    >>> batch = bgen.arrays[0]
    >>> bool(np.allclose(norm.inverse_transform(norm(batch)), batch))
    True
    """

    def __init__(
        self,
        method: Method = "standard",
        keep_dims: Sequence[str] = (),
        variables: Sequence[str] | None = None,
    ) -> None:
        if method not in ("standard", "minmax"):
            raise SchemaError(
                f"method must be 'standard' or 'minmax'; got {method!r}. Use "
                "'standard' for (x - mean) / std."
            )
        if isinstance(keep_dims, str):
            keep_dims = (keep_dims,)
        self.method: Method = method
        self.keep_dims = tuple(keep_dims)
        self.variables = None if variables is None else tuple(variables)
        self.stats: dict[str, VariableStats] = {}
        self.batch_dims: dict[str, tuple[str, ...]] = {}
        self.dataarray_name: str | None = None  # the variable of a DataArray batch

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        data: BatchGenerator | xr.Dataset | xr.DataArray,
        *,
        region: Mapping[Hashable, slice] | None = None,
        client: Any = None,
    ) -> Normalizer:
        """Compute the statistics (one Dask pass over the data).

        Parameters
        ----------
        data : BatchGenerator or xarray.Dataset or xarray.DataArray
            A generator (statistics over the region its windows cover, e.g. its
            training split) or data (cut to ``region``).
        region : mapping of dim to slice, optional
            With a Dataset / DataArray: the part to use (``data.isel(region)``).
        client : distributed.Client, optional
            Run the reduction on this cluster (else Dask's current scheduler).

        Returns
        -------
        Normalizer
            ``self``, fitted.
        """
        from .generator import BatchGenerator

        if isinstance(data, BatchGenerator):
            if region is not None:
                raise SchemaError(
                    "region= applies to a Dataset or DataArray; a generator's region "
                    "is the one its windows cover. Fit on bgen.split(...)['train'] "
                    "or pass the Dataset with region=."
                )
            ds = _as_dataset(data.ds).isel(window_region(data))
            self.batch_dims = _batch_dims(data)
        elif isinstance(data, xr.Dataset | xr.DataArray):
            ds = _as_dataset(data)
            if region is not None:
                missing = [d for d in region if d not in ds.dims]
                if missing:
                    raise DimensionError(
                        f"region dims {missing} are not dims of the data; dims are "
                        f"{list(ds.dims)}."
                    )
                ds = ds.isel(dict(region))
        else:
            raise InputTypeError(
                f"Normalizer.fit takes a BatchGenerator, Dataset or DataArray; got "
                f"{type(data).__name__}."
            )
        source = data.ds if isinstance(data, BatchGenerator) else data
        if isinstance(source, xr.DataArray):
            self.dataarray_name = str(next(iter(ds.data_vars)))
        names = self._chosen(ds)
        lazy = {name: _reductions(ds[name], self.keep_dims) for name in names}
        from dask.base import compute

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            if client is not None:
                (computed,) = compute(lazy, scheduler=client.get)  # type: ignore[no-untyped-call]
            else:
                (computed,) = compute(lazy)  # type: ignore[no-untyped-call]
        self.stats = {
            str(name): VariableStats(
                dims=tuple(str(d) for d in self.keep_dims if d in ds[name].dims),
                mean=np.asarray(v[0], np.float64),
                std=np.asarray(v[1], np.float64),
                min=np.asarray(v[2], np.float64),
                max=np.asarray(v[3], np.float64),
                count=np.asarray(v[4], np.int64),
            )
            for name, v in computed.items()
        }
        return self

    def _chosen(self, ds: xr.Dataset) -> list[Hashable]:
        if self.variables is None:
            return [
                n
                for n, v in ds.data_vars.items()
                if np.issubdtype(v.dtype, np.floating)
            ]
        missing = [v for v in self.variables if v not in ds.data_vars]
        if missing:
            raise SchemaError(
                f"variables {missing} are not in the data; it holds "
                f"{list(ds.data_vars)}. Pass names of its data variables."
            )
        return list(self.variables)

    # ------------------------------------------------------------------ applying
    def _offset_spread(self, name: str) -> tuple[Any, Any]:
        """(offset, spread) of ``name`` as stored; a zero or non-finite spread is 1."""
        s = self.stats[name]
        if self.method == "standard":
            offset, spread = s.mean, s.std
        else:
            offset, spread = s.min, s.max - s.min
        return offset, np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)

    def _scale(self, name: str, like: Any, dims: Sequence[Hashable]) -> tuple[Any, Any]:
        """(offset, scale) of ``name`` shaped to broadcast over an array with ``dims``."""
        s = self.stats[name]
        offset, spread = self._offset_spread(name)
        if not s.dims:
            return offset, spread
        axes = []
        for d in s.dims:
            hit = [i for i, b in enumerate(dims) if b in (d, f"{d}_input")]
            if not hit:
                raise SchemaError(
                    f"statistics of {name!r} are kept per {d!r}, but its batches have "
                    f"no {d!r} axis (dims {tuple(dims)}). Put {d!r} in input_dims "
                    "with its full size, or fit without keep_dims."
                )
            axes.append(hit[0])
        shape = [1] * len(dims)
        order = np.argsort(axes)
        offset = np.transpose(offset, order)
        spread = np.transpose(spread, order)
        for a, n in zip(sorted(axes), offset.shape, strict=True):
            shape[a] = n
        return offset.reshape(shape), spread.reshape(shape)

    def _apply(self, batch: Any, inverse: bool) -> Any:
        if not self.stats:
            raise StateError(
                "this Normalizer is not fitted; call fit(bgen) (or Normalizer.load) "
                "first."
            )
        if isinstance(batch, xr.Dataset | xr.DataArray):
            return self._apply_xarray(batch, inverse)
        if isinstance(batch, dict):
            return {
                k: self._one(str(k), np.asarray(a), inverse)
                if str(k) in self.stats
                else a
                for k, a in batch.items()
            }
        name = self.dataarray_name or (
            next(iter(self.stats)) if len(self.stats) == 1 else None
        )
        if name is None:
            raise InputTypeError(
                f"an array batch is one variable, but this Normalizer holds "
                f"{list(self.stats)}; pass a dict batch (a Dataset's)."
            )
        return self._one(name, np.asarray(batch), inverse)

    def _one(self, name: str, a: NDArray[Any], inverse: bool) -> NDArray[Any]:
        dims = self.batch_dims.get(name)
        if dims is None:
            if self.stats[name].dims:
                raise SchemaError(
                    f"statistics of {name!r} are kept per {self.stats[name].dims}; "
                    "applying them to numpy batches needs the dims of the batch's "
                    "axes: fit on a BatchGenerator, or apply to xarray batches."
                )
            dims = tuple(f"axis{i}" for i in range(a.ndim))
        offset, spread = self._scale(name, a, dims)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64
        out: NDArray[Any] = (a * spread + offset) if inverse else (a - offset) / spread
        return out.astype(dtype, copy=False)

    def _apply_xarray(self, batch: xr.Dataset | xr.DataArray, inverse: bool) -> Any:
        def one(name: str, v: xr.DataArray) -> xr.DataArray:
            s = self.stats[name]
            offset, spread = self._offset_spread(name)
            # a windowed dim is named "<dim>_input" in a sample batch
            dims = [
                d if d in v.dims or f"{d}_input" not in v.dims else f"{d}_input"
                for d in s.dims
            ]
            off = xr.DataArray(offset, dims=dims)
            sp = xr.DataArray(spread, dims=dims)
            out = v * sp + off if inverse else (v - off) / sp
            return out.astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else out

        if isinstance(batch, xr.DataArray):
            name = self.dataarray_name or str(batch.name)
            return one(name, batch)
        out = batch.copy()
        for k in batch.data_vars:
            if str(k) in self.stats:
                out[k] = one(str(k), batch[k])
        return out

    def transform(self, batch: Any) -> Any:
        """Normalise a batch (array, dict of arrays, or xarray object)."""
        return self._apply(batch, inverse=False)

    def inverse_transform(self, batch: Any) -> Any:
        """Undo :meth:`transform` (to tolerance of floating point)."""
        return self._apply(batch, inverse=True)

    __call__ = transform

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """The normaliser as JSON-able data (floats round-trip exactly)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method,
            "keep_dims": list(self.keep_dims),
            "variables": None if self.variables is None else list(self.variables),
            "dataarray_name": self.dataarray_name,
            "batch_dims": {k: list(v) for k, v in self.batch_dims.items()},
            "stats": {k: s.to_dict() for k, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """A normaliser from :meth:`to_dict`'s data."""
        if data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise StateError(
                f"not an xbatcher normaliser file (format {data.get('format')!r}, "
                f"version {data.get('version')!r}; expected {_FORMAT!r} version "
                f"{_VERSION}). Save it with Normalizer.save."
            )
        norm = cls(data["method"], data["keep_dims"], data["variables"])
        norm.dataarray_name = data["dataarray_name"]
        norm.batch_dims = {k: tuple(v) for k, v in data["batch_dims"].items()}
        norm.stats = {k: VariableStats.from_dict(v) for k, v in data["stats"].items()}
        return norm

    def save(self, path: str | Path) -> None:
        """Write the statistics to a small JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        """Read a normaliser written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (
            f"<xbatcher.Normalizer method={self.method!r} keep_dims="
            f"{self.keep_dims} variables={list(self.stats) or 'not fitted'}>"
        )


def _reductions(v: xr.DataArray, keep: Sequence[str]) -> tuple[Any, ...]:
    """Lazy (dask) mean, std, min, max and count of ``v``'s non-NaN values, over
    every dim but ``keep`` (in ``keep``'s order)."""
    import dask.array as dsa

    kept = [d for d in keep if d in v.dims]
    v = v.transpose(*kept, *[d for d in v.dims if d not in kept])
    data = v.data
    if not isinstance(data, dsa.Array):
        # numpy or a lazily opened store: dask reads it chunk by chunk
        data = v.chunk("auto").data
    x = data.astype(np.float64)
    axes = tuple(range(len(kept), x.ndim))
    return (
        dsa.nanmean(x, axis=axes),
        dsa.nanstd(x, axis=axes),
        dsa.nanmin(x, axis=axes),
        dsa.nanmax(x, axis=axes),
        (~dsa.isnan(x)).sum(axis=axes),
    )


def _batch_dims(bgen: BatchGenerator) -> dict[str, tuple[str, ...]]:
    """The dims of each variable's axes in the generator's numpy batches (the
    layout of its xarray batches)."""
    from .engine import read_batch_xarray

    if len(bgen) == 0:
        return {}
    batch = read_batch_xarray(bgen.engine, bgen.plan.batch_units(0, 0, 1)[0])
    if isinstance(batch, xr.DataArray):
        name = batch.name if batch.name is not None else "data"
        return {str(name): tuple(str(d) for d in batch.dims)}
    return {str(k): tuple(str(d) for d in v.dims) for k, v in batch.data_vars.items()}
