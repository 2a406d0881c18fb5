"""``BatchGenerator``: the public API, compatible with xbatcher 0.4.

The generator ties the layers together: the :class:`~xbatcher.schema.BatchSchema`
(index arithmetic), a :mod:`~xbatcher.sampling` sampler (epoch order, shards), the
:mod:`~xbatcher.reader` (block reads and vectorised gathers through a chunk cache) and
:mod:`~xbatcher.layout` (numpy or xarray batches). Constructing one is O(1) in the
number of windows; batch ``i`` is computed on demand.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import operator
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ._state import STATE_VERSION, Cursor, checked_state
from ._validation import check_bool, check_int
from .errors import (
    BatchIndexError,
    BatchIndexTypeError,
    InputTypeError,
    SchemaError,
    XbatcherWarning,
)
from .fingerprint import source_fingerprint
from .layout import VarLayout, XarrayBuilder, layout_array, plan_layout
from .reader import (
    BlockCache,
    WindowRequest,
    format_bytes,
    gather,
    gather_grid,
    parse_bytes,
    prefetch,
    read_region,
)
from .sampling import (
    BlockShuffleSampler,
    Sampler,
    SequentialSampler,
    Shard,
    ShuffleSampler,
    UnitGroups,
)
from .schema import BatchSchema, Windows
from .sources import Source, make_source
from .splits import check_sampler_fits, parent_units, split_bounds
from .validity import make_filter

__all__ = ["ArrayBatches", "BatchGenerator"]

Batch = xr.Dataset | xr.DataArray
ArrayBatch = NDArray[Any] | dict[Hashable, NDArray[Any]]
_GROUP_BYTES = 2 * 2**20  # output gathered at once while iterating (cache-friendly)
_MAX_GROUP = 512
# chunk-aware shuffle: bytes of chunks a shuffle pool draws from, by default. Larger
# pools are more random but gather from more memory (slower, cache-unfriendly): on the
# S1 benchmark 32-64 MiB pools were fastest.
_DEFAULT_RESIDENT_BYTES = 64 * 2**20
# output bytes whose chunks are decoded ahead of the consumer (capped at a quarter of
# the block cache, so prefetched chunks are not evicted before they are used); about
# two chunk-aware shuffle pools, so the next pool decodes while this one is gathered
_READAHEAD_BYTES = 128 * 2**20
_PAGE = 4096  # positions whose units are computed together for in-order bgen[i] calls


class BatchGenerator:
    """Create a generator for iterating through xarray DataArrays / Datasets in batches.

    Compatible with the xbatcher 0.4 ``BatchGenerator`` (same arguments, same batch
    layout; see ``docs/batching.md`` for the exact rules and the 0.4 bugs fixed), plus
    sample-level batches, shuffling, sharding and resumable iteration.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        The data, in memory, dask-backed or lazily opened (Zarr, NetCDF).
    input_dims : dict
        Window size along each input dim, e.g. ``{"lat": 32, "lon": 32}``.
    input_overlap : dict, optional
        Points shared by neighbouring windows along each sliced dim.
    batch_dims : dict, optional
        Block size along dims iterated over as batches, e.g. ``{"time": 8}``.
    concat_input_dims : bool
        Concatenate all windows of a batch along ``input_batch`` / ``sample``.
    preload_batch : bool
        Return numpy-backed batches (True) or lazy dask-backed ones (False).
    cache : MutableMapping, optional
        A batch cache, as in 0.4: any dict-like store (a ``dict``, a
        ``zarr.storage`` store...). Each batch is built once, passed through
        ``cache_preprocess`` and stored; later reads of the batch come from the cache.
    cache_preprocess : callable, optional
        Applied to a batch before it is cached.
    keep_remainder : bool
        Cover leftover points at the end of each sliced dim with a last window that
        ends at the dim's end (0.4 drops them; default False).
    batch_size : int, optional
        Sample-level batches of ``batch_size`` samples (see ``docs/batching.md``).
    drop_last : bool
        With ``batch_size``: drop a last, smaller batch.
    shuffle : bool or "chunks"
        Shuffle units (samples with ``batch_size``, else batches) every epoch;
        ``"chunks"`` is the chunk-aware block shuffle for chunked sources.
    seed : int, optional
        Seed of the shuffle; drawn at random (and exposed as ``.seed``) if None.
    sampler : xbatcher.sampling.Sampler, optional
        Any sampler (overrides ``shuffle``); it carries its own seed, so passing
        ``seed=`` as well is refused.
    block_cache_bytes : int or str
        Budget of the cache of decoded source chunks, e.g. ``"512MiB"``.
    resident_bytes : int or str, optional
        With ``shuffle="chunks"``: bytes of chunks a shuffle pool draws from
        (default: 64 MiB, at most half of ``block_cache_bytes``). Larger pools give
        batches drawn from more chunks (more random), smaller pools are faster.
    skip_nan : str or list of str, optional
        With ``batch_size``: skip samples whose window holds NaN in these variables.
    mask : str or xarray.DataArray, optional
        With ``batch_size``: keep only samples whose window is True everywhere in this
        boolean variable (name of a variable of ``ds`` or a DataArray, matched to the
        data by coordinate labels as ``ds.where(mask)`` matches it).
    min_valid : float or dict, default 1.0
        Fraction of each window that must be valid for ``skip_nan`` (not NaN) and
        ``mask`` (True): ``min_valid=0.5`` keeps windows at least half valid;
        ``{"mask": 0.5}`` sets it for one filter (the other stays 1.0).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(24.0).reshape(2, 12), dims=("time", "x"))
    >>> bgen = xb.BatchGenerator(da, input_dims={"x": 4})
    >>> len(bgen), bgen[0].dims, bgen[-1].values[0].tolist()
    (3, ('time', 'x'), [8.0, 9.0, 10.0, 11.0])
    >>> bgen.arrays[1].shape
    (2, 4)
    """

    def __init__(
        self,
        ds: xr.Dataset | xr.DataArray,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: Any = None,
        cache_preprocess: Callable[[Batch], Batch] | None = None,
        *,
        keep_remainder: bool = False,
        batch_size: int | None = None,
        drop_last: bool = False,
        shuffle: bool | Literal["chunks"] = False,
        seed: int | None = None,
        sampler: Sampler | None = None,
        block_cache_bytes: int | str = "512MiB",
        resident_bytes: int | str | None = None,
        skip_nan: str | Sequence[str] | None = None,
        mask: str | xr.DataArray | None = None,
        min_valid: float | Mapping[str, float] = 1.0,
    ) -> None:
        if not isinstance(ds, xr.Dataset | xr.DataArray):
            raise InputTypeError(
                f"ds must be an xarray.Dataset or xarray.DataArray; got "
                f"{type(ds).__name__}. Wrap numpy data with xr.DataArray(array, dims=...)."
            )
        if isinstance(ds, xr.Dataset) and not ds.data_vars:
            raise SchemaError(
                "ds is a Dataset without data variables; there is nothing to batch. "
                "Pass a Dataset with at least one data variable."
            )
        if cache_preprocess is not None and not callable(cache_preprocess):
            raise InputTypeError(
                f"cache_preprocess must be a callable taking and returning a batch; got "
                f"{type(cache_preprocess).__name__}."
            )
        self.ds = ds
        self.cache = cache
        self.cache_preprocess = cache_preprocess
        self.preload_batch = check_bool(preload_batch, "preload_batch")
        self.schema = BatchSchema(
            ds,
            input_dims=input_dims,
            input_overlap=input_overlap,
            batch_dims=batch_dims,
            concat_input_dims=concat_input_dims,
            keep_remainder=keep_remainder,
            batch_size=batch_size,
            drop_last=drop_last,
        )
        self.block_cache = BlockCache(parse_bytes(block_cache_bytes))
        self._builder = XarrayBuilder(ds, self.schema)
        data = ds._to_temp_dataset() if isinstance(ds, xr.DataArray) else ds
        self._sources: dict[Hashable, Source] = {
            name: make_source(name, data[name].variable) for name in data.data_vars
        }
        self._coord_sources: dict[Hashable, Source] = {
            name: make_source(("coord", name), data[name].variable)
            for name in self._builder.windowed_coords + self._builder.block_coords
        }
        self._var_dims = {name: data[name].dims for name in data.data_vars}
        self._source_fp: str | None = None  # source_fingerprint, computed on demand
        # dims of every source, data and coordinate (their names cannot collide)
        self._source_dims = {
            **self._var_dims,
            **{name: data[name].dims for name in self._coord_sources},
        }
        self._sizes = dict(ds.sizes)
        self._layouts: dict[Hashable, VarLayout] = {
            name: plan_layout(self.schema, self._builder.ds_dims, dims, self._sizes)
            for name, dims in self._var_dims.items()
        }
        self._valid: NDArray[np.int64] | None = None
        self._filter = make_filter(data, self.schema, skip_nan, mask, min_valid)
        if self._filter is not None:
            self._valid = self._filter.valid_samples(
                self.schema, data, self._sources, self.block_cache
            )
        self.sampler = self._make_sampler(shuffle, seed, sampler, resident_bytes)
        check_sampler_fits(self.sampler, self.n_units, self._filter is not None)
        self._batch_cache = None
        if cache is not None:
            from .mapping_cache import MappingBatchCache

            self._batch_cache = MappingBatchCache(
                cache, self._content_fingerprint(), cache_preprocess
            )
        self._groups: UnitGroups | None = None
        self._shard: Shard | None = None
        self.epoch = 0
        self._page: tuple[tuple[int, int, int, int], NDArray[np.int64]] | None = None
        # the most recently started iteration (each iter() has its own cursor)
        self._cursor: Cursor | None = None
        self._resume_at = 0  # where the next iteration starts (load_state_dict)

    # ------------------------------------------------------------------ setup
    def _make_sampler(
        self,
        shuffle: bool | str,
        seed: int | None,
        sampler: Sampler | None,
        resident_bytes: int | str | None,
    ) -> Sampler:
        if sampler is not None:
            if not isinstance(sampler, Sampler):
                raise InputTypeError(
                    f"sampler must be an xbatcher.sampling.Sampler; got "
                    f"{type(sampler).__name__}. Use e.g. xb.ShuffleSampler(seed=0)."
                )
            if seed is not None:
                raise SchemaError(
                    f"seed={seed!r} and sampler={type(sampler).__name__}(seed="
                    f"{sampler.seed!r}) were both given; the sampler's own seed would "
                    "win and seed= be ignored. Pass the seed to the sampler "
                    f"({type(sampler).__name__}(seed=...)) and drop seed=."
                )
            return sampler
        if isinstance(shuffle, np.bool_):  # type: ignore[unreachable, unused-ignore]
            shuffle = bool(shuffle)  # type: ignore[unreachable, unused-ignore]
        if shuffle is False or shuffle is None:
            if seed is not None:
                warnings.warn(
                    "seed is ignored without shuffle=True or a sampler.",
                    XbatcherWarning,
                    stacklevel=3,
                )
            return SequentialSampler()
        if shuffle is True:
            self._warn_if_full_shuffle_thrashes()
            return ShuffleSampler(seed=seed)
        if shuffle == "chunks":
            budget = (
                parse_bytes(resident_bytes, "resident_bytes")
                if resident_bytes is not None
                else min(_DEFAULT_RESIDENT_BYTES, self.block_cache.max_bytes // 2)
            )
            chunk = max(s.chunk_nbytes for s in self._sources.values())
            per_unit = max(1, len(self._sources))
            resident = max(1, budget // max(chunk * per_unit, 1))
            return BlockShuffleSampler(seed=seed, resident_groups=int(resident))
        raise SchemaError(
            f"shuffle must be True, False or 'chunks'; got {shuffle!r}. Use shuffle=True "
            "for a full shuffle or shuffle='chunks' for a chunk-aware one."
        )

    def _warn_if_full_shuffle_thrashes(self) -> None:
        """A full shuffle over chunked data that does not fit the chunk cache decodes
        most chunks again for every few batches: say so, and what to do instead."""
        chunked = [
            s for s in self._sources.values() if s.bounds is not None and s.shape
        ]
        total = sum(math.prod(s.shape) * s.dtype.itemsize for s in chunked)
        budget = self.block_cache.max_bytes
        if chunked and total > budget:
            warnings.warn(
                f"shuffle=True draws each batch from anywhere in {format_bytes(total)} "
                f"of chunked data, more than block_cache_bytes={format_bytes(budget)}, "
                "so chunks are decoded again and again "
                "(slow). Use shuffle='chunks' (a chunk-aware shuffle that decodes "
                "each chunk about once per epoch), or raise block_cache_bytes above "
                "the data size.",
                XbatcherWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ 0.4 attributes
    @property
    def input_dims(self) -> dict[Hashable, int]:
        return dict(self.schema.input_dims)

    @property
    def input_overlap(self) -> dict[Hashable, int]:
        return dict(self.schema.input_overlap)

    @property
    def batch_dims(self) -> dict[Hashable, int]:
        return dict(self.schema.batch_dims)

    @property
    def concat_input_dims(self) -> bool:
        return self.schema.concat_input_dims

    @property
    def seed(self) -> int | None:
        """The shuffle seed (drawn at construction when not given)."""
        return self.sampler.seed

    # ------------------------------------------------------------------ epoch arithmetic
    @property
    def n_units(self) -> int:
        """Units available to the sampler (samples or batches, after filtering)."""
        return self.schema.n_units if self._valid is None else int(self._valid.size)

    def _epoch_positions(self) -> int:
        n = self.sampler.epoch_length(self.n_units)
        return self._shard.length(n) if self._shard is not None else n

    def __len__(self) -> int:
        return self.schema.num_batches(self._epoch_positions())

    def _unit_groups(self) -> UnitGroups | None:
        if not self.sampler.needs_groups:
            return None
        if self._groups is None:
            from .validity import chunk_labels

            labels = chunk_labels(self.schema, self._sources, self._var_dims)
            if self._valid is not None:
                labels = labels[self._valid]
            self._groups = UnitGroups.from_labels(labels)
        return self._groups

    def _units_at(
        self, local_positions: NDArray[np.int64], epoch: int | None = None
    ) -> NDArray[np.int64]:
        """Unit ids at local (this shard's) positions of ``epoch`` (default: the
        current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if local_positions.size and local_positions.size <= _PAGE:
            # bgen[i] called in order: evaluate the sampler a page at a time
            lo = int(local_positions[0])
            page = lo // _PAGE
            if int(local_positions[-1]) // _PAGE == page:
                key = (epoch, page, id(self.sampler), id(self._shard))
                entry = self._page  # one read: another thread may replace the page
                if entry is None or entry[0] != key:
                    start = page * _PAGE
                    stop = min(start + _PAGE, self._epoch_positions())
                    positions = np.arange(start, stop, dtype=np.int64)
                    entry = (key, self._compute_units(positions, epoch))
                    self._page = entry
                return entry[1][local_positions - page * _PAGE]
        return self._compute_units(local_positions, epoch)

    def _compute_units(
        self, local_positions: NDArray[np.int64], epoch: int
    ) -> NDArray[np.int64]:
        if (
            self._shard is None
            and self._valid is None
            and type(self.sampler) is SequentialSampler
        ):
            return local_positions  # in order: positions are units (checked by callers)
        n = self.sampler.epoch_length(self.n_units)
        positions = local_positions
        if self._shard is not None:
            positions = self._shard.global_positions(n, local_positions)
        units = self.sampler.units(self.n_units, epoch, positions, self._unit_groups())
        if self._valid is not None:
            units = self._valid[units]
        return units

    def _batch_units(
        self, first: int, stop: int, epoch: int | None = None
    ) -> list[NDArray[np.int64]]:
        """Units of batches ``first .. stop - 1`` (one array per batch) of ``epoch``
        (default: the current epoch)."""
        bs = self.schema.batch_size
        if bs is None:
            units = self._units_at(np.arange(first, stop, dtype=np.int64), epoch)
            return list(units.reshape(-1, 1))
        total = self._epoch_positions()
        lo, hi = first * bs, min(stop * bs, total)
        units = self._units_at(np.arange(lo, hi, dtype=np.int64), epoch)
        return np.split(units, np.arange(bs, hi - lo, bs))

    def _check_index(self, idx: Any) -> int:
        try:
            i = operator.index(idx)
        except TypeError:
            raise BatchIndexTypeError(
                f"batch index must be an integer; got {idx!r} of type "
                f"{type(idx).__name__}. Use bgen[i] with an int (or numpy integer), "
                "one batch at a time."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise BatchIndexError(
                f"batch index {i} is out of range for a generator of {n} batches "
                f"(list index out of range); valid indices are {-n}..{n - 1}."
            )
        return i + n if i < 0 else i

    # ------------------------------------------------------------------ reading
    def _windows(self, units: NDArray[np.int64]) -> Windows:
        return self.schema.unit_windows(units)

    def _request(self, windows: Windows, dims: Sequence[Hashable]) -> WindowRequest:
        """Windows of a variable over its own dims (a dim it lacks is not read;
        a dim outside the windows, e.g. a coordinate-only dim, is read whole)."""
        sizes = self._sizes
        starts, lengths = [], []
        zero = np.zeros(windows.count, dtype=np.int64)
        for d in dims:
            if d in windows.starts:
                starts.append(windows.starts[d])
                lengths.append(windows.lengths[d])
            else:
                starts.append(zero)
                lengths.append(sizes[d])
        return WindowRequest(tuple(starts), tuple(lengths), windows.count)

    def _gather_all(
        self, windows: Windows, sources: Mapping[Hashable, Source]
    ) -> dict[Hashable, NDArray[Any]]:
        out = {}
        for name, src in sources.items():
            request = self._request(windows, self._source_dims[name])
            out[name] = _gather_windows(src, request, self.block_cache)
        return out

    def _arrays_for(self, batches: list[NDArray[np.int64]]) -> list[ArrayBatch]:
        """Gather several batches at once and lay each one out as numpy."""
        if self.schema.mode == "concat":
            return [self._concat_arrays(int(b[0])) for b in batches]
        return self._arrays_generic(batches)

    def _arrays_generic(self, batches: list[NDArray[np.int64]]) -> list[ArrayBatch]:
        flat = np.concatenate(batches)
        windows = self._windows(flat)
        gathered = self._gather_all(windows, self._sources)
        counts = (
            [int(self.schema.unit_window_counts(b).sum()) for b in batches]
            if self.schema.mode == "concat"
            else [b.size for b in batches]
        )
        edges = np.cumsum([0, *counts])
        if len(set(counts)) == 1 and all(
            lay.n_stack <= 1
            and not lay.broadcast
            and lay.perm == tuple(range(len(lay.perm)))
            for lay in self._layouts.values()
        ):
            # equal batches needing no transpose: lay the whole group out at once and
            # hand out views (no per-batch layout work)
            split = {
                name: self._group_layout(g, counts[0], self._layouts[name])
                for name, g in gathered.items()
            }
            if isinstance(self.ds, xr.DataArray):
                return list(next(iter(split.values())))
            return [
                {name: s[j] for name, s in split.items()} for j in range(len(batches))
            ]
        out: list[ArrayBatch] = []
        for j in range(len(batches)):
            per_var = {
                name: layout_array(g[edges[j] : edges[j + 1]], self._layouts[name])
                for name, g in gathered.items()
            }
            out.append(self._pack(per_var))
        return out

    @staticmethod
    def _group_layout(g: NDArray[Any], count: int, lay: VarLayout) -> NDArray[Any]:
        """``(n_batches * count, *window)`` -> ``(n_batches, *batch shape)``."""
        g = g.reshape((-1, count, *g.shape[1:]))
        if lay.squeeze:
            drop = {a + 1 for a in lay.squeeze}
            g = g.reshape([n for i, n in enumerate(g.shape) if i not in drop])
        return g

    def _concat_arrays(self, unit: int) -> ArrayBatch:
        """A concat batch: its windows form a regular grid inside one block, so read
        the block once and copy the grid out with one strided copy, straight into the
        final layout."""
        schema = self.schema
        gidx = np.unravel_index(unit, schema.unit_shape)
        first: dict[Hashable, int] = {}
        counts: dict[Hashable, int] = {}
        for w, g in zip(schema.sliced, gidx, strict=True):
            k0 = int(g) * w.group
            counts[w.dim] = min(w.group, w.n_windows - k0)
            first[w.dim] = k0
            if k0 + counts[w.dim] > w.n_regular:  # the keep_remainder window: irregular
                return self._arrays_generic([np.array([unit])])[0]
        sizes = dict(schema.sizes)
        by_dim = {w.dim: w for w in schema.sliced}
        per_var: dict[Hashable, NDArray[Any]] = {}
        windows: Windows | None = None
        for name, src in self._sources.items():
            dims = self._var_dims[name]
            lay = self._layouts[name]
            if lay.broadcast or any(d not in dims for d in by_dim):
                # a variable lacking a sliced or stacked dim: window by window
                if windows is None:
                    windows = self._windows(np.array([unit], dtype=np.int64))
                request = self._request(windows, dims)
                gathered = _gather_windows(src, request, self.block_cache)
                per_var[name] = layout_array(gathered, lay)
                continue
            region, lengths = [], []
            for d in dims:
                dw = by_dim.get(d)
                if dw is None:
                    region.append(slice(0, sizes[d]))
                    lengths.append(sizes[d])
                else:
                    a = first[d] * dw.stride
                    region.append(slice(a, a + (counts[d] - 1) * dw.stride + dw.window))
                    lengths.append(dw.window)
            block = read_region(src, tuple(region), self.block_cache)
            m = len(schema.sliced)
            order = [j for p in lay.perm for j in (range(m) if p == 0 else [m + p - 1])]
            grid = gather_grid(
                block,
                [counts[w.dim] for w in schema.sliced],
                [w.stride for w in schema.sliced],
                [dims.index(w.dim) for w in schema.sliced],
                lengths,
                order,
            )
            n_lead = m + max(lay.n_stack, 1) - 1
            per_var[name] = grid.reshape((-1, *grid.shape[n_lead:]))
        return self._pack(per_var)

    def _pack(self, per_var: dict[Hashable, NDArray[Any]]) -> ArrayBatch:
        if isinstance(self.ds, xr.DataArray):
            return next(iter(per_var.values()))
        return per_var

    def _xarray_for(self, units: NDArray[np.int64]) -> Batch:
        if self.schema.mode == "window" and self.preload_batch:
            return self._window_xarray(int(units[0]))
        windows = self._windows(units)
        if self.preload_batch:
            arrays = self._gather_all(windows, self._sources)
            coords = self._gather_all(windows, self._coord_sources)
        else:
            arrays = self._lazy_all(windows, self._sources)
            coords = self._gather_all(windows, self._coord_sources)
        first = (
            {d: int(s[0]) for d, s in windows.starts.items()} if windows.count else {}
        )
        return self._builder.build(arrays, coords, first, units)

    def _window_xarray(self, unit: int) -> Batch:
        """A 0.4 window batch: scalar arithmetic, one region read per lazy variable."""
        first = self.schema.window_starts(unit)
        lengths = {w.dim: w.window for w in self.schema.sliced}
        sizes = self._sizes

        def read(src: Source, name: Hashable) -> NDArray[Any]:
            region = tuple(
                slice(first[d], first[d] + lengths[d])
                if d in first
                else slice(0, sizes[d])
                for d in self._source_dims[name]
            )
            return read_region(src, region, self.block_cache)[np.newaxis].copy()

        lazy = {k: read(self._sources[k], k) for k in self._builder._lazy_vars}
        coords = {k: read(src, k) for k, src in self._coord_sources.items()}
        return self._builder.build_window(lazy, coords, first)

    def _lazy_all(
        self, windows: Windows, sources: Mapping[Hashable, Source]
    ) -> dict[Hashable, Any]:
        import dask.array as da
        from dask.delayed import delayed

        out = {}
        for name, src in sources.items():
            request = self._request(windows, self._var_dims[name])
            task = delayed(_gather_windows, pure=True)(src, request, self.block_cache)
            shape = (request.count, *request.lengths)
            out[name] = da.from_delayed(task, shape=shape, dtype=src.dtype)  # type: ignore[no-untyped-call]
        return out

    # ------------------------------------------------------------------ public access
    def __getitem__(self, idx: int) -> Batch:
        i = self._check_index(idx)
        (units,) = self._batch_units(i, i + 1)
        return self._cached_xarray_for(units)

    def _cached_xarray_for(self, units: NDArray[np.int64]) -> Batch:
        cache = self._batch_cache
        if cache is None:
            return self._xarray_for(units)
        key = (
            str(int(units[0]))
            if units.size == 1
            else "s-" + hashlib.sha256(units.tobytes()).hexdigest()[:20]
        )
        if key in cache:
            return cache.get(key, self.preload_batch)
        batch = self._xarray_for(units)
        if self.cache_preprocess is not None:
            batch = self.cache_preprocess(batch)
        cache.put(key, batch)
        return batch

    def __iter__(self) -> Iterator[Batch]:
        # the cursor (epoch, start) is taken here, when iter() is called, not at the
        # first next(): two iterators made together follow the same epoch
        return self._iterate(*self._start_iteration())

    def _iterate(self, cursor: Cursor, indices: range) -> Iterator[Batch]:
        # sample batches of a group are gathered together (one chunk plan, one copy
        # per chunk) and then wrapped one by one
        grouped = (
            self.schema.mode == "sample"
            and self.preload_batch
            and self._batch_cache is None
        )
        groups = self._groups_of_batches(indices, self._group_size(), cursor.epoch)
        for first, batches in groups:
            built = self._sample_xarrays(batches) if grouped else None
            for j, units in enumerate(batches):
                batch = built[j] if built else self._cached_xarray_for(units)
                cursor.position = first + j + 1
                yield batch
        self._end_iteration(cursor)

    def _sample_xarrays(self, batches: list[NDArray[np.int64]]) -> list[Batch]:
        """Sample-mode batches of one group, from one gather of all their windows."""
        windows = self._windows(np.concatenate(batches))
        arrays = self._gather_all(windows, self._sources)
        coords = self._gather_all(windows, self._coord_sources)
        out: list[Batch] = []
        lo = 0
        for units in batches:
            hi = lo + units.size
            first = (
                {d: int(s[lo]) for d, s in windows.starts.items()} if hi > lo else {}
            )
            out.append(
                self._builder.build(
                    {k: a[lo:hi] for k, a in arrays.items()},
                    {k: a[lo:hi] for k, a in coords.items()},
                    first,
                    units,
                )
            )
            lo = hi
        return out

    def _groups_of_batches(
        self, indices: range, step: int, epoch: int
    ) -> Iterator[tuple[int, list[NDArray[np.int64]]]]:
        """Units of consecutive groups of batches of ``epoch``; with chunked sources,
        the chunks of the next groups (``_READAHEAD_BYTES`` of output) are requested
        together from a background thread while the current group is gathered."""
        firsts = range(indices.start, indices.stop, step)
        if not any(s.bounds is not None for s in self._sources.values()):
            for first in firsts:
                stop = min(first + step, indices.stop)
                yield first, self._batch_units(first, stop, epoch)
            return
        ahead = self._readahead_groups(step)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xbatcher-prefetch")
        try:
            pending: dict[int, Future[None]] = {}
            job: Future[None] | None = None
            for k, first in enumerate(firsts):
                units = self._batch_units(first, min(first + step, indices.stop), epoch)
                future = pending.pop(k, None)
                if future is not None and (future.done() or k % ahead == 0):
                    future.result()  # re-raises a failed read here, never hangs
                if k % ahead == 0 and k + 1 < len(firsts):
                    # the chunks of the next `ahead` groups, requested at once
                    last = min(k + ahead, len(firsts) - 1)
                    stop = min(firsts[last] + step, indices.stop)
                    job = pool.submit(self._prefetch, firsts[k + 1], stop, epoch)
                    pending.update(dict.fromkeys(range(k + 1, last + 1), job))
                yield first, units
            if job is not None:
                job.result()  # the last job's errors, had no group waited for it
        finally:
            # never wait here: an abandoned iteration is closed wherever its last
            # reference goes (the garbage collector, in any thread, maybe one that
            # holds a lock the prefetch job needs, or the prefetch thread itself).
            # A running job finishes on its own and settles the chunks it claimed;
            # on a normal end, job.result() above has waited for it already.
            pool.shutdown(wait=False, cancel_futures=True)

    def _readahead_groups(self, step: int) -> int:
        """Groups of ``step`` batches whose chunks are requested ahead at once."""
        group_bytes = max(1, step * self._batch_nbytes())
        budget = min(_READAHEAD_BYTES, self.block_cache.max_bytes // 4)
        return max(1, budget // group_bytes)

    def _prefetch(self, first: int, stop: int, epoch: int) -> None:
        windows = self._windows(np.concatenate(self._batch_units(first, stop, epoch)))
        # prefetched chunks must still be cached when they are used
        budget = self.block_cache.max_bytes // (4 * max(1, len(self._sources)))
        for name, src in self._sources.items():
            prefetch(
                src,
                self._request(windows, self._var_dims[name]),
                self.block_cache,
                budget,
            )

    def _group_size(self) -> int:
        """Batches gathered at once while iterating (about ``_GROUP_BYTES`` of output)."""
        return int(max(1, min(_MAX_GROUP, _GROUP_BYTES // self._batch_nbytes())))

    def _batch_nbytes(self) -> int:
        """Bytes of one (full) batch, all variables."""
        s = self.schema
        sizes = dict(s.sizes)
        windows = {w.dim: w.window for w in s.sliced}
        batch_bytes = 0
        for src, dims in zip(
            self._sources.values(), self._var_dims.values(), strict=True
        ):
            per_window = math.prod(
                windows.get(d, 1 if s.mode == "sample" else sizes[d]) for d in dims
            )
            batch_bytes += (
                per_window
                * src.dtype.itemsize
                * s.windows_per_unit
                * (s.batch_size or 1)
            )
        return max(1, batch_bytes)

    def _start_iteration(self) -> tuple[Cursor, range]:
        """A new iteration's own cursor: the current epoch, from the restored
        position (0 unless load_state_dict set one), and the batches it covers."""
        start, self._resume_at = self._resume_at, 0
        cursor = Cursor(self.epoch, start)
        self._cursor = cursor
        return cursor, range(start, len(self))

    def _end_iteration(self, cursor: Cursor) -> None:
        """An iteration reached the end of its epoch: the generator moves past it
        (never back, and only once however many iterators finish that epoch)."""
        cursor.done = True
        self.epoch = max(self.epoch, cursor.epoch + 1)

    @property
    def arrays(self) -> ArrayBatches:
        """The array fast path: batches as numpy (same values and layout as ``self[i]``)."""
        return ArrayBatches(self)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows.

        The next iteration starts at the epoch's first batch, except right after
        :meth:`load_state_dict` when ``epoch`` is the restored epoch: then it starts
        at the restored position, so the natural resume loop
        (``for e in range(bgen.epoch, n): bgen.set_epoch(e); ...``) does not replay
        the batches already trained on.
        """
        e = check_int(epoch, "epoch", minimum=0, fix="Epochs are numbered 0, 1, 2, ...")
        if e != self.epoch:
            self._resume_at = 0
        self.epoch = e
        self._cursor = None

    def batch_units(self, idx: int) -> NDArray[np.int64]:
        """Unit numbers (samples with ``batch_size``, else batches) of batch ``idx``
        in the current epoch's order, as the sampler and shard give them."""
        i = self._check_index(idx)
        return self._batch_units(i, i + 1)[0]

    def randomness_report(self, max_batches: int | None = 1000) -> dict[str, float]:
        """How many distinct storage chunks each batch of this epoch draws from.

        A sequential order draws from one or two chunks per batch, a full shuffle
        from up to ``batch_size``; the chunk-aware shuffle lies in between (at most
        the chunks of one pool). Inspects the first ``max_batches`` batches (all when
        None); reads no data.

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> da = xr.DataArray(np.zeros((40, 8)), dims=("time", "x")).chunk(time=10)
        >>> seq = xb.BatchGenerator(da, {"x": 8}, batch_size=10)
        >>> seq.randomness_report()["max_groups_per_batch"]
        1.0
        """
        from .sampling import group_diversity
        from .validity import chunk_labels

        n = len(self) if max_batches is None else min(len(self), max_batches)
        batches = self._batch_units(0, n) if n else []
        flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        labels = chunk_labels(self.schema, self._sources, self._var_dims, flat)
        local = np.split(
            np.arange(flat.size), np.cumsum([b.size for b in batches])[:-1]
        )
        report = (
            group_diversity(local, labels) if batches else group_diversity([], labels)
        )
        report["chunks_in_source"] = float(
            max(
                (
                    math.prod(s.nchunks)
                    for s in self._sources.values()
                    if s.bounds is not None
                ),
                default=1,
            )
        )
        return report

    # ------------------------------------------------------------------ shards, splits
    def shard(
        self, rank: int, world_size: int, even: Literal["pad", "drop"] = "pad"
    ) -> BatchGenerator:
        """A copy of this generator that yields only shard ``rank`` of ``world_size``.

        Units (samples, or batches without ``batch_size``) are dealt round-robin; with
        ``even="pad"`` every shard has ``ceil(n / world_size)`` units (repeating from
        the start of the epoch, like torch's DistributedSampler), with ``"drop"``
        ``n // world_size``. Sharding a shard composes (DDP rank, then loader worker).
        """
        new = copy.copy(self)
        inner = Shard(rank, world_size, even)
        new._shard = inner if self._shard is None else self._shard.then(inner)
        new._page = None
        new._cursor = None
        new._resume_at = 0
        return new

    def split(
        self,
        dim: Hashable,
        gap: int = 0,
        **parts: float | int | tuple[Any, Any] | slice,
    ) -> dict[str, BatchGenerator]:
        """Split the data along ``dim`` into generators over disjoint ranges.

        Each part is a fraction (float), a number of points (int) or a label range
        (``slice(start, stop)`` or a 2-tuple, inclusive as in ``.sel``). Every
        window of a part lies inside its range, so no window of one split touches data
        of another. ``gap`` leaves points out between fraction/count parts.

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> da = xr.DataArray(np.zeros((100, 8)), dims=("time", "x"))
        >>> parts = xb.BatchGenerator(da, {"time": 10}).split("time", train=0.8, val=0.2)
        >>> {k: len(v) for k, v in parts.items()}
        {'train': 8, 'val': 2}
        """
        ranges = split_bounds(self.ds, dim, parts, gap)
        return {name: self._part(dim, a, b) for name, (a, b) in ranges.items()}

    def _part(self, dim: Hashable, start: int, stop: int) -> BatchGenerator:
        """This generator over ``start:stop`` along ``dim``: the same arguments
        (filters, cache, sampler, shard, epoch) on the cut data; weights follow
        their samples."""
        s = self.schema
        filters = (
            {}
            if self._filter is None
            else self._filter.isel(dim, start, stop).arguments()
        )
        weights = getattr(self.sampler, "weights", None)
        part = BatchGenerator(
            self.ds.isel({dim: slice(start, stop)}),
            dict(s.input_dims),
            dict(s.input_overlap),
            dict(s.batch_dims),
            s.concat_input_dims,
            self.preload_batch,
            self.cache,
            self.cache_preprocess,
            keep_remainder=s.keep_remainder,
            batch_size=s.batch_size,
            drop_last=s.drop_last,
            sampler=SequentialSampler() if weights is not None else self.sampler,
            block_cache_bytes=self.block_cache.max_bytes,
            **filters,
        )
        if weights is not None:
            units = parent_units(
                s, self.sample_ids(), part.schema, part.sample_ids(), dim, start
            )
            part = part.with_sampler(
                dataclasses.replace(self.sampler, weights=np.asarray(weights)[units])  # type: ignore[type-var]
            )
        part._shard = self._shard
        part.epoch = self.epoch
        return part

    def sample_ids(self) -> NDArray[np.int64]:
        """The sample (or, without ``batch_size``, batch) number of each unit.

        The sampler orders units ``0 .. n_units - 1``; unit ``u`` is sample
        ``sample_ids()[u]`` (the number ``batch["sample"]`` shows, row-major over
        ``schema.unit_shape``). Without ``skip_nan``/``mask`` this is
        ``arange(n_units)``. ``RandomSampler(weights=...)`` weights are indexed by
        position in this array: build them as ``w[bgen.sample_ids()]`` from per-sample
        weights ``w`` and attach them with :meth:`with_sampler`.

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> ds = xr.Dataset({"v": ("x", [1.0, np.nan, 3.0, 4.0, 5.0, 6.0])})
        >>> bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=2, skip_nan="v")
        >>> bgen.sample_ids().tolist()  # window 0 holds the NaN
        [1, 2]
        """
        if self._valid is None:
            return np.arange(self.schema.n_units, dtype=np.int64)
        return self._valid.copy()

    def with_sampler(self, sampler: Sampler) -> BatchGenerator:
        """A copy of this generator (same data, filters, shard) with another sampler.

        The sampler is checked against this generator's units at once: weights
        must have ``n_units`` entries, indexed by position in :meth:`sample_ids`.
        Nothing is read again (the filters' result is shared).
        """
        new = copy.copy(self)
        new.sampler = self._make_sampler(False, None, sampler, None)
        check_sampler_fits(new.sampler, new.n_units, new._filter is not None)
        new._groups = None
        new._page = None
        new._cursor = None
        new._resume_at = 0
        return new

    # ------------------------------------------------------------------ state
    def _content_fingerprint(self) -> str:
        """Hash of what a unit's batch holds: schema and source (not the order)."""
        h = hashlib.sha256()
        h.update(self.schema.fingerprint.encode())
        if self._source_fp is None:  # read once: a few chunks of lazy data
            self._source_fp = source_fingerprint(
                self.ds, self._sources, self.block_cache
            )
        h.update(self._source_fp.encode())
        if self._valid is not None:
            h.update(self._valid.tobytes())
        return h.hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """Hash of schema, source structure and coordinates, and sampler."""
        h = hashlib.sha256()
        h.update(self._content_fingerprint().encode())
        h.update(
            json.dumps(self.sampler.to_dict(), sort_keys=True, default=str).encode()
        )
        if self._valid is not None:
            h.update(self._valid.tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: enough to resume mid-epoch with load_state_dict.

        With several iterators at once, this describes the most recently started one
        (its epoch and the batches it delivered); before any iteration, or once that
        one finished, where the next iteration starts.
        """
        shard = self._shard
        cursor = self._cursor
        if cursor is not None and not cursor.done:
            epoch, position = cursor.epoch, cursor.position
        else:
            epoch, position = self.epoch, self._resume_at
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "epoch": epoch,
            "position": position,
            "shard": None
            if shard is None
            else [shard.rank, shard.world_size, shard.even],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches not yet delivered.

        Every field is checked first; an error prints the checkpoint's value beside
        this generator's and says what to fix (``StateError``, or ``StateTypeError``
        for a value of the wrong type).
        """
        now = self.state_dict()
        epoch, position = checked_state(
            state,
            fingerprint=now["fingerprint"],
            seed=now["seed"],
            shard=now["shard"],
            n_batches=len(self),
            epoch=now["epoch"],
            position=now["position"],
        )
        self.epoch = epoch
        self._cursor = None
        self._resume_at = position

    def __repr__(self) -> str:
        s = self.schema
        return (
            f"<xbatcher.BatchGenerator: {len(self)} batches, mode={s.mode!r}, "
            f"input_dims={dict(s.input_dims)}, batch_dims={dict(s.batch_dims)}, "
            f"batch_size={s.batch_size}, sampler={type(self.sampler).__name__}>"
        )


class ArrayBatches:
    """Sequence view of a generator's batches as numpy arrays (the fast path).

    ``batches[i]`` is an ``ndarray`` for a DataArray source and a dict of variable
    name -> ``ndarray`` for a Dataset; iteration gathers many batches per read.
    """

    def __init__(self, gen: BatchGenerator) -> None:
        self._gen = gen

    def __len__(self) -> int:
        return len(self._gen)

    def __getitem__(self, idx: int) -> ArrayBatch:
        gen = self._gen
        i = gen._check_index(idx)
        return gen._arrays_for(gen._batch_units(i, i + 1))[0]

    def __iter__(self) -> Iterator[ArrayBatch]:
        return self._iterate(*self._gen._start_iteration())

    def _iterate(self, cursor: Cursor, indices: range) -> Iterator[ArrayBatch]:
        gen = self._gen
        groups = gen._groups_of_batches(indices, gen._group_size(), cursor.epoch)
        for first, batches in groups:
            for j, batch in enumerate(gen._arrays_for(batches)):
                cursor.position = first + j + 1
                yield batch
        gen._end_iteration(cursor)


def _gather_windows(
    src: Source, request: WindowRequest, cache: BlockCache
) -> NDArray[Any]:
    """:func:`gather`, also for a variable without any of the request's dims (a 0-d
    variable next to sliced ones: the same value for every window)."""
    out = gather(src, request, cache)
    if out.shape[0] != request.count:
        out = np.repeat(out[:1], request.count, axis=0)
    return out
