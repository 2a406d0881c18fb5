"""``BatchGenerator``: the public API, compatible with xbatcher 0.4.

The generator is a thin facade over two public contracts: the epoch plan
(:class:`~xbatcher.plan.EpochPlan`: schema, sampler, shard and sample filter; which
units make each batch of each epoch) and the batch engine
(:class:`~xbatcher.engine.BatchEngine`: sources, chunk cache and layouts; units in,
batches out). It validates the arguments, builds both, and keeps the epoch and
iteration state. Constructing one is O(1) in the number of windows; batch ``i`` is
computed on demand.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import operator
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from . import _iteration
from ._readahead import IndexedReadAhead, read_ahead_for
from ._roles import cached_roles
from ._state import STATE_VERSION, Cursor, checked_state
from ._validation import check_bool, check_int
from .caches._warm import CacheWarmUp
from .engine import (
    ArrayBatch,
    Batch,
    BatchEngine,
    read_batch,
    read_batch_xarray,
    read_batches,
    read_batches_xarray,
)
from .errors import (
    BatchIndexError,
    BatchIndexTypeError,
    InputTypeError,
    SchemaError,
)
from .fingerprint import source_fingerprint
from .plan import EpochPlan, make_sampler
from .prefetch import EpochPrefetcher, prefetch_epoch
from .reader import BlockCache, parse_bytes
from .sampling import Sampler, SequentialSampler
from .schema import BatchSchema
from .windows import Window

if TYPE_CHECKING:
    from .caches import BatchCache
    from .mapping_cache import MappingBatchCache
from .splits import check_sampler_fits, parent_units, split_bounds
from .validity import chunk_grid, make_filter

__all__ = ["ArrayBatches", "BatchGenerator"]


class BatchGenerator(CacheWarmUp):
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
    cache : xbatcher.caches.Cache, str or MutableMapping, optional
        A batch cache: a ``Cache``, a URL (``"file:///path"``...) or, as in 0.4, a
        dict-like store (``dict``, ``zarr.storage`` store). Batches are built once,
        passed through ``cache_preprocess``, stored, then read from it (caching.md).
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
    chunk_cache : xbatcher.caches.Cache or str, optional
        A (persistent) tier of decoded chunks: later epochs decode none (caching.md).
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
    windows : dict of str to xbatcher.Window, optional
        Several windows per sample (inputs, targets at a lead): batches keyed by role.

    Attributes
    ----------
    plan : xbatcher.plan.EpochPlan
        Which units make each batch of each epoch (schema, sampler, shard, filter).
    engine : xbatcher.engine.BatchEngine
        Sources, chunk cache and layouts: :func:`xbatcher.engine.read_batch` of a
        batch's units is ``bgen.arrays[i]`` (see ``docs/architecture.md``).

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
        chunk_cache: Any = None,
        resident_bytes: int | str | None = None,
        skip_nan: str | Sequence[str] | None = None,
        mask: str | xr.DataArray | None = None,
        min_valid: float | Mapping[str, float] = 1.0,
        windows: Mapping[str, Window] | None = None,
    ) -> None:
        _check_inputs(ds, cache_preprocess)
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
            windows=windows,
        )
        block_cache = BlockCache(parse_bytes(block_cache_bytes))
        self.engine = BatchEngine(ds, self.schema, block_cache)
        self._source_fp: str | None = None  # source_fingerprint, computed on demand
        self.chunk_cache = _attach_chunk_cache(self, chunk_cache)
        sources = self.engine.sources
        data = ds._to_temp_dataset() if isinstance(ds, xr.DataArray) else ds
        valid: NDArray[np.int64] | None = None
        self._filter = make_filter(data, self.schema, skip_nan, mask, min_valid)
        if self._filter is not None:
            valid = self._filter.valid_samples(self.schema, data, sources, block_cache)
        chosen = make_sampler(
            shuffle, seed, sampler, resident_bytes, sources, block_cache.max_bytes
        )
        self.plan = EpochPlan(
            self.schema,
            chosen,
            valid=valid,
            grid=chunk_grid(sources, self.engine.var_dims),
        )
        check_sampler_fits(chosen, self.n_units, self._filter is not None)
        self._batch_cache = _batch_cache(self)
        self.epoch = 0
        # the most recently started iteration (each iter() has its own cursor)
        self._cursor: Cursor | None = None
        self._resume_at = 0  # where the next iteration starts (load_state_dict)
        self._read_ahead = _read_ahead_of(self)

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
    def sampler(self) -> Sampler:
        """The sampler ordering the units of each epoch (see :meth:`with_sampler`)."""
        return self.plan.sampler

    @property
    def seed(self) -> int | None:
        """The shuffle seed (drawn at construction when not given)."""
        return self.plan.sampler.seed

    @property
    def block_cache(self) -> BlockCache:
        """The cache of decoded source chunks (the engine's)."""
        return self.engine.block_cache

    # ------------------------------------------------------------------ epochs, batches
    @property
    def n_units(self) -> int:
        """Units available to the sampler (samples or batches, after filtering)."""
        return self.plan.n_units

    def __len__(self) -> int:
        return self.plan.num_batches()

    def __getitem__(self, idx: int) -> Batch:
        return _indexed_batch(self, _check_index(idx, len(self)))

    def __iter__(self) -> Iterator[Batch]:
        # the cursor (epoch, start) is taken here, when iter() is called, not at the
        # first next(): two iterators made together follow the same epoch
        cursor = self.start_iteration()
        read, whole = _xarray_reader(self)
        done = self.finish_iteration
        return _iteration.batches(self.plan, self.engine, cursor, read, done, whole)

    def start_iteration(self) -> Cursor:
        """A new iteration's own cursor (for loaders that iterate themselves).

        It follows the current epoch from the restored position (0 unless
        :meth:`load_state_dict` set one); :meth:`state_dict` describes it until
        another iteration starts. Advance ``cursor.position`` past each batch
        delivered and call :meth:`finish_iteration` at the end of the epoch.
        """
        start, self._resume_at = self._resume_at, 0
        cursor = Cursor(self.epoch, start)
        self._cursor = cursor
        return cursor

    def finish_iteration(self, cursor: Cursor) -> None:
        """An iteration reached the end of its epoch: the generator moves past it
        (never back, and only once however many iterators finish that epoch)."""
        cursor.done = True
        self.epoch = max(self.epoch, cursor.epoch + 1)

    @property
    def arrays(self) -> ArrayBatches:
        """The array fast path: batches as numpy (same values and layout as ``self[i]``)."""
        return ArrayBatches(self)

    def prefetch(
        self, n: int = 2, *, max_bytes: int | str | None = None, xarray: bool = False
    ) -> EpochPrefetcher[Any]:
        """``iter(self.arrays)`` (``xarray=True``: ``iter(self)``) read ahead on a
        thread, ``n`` batches and ``max_bytes`` at most: see :mod:`xbatcher.prefetch`."""
        read = _xarray_reader(self)[0] if xarray else partial(read_batches, self.engine)
        return prefetch_epoch(self, read, depth=n, max_bytes=max_bytes)

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
        i = _check_index(idx, len(self))
        return self.plan.units_of_batch(self.epoch, i)

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
        return self.plan.randomness_report(self.epoch, max_batches)

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
        new.plan = self.plan.with_shard(rank, world_size, even)
        new._cursor = None
        new._resume_at = 0
        new._read_ahead = _read_ahead_of(new)
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
        return {name: _split_part(self, dim, a, b) for name, (a, b) in ranges.items()}

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
        return self.plan.sample_ids()

    def with_sampler(self, sampler: Sampler) -> BatchGenerator:
        """A copy of this generator (same data, filters, shard) with another sampler.

        The sampler is checked against this generator's units at once: weights
        must have ``n_units`` entries, indexed by position in :meth:`sample_ids`.
        Nothing is read again (the filters' result is shared).
        """
        new = copy.copy(self)
        chosen = make_sampler(
            False, None, sampler, None, self.engine.sources, self.block_cache.max_bytes
        )
        new.plan = self.plan.with_sampler(chosen)
        check_sampler_fits(chosen, new.n_units, new._filter is not None)
        new._cursor = None
        new._resume_at = 0
        new._read_ahead = _read_ahead_of(new)
        return new

    # ------------------------------------------------------------------ state
    @property
    def fingerprint(self) -> str:
        """Hash of schema, source structure and coordinates, and sampler."""
        return _full_fingerprint(self)

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands: enough to resume mid-epoch with load_state_dict.

        With several iterators at once, this describes the most recently started one
        (its epoch and the batches it delivered); before any iteration, or once that
        one finished, where the next iteration starts.
        """
        return _state_of(self)

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


def _full_fingerprint(gen: BatchGenerator) -> str:
    """``gen.fingerprint``: what its batches hold (content) and their order (sampler)."""
    h = hashlib.sha256()
    h.update(_content_fingerprint(gen).encode())
    h.update(json.dumps(gen.sampler.to_dict(), sort_keys=True, default=str).encode())
    if gen.plan.valid is not None:
        h.update(gen.plan.valid.tobytes())
    return h.hexdigest()[:16]


def _state_of(gen: BatchGenerator) -> dict[str, Any]:
    """``gen.state_dict()``: the epoch and position of its latest unfinished cursor,
    else where its next iteration starts."""
    shard = gen.plan.shard
    cursor = gen._cursor
    if cursor is not None and not cursor.done:
        epoch, position = cursor.epoch, cursor.position
    else:
        epoch, position = gen.epoch, gen._resume_at
    return {
        "version": STATE_VERSION,
        "fingerprint": gen.fingerprint,
        "seed": gen.seed,
        "epoch": epoch,
        "position": position,
        "shard": None if shard is None else [shard.rank, shard.world_size, shard.even],
    }


def _batch_cache(gen: BatchGenerator) -> MappingBatchCache | BatchCache | None:
    """The batch cache over ``gen.cache`` (None without ``cache=``): a
    :class:`~xbatcher.caches.Cache` or URL gets the keyed, checksummed layout; a
    ``MutableMapping`` (or zarr store) keeps 0.4's layout."""
    if gen.cache is None:
        return None
    from .caches import BatchCache, Cache

    if isinstance(gen.cache, Cache | str):
        from .caches import as_cache

        backend = as_cache(gen.cache, "cache")
        return BatchCache(backend, _content_fingerprint(gen), gen.cache_preprocess)
    from .mapping_cache import MappingBatchCache

    return MappingBatchCache(gen.cache, _content_fingerprint(gen), gen.cache_preprocess)


def _attach_chunk_cache(gen: BatchGenerator, chunk_cache: Any) -> Any:
    """Route the engine's chunked sources through the ``chunk_cache=`` tier, keyed
    by the source's fingerprint (not the schema: generators over the same data
    share the chunks); returns ``chunk_cache``."""
    if chunk_cache is None:
        return None
    from .caches import as_cache, cache_chunks

    backend = as_cache(chunk_cache, "chunk_cache")
    if gen._source_fp is None:  # chunks read here bypass the in-memory chunk cache,
        # which would otherwise serve them without their reaching the tier
        gen._source_fp = source_fingerprint(gen.ds, gen.engine.sources, None)
    gen.engine.sources = cache_chunks(gen.engine.sources, backend, gen._source_fp)
    return chunk_cache


def _xarray_reader(
    gen: BatchGenerator,
) -> tuple[Callable[[list[NDArray[np.int64]]], Iterable[Batch]], bool]:
    """How an iteration reads a group of xarray batches, and whether all at once:
    sample and window batches of a group are gathered together (one chunk plan) and
    wrapped one by one; concat batches are read (or taken from the batch cache) one
    by one, as the consumer asks for them."""
    grouped = (
        gen.schema.mode != "concat" and gen.preload_batch and gen._batch_cache is None
    )
    if grouped:
        return partial(read_batches_xarray, gen.engine), True
    return partial(map, partial(_cached_batch, gen)), False


def _read_ahead_of(gen: BatchGenerator) -> IndexedReadAhead | None:
    """The read-ahead of in-order ``gen[i]`` (see ``_readahead.read_ahead_for``)."""
    return read_ahead_for(gen.engine, gen.preload_batch, gen._batch_cache is not None)


def _indexed_batch(gen: BatchGenerator, i: int) -> Batch:
    """``gen[i]`` (``i`` checked): in order, read ahead (see ``_readahead``)."""
    if gen._read_ahead is not None:
        batch = gen._read_ahead.batch(gen.plan, gen.engine, gen.epoch, i)
        if batch is not None:
            return batch
    return _cached_batch(gen, gen.plan.units_of_batch(gen.epoch, i))


def _cached_batch(gen: BatchGenerator, units: NDArray[np.int64]) -> Batch:
    """The xarray batch of ``units``, through the batch cache (``cache=``) if any."""
    cache = gen._batch_cache
    if cache is None:
        return read_batch_xarray(gen.engine, units, gen.preload_batch)
    if gen.engine.roles is not None:
        from .mapping_cache import MappingBatchCache

        if isinstance(cache, MappingBatchCache):
            # several windows, 0.4's layout: one entry per role under the batch's key
            key = cache.unit_key(units)
            return cast(Batch, cached_roles(gen, cache, key, units))  # see RoleBatch
    hit = cache.lookup(units, gen.preload_batch)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    try:
        batch = read_batch_xarray(gen.engine, units, gen.preload_batch)
        if gen.cache_preprocess is not None:
            batch = gen.cache_preprocess(batch)
    except BaseException:
        cache.abandon(units)
        raise
    cache.save(units, batch)
    return batch


def _content_fingerprint(gen: BatchGenerator) -> str:
    """Hash of what a unit's batch holds: schema and source (not the order)."""
    h = hashlib.sha256()
    h.update(gen.schema.fingerprint.encode())
    if gen._source_fp is None:  # read once: a few chunks of lazy data
        gen._source_fp = source_fingerprint(gen.ds, gen.engine.sources, gen.block_cache)
    h.update(gen._source_fp.encode())
    if gen.plan.valid is not None:
        h.update(gen.plan.valid.tobytes())
    return h.hexdigest()[:16]


def _check_inputs(ds: Any, cache_preprocess: Any) -> None:
    """Refuse what no generator can batch (typed errors naming the fix)."""
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


def _check_index(idx: Any, n: int) -> int:
    """``idx`` as a batch number in ``0 .. n - 1`` (negative ones count from the end)."""
    try:
        i = operator.index(idx)
    except TypeError:
        raise BatchIndexTypeError(
            f"batch index must be an integer; got {idx!r} of type "
            f"{type(idx).__name__}. Use bgen[i] with an int (or numpy integer), "
            "one batch at a time."
        ) from None
    if not -n <= i < n:
        raise BatchIndexError(
            f"batch index {i} is out of range for a generator of {n} batches "
            f"(list index out of range); valid indices are {-n}..{n - 1}."
        )
    return i + n if i < 0 else i


def _split_part(
    gen: BatchGenerator, dim: Hashable, start: int, stop: int
) -> BatchGenerator:
    """``gen`` over ``start:stop`` along ``dim``: the same arguments
    (filters, cache, sampler, shard, epoch) on the cut data; weights follow
    their samples."""
    s = gen.schema
    filters = (
        {} if gen._filter is None else gen._filter.isel(dim, start, stop).arguments()
    )
    weights = getattr(gen.sampler, "weights", None)
    part = BatchGenerator(
        gen.ds.isel({dim: slice(start, stop)}),
        dict(s.input_dims),
        dict(s.input_overlap),
        dict(s.batch_dims),
        s.concat_input_dims,
        gen.preload_batch,
        gen.cache,
        gen.cache_preprocess,
        keep_remainder=s.keep_remainder,
        batch_size=s.batch_size,
        drop_last=s.drop_last,
        sampler=SequentialSampler() if weights is not None else gen.sampler,
        block_cache_bytes=gen.block_cache.max_bytes,
        chunk_cache=gen.chunk_cache,
        **filters,
        windows=dict(s.windows) or None,
    )
    if weights is not None:
        units = parent_units(
            s, gen.sample_ids(), part.schema, part.sample_ids(), dim, start
        )
        part = part.with_sampler(
            dataclasses.replace(gen.sampler, weights=np.asarray(weights)[units])  # type: ignore[type-var]
        )
    part.plan = dataclasses.replace(part.plan, shard=gen.plan.shard)
    part.epoch = gen.epoch
    return part


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
        return read_batch(gen.engine, gen.batch_units(idx))

    def __iter__(self) -> Iterator[ArrayBatch]:
        gen = self._gen
        cursor = gen.start_iteration()  # at iter(), as BatchGenerator.__iter__
        return _iteration.batches(
            gen.plan,
            gen.engine,
            cursor,
            partial(read_batches, gen.engine),
            gen.finish_iteration,
            concurrent=True,
        )
