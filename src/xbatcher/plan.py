"""The epoch plan: which units make batches ``i .. j`` of epoch ``e``.

An :class:`EpochPlan` is a small, frozen, picklable object: the
:class:`~xbatcher.schema.BatchSchema`, the :class:`~xbatcher.sampling.Sampler`, an
optional :class:`~xbatcher.sampling.Shard` and the sample filter (the ids kept by
``skip_nan``/``mask``). It reads no data: a loader worker, a cache or a Dask task can
ask it for the units of any batch and hand them to
:func:`xbatcher.engine.read_batch`. ``BatchGenerator.plan`` is the plan of a
generator.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from .errors import InputTypeError, SchemaError, XbatcherWarning
from .reader import format_bytes, parse_bytes
from .sampling import (
    BlockShuffleSampler,
    Sampler,
    SequentialSampler,
    Shard,
    ShuffleSampler,
    UnitGroups,
    group_diversity,
)
from .schema import BatchSchema

if TYPE_CHECKING:
    from .sources import Source

__all__ = ["ChunkGrid", "EpochPlan", "make_sampler"]

# chunk-aware shuffle: bytes of chunks a shuffle pool draws from, by default. Larger
# pools are more random but gather from more memory (slower, cache-unfriendly): on the
# S1 benchmark 32-64 MiB pools were fastest.
_DEFAULT_RESIDENT_BYTES = 64 * 2**20
_PAGE = 4096  # positions whose units are computed together for in-order bgen[i] calls


@dataclass(frozen=True, slots=True, eq=False)
class ChunkGrid:
    """The chunk edges along the dims of the variable whose chunks group units.

    Parameters
    ----------
    dims : tuple
        The variable's dims.
    bounds : tuple of numpy.ndarray
        Chunk edges along each of ``dims`` (``0, c1, c2, ..., size``).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> schema = xb.BatchSchema(xr.DataArray(np.zeros(8), dims="x"), {"x": 2})
    >>> ChunkGrid(("x",), (np.array([0, 4, 8]),)).labels(schema).tolist()
    [0, 0, 1, 1]
    """

    dims: tuple[Hashable, ...]
    bounds: tuple[NDArray[np.int64], ...]

    def labels(
        self, schema: BatchSchema, units: NDArray[np.int64] | None = None
    ) -> NDArray[np.int64]:
        """Chunk (as one int) in which each unit's first window starts.

        ``units`` defaults to every unit of ``schema``.
        """
        if units is None:
            units = np.arange(schema.n_units, dtype=np.int64)
        n = int(units.size)
        starts = schema.unit_windows(units).starts
        if schema.mode == "concat":  # a batch expands to many windows: use its first
            counts = schema.unit_window_counts(units)
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            starts = {d: s[first] for d, s in starts.items()}
        ids = []
        for d, b in zip(self.dims, self.bounds, strict=True):
            s = starts.get(d)
            ids.append(
                np.zeros(n, np.int64)
                if s is None
                else np.searchsorted(b, s, side="right") - 1
            )
        nchunks = tuple(len(b) - 1 for b in self.bounds)
        return np.ravel_multi_index(ids, nchunks).astype(np.int64)


class _Memo:
    """A plan's caches (the chunk groups, the last page of units): rebuilt on
    demand, never pickled. Each slot is replaced by one assignment, so threads
    sharing a plan read either the old or the new value, never half of one."""

    __slots__ = ("groups", "n_batches", "page")

    def __init__(self, groups: UnitGroups | None = None) -> None:
        self.groups = groups
        self.page: tuple[tuple[int, int], NDArray[np.int64]] | None = None
        # (sampler, shard, valid, batches per epoch): also checked by identity
        self.n_batches: tuple[Any, Any, Any, int] | None = None

    def __reduce__(self) -> tuple[type[_Memo], tuple[()]]:
        return _Memo, ()


@dataclass(frozen=True, slots=True, eq=False)
class EpochPlan:
    """Which units make each batch of each epoch (reads no data).

    Parameters
    ----------
    schema : BatchSchema
        Windows, units and batches.
    sampler : Sampler
        The order of the units in each epoch.
    shard : Shard, optional
        This rank's (or worker's) share of each epoch's positions.
    valid : numpy.ndarray of int64, optional
        The filter: sorted ids of the units kept (``skip_nan``/``mask``); all when
        None. The sampler orders positions ``0 .. len(valid) - 1`` into it.
    grid : ChunkGrid, optional
        The chunks that group units for a chunk-aware sampler (one group when None).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.zeros(10), dims="x")
    >>> schema = xb.BatchSchema(da, {"x": 2}, batch_size=2)
    >>> plan = EpochPlan(schema, xb.ShuffleSampler(seed=0))
    >>> plan.n_units, plan.num_batches()
    (5, 3)
    >>> [u.tolist() for u in plan.batch_units(0, 0, 3)]
    [[3, 2], [4, 0], [1]]
    >>> plan.with_shard(1, 2).batch_units(0, 0, 1)[0].tolist()  # positions 1 and 3
    [2, 0]
    """

    schema: BatchSchema
    sampler: Sampler
    shard: Shard | None = None
    valid: NDArray[np.int64] | None = None
    grid: ChunkGrid | None = None
    # init=False: ``dataclasses.replace`` gives the copy a fresh memo (a memo kept
    # from the plan it copies would hand out that plan's units)
    _memo: _Memo = field(default_factory=_Memo, init=False, repr=False)

    @property
    def n_units(self) -> int:
        """Units available to the sampler (samples or batches, after the filter)."""
        return self.schema.n_units if self.valid is None else int(self.valid.size)

    def epoch_length(self) -> int:
        """Positions of one epoch of this shard (units, with repeats if any)."""
        n = self.sampler.epoch_length(self.n_units)
        return self.shard.length(n) if self.shard is not None else n

    def num_batches(self) -> int:
        """Batches in one epoch of this shard (``len(bgen)``)."""
        memo = self._memo.n_batches  # the same for every epoch: computed once
        if (
            memo is not None
            and memo[0] is self.sampler
            and memo[1] is self.shard
            and memo[2] is self.valid
        ):
            return memo[3]
        n = self.schema.num_batches(self.epoch_length())
        self._memo.n_batches = (self.sampler, self.shard, self.valid, n)
        return n

    def sample_ids(self) -> NDArray[np.int64]:
        """The sample (or batch) number of each unit (a fresh array)."""
        if self.valid is None:
            return np.arange(self.schema.n_units, dtype=np.int64)
        return self.valid.copy()

    def unit_groups(self) -> UnitGroups | None:
        """The chunk groups of the units, for a sampler that needs them (else None)."""
        if not self.sampler.needs_groups:
            return None
        groups = self._memo.groups
        if groups is None:
            if self.grid is None:
                labels = np.zeros(self.schema.n_units, dtype=np.int64)
            else:
                labels = self.grid.labels(self.schema)
            if self.valid is not None:
                labels = labels[self.valid]
            groups = UnitGroups.from_labels(labels)
            self._memo.groups = groups
        return groups

    def units(self, epoch: int, positions: NDArray[np.int64]) -> NDArray[np.int64]:
        """Unit ids at ``positions`` (this shard's) of ``epoch``."""
        if positions.size and positions.size <= _PAGE:
            # bgen[i] called in order: evaluate the sampler a page at a time
            page = int(positions[0]) // _PAGE
            if int(positions[-1]) // _PAGE == page:
                return self._page(epoch, page)[positions - page * _PAGE]
        return self._compute_units(epoch, positions)

    def _page(self, epoch: int, page: int) -> NDArray[np.int64]:
        """Units of positions ``page * _PAGE ..`` of ``epoch`` (the last page kept)."""
        key = (epoch, page)
        entry = self._memo.page  # one read: another thread may replace it
        if entry is None or entry[0] != key:
            start = page * _PAGE
            stop = min(start + _PAGE, self.epoch_length())
            every = np.arange(start, stop, dtype=np.int64)
            entry = (key, self._compute_units(epoch, every))
            self._memo.page = entry
        return entry[1]

    def _in_order(self) -> bool:
        """True when positions are units (no sampler order, shard or filter)."""
        return (
            self.shard is None
            and self.valid is None
            and type(self.sampler) is SequentialSampler
        )

    def _compute_units(
        self, epoch: int, positions: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        if self._in_order():
            return positions  # in order: positions are units (checked by callers)
        n = self.sampler.epoch_length(self.n_units)
        if self.shard is not None:
            positions = self.shard.global_positions(n, positions)
        units = self.sampler.units(self.n_units, epoch, positions, self.unit_groups())
        if self.valid is not None:
            units = self.valid[units]
        return units

    def batch_units(self, epoch: int, first: int, stop: int) -> list[NDArray[np.int64]]:
        """Units of batches ``first .. stop - 1`` of ``epoch``, one array per batch."""
        bs = self.schema.batch_size
        if bs is None:
            units = self.units(epoch, np.arange(first, stop, dtype=np.int64))
            return list(units.reshape(-1, 1))
        lo, hi = first * bs, min(stop * bs, self.epoch_length())
        units = self.units(epoch, np.arange(lo, hi, dtype=np.int64))
        return _split_batches(units, bs)

    def units_of_batch(self, epoch: int, index: int) -> NDArray[np.int64]:
        """Units of batch ``index`` of ``epoch``: ``batch_units(epoch, index, index +
        1)[0]`` with scalar arithmetic (``bgen[i]``; ``index`` must be in range).

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> schema = xb.BatchSchema(xr.DataArray(np.zeros(10), dims="x"), {"x": 2})
        >>> EpochPlan(schema, xb.ShuffleSampler(seed=0)).units_of_batch(0, 1).tolist()
        [2]
        """
        bs = self.schema.batch_size
        if bs is None:
            lo, hi = index, index + 1
        else:
            lo = index * bs
            hi = min(lo + bs, self.epoch_length())
        if self._in_order():
            return np.arange(lo, hi, dtype=np.int64)
        page, offset = divmod(lo, _PAGE)
        if (hi - 1) // _PAGE != page:  # a batch across two pages
            return self._compute_units(epoch, np.arange(lo, hi, dtype=np.int64))
        # a copy: the page stays shared by the next calls
        return self._page(epoch, page)[offset : offset + hi - lo].copy()

    def randomness_report(
        self, epoch: int, max_batches: int | None = 1000
    ) -> dict[str, float]:
        """How many distinct chunks each batch of ``epoch`` draws from (see
        ``BatchGenerator.randomness_report``); the first ``max_batches`` batches."""
        n = self.num_batches()
        n = n if max_batches is None else min(n, max_batches)
        batches = self.batch_units(epoch, 0, n) if n else []
        flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        if self.grid is None:
            labels = np.zeros(flat.size, dtype=np.int64)
        else:
            labels = self.grid.labels(self.schema, flat)
        local = np.split(
            np.arange(flat.size), np.cumsum([b.size for b in batches])[:-1]
        )
        report = (
            group_diversity(local, labels) if batches else group_diversity([], labels)
        )
        report["chunks_in_source"] = float(
            1 if self.grid is None else math.prod(len(b) - 1 for b in self.grid.bounds)
        )
        return report

    def with_shard(
        self, rank: int, world_size: int, even: Literal["pad", "drop"] = "pad"
    ) -> EpochPlan:
        """This plan restricted to shard ``rank`` of ``world_size`` (composes)."""
        inner = Shard(rank, world_size, even)
        shard = inner if self.shard is None else self.shard.then(inner)
        return self._replace(shard=shard)

    def with_sampler(self, sampler: Sampler) -> EpochPlan:
        """This plan with another sampler (same units, filter and shard)."""
        return self._replace(sampler=sampler)

    def _replace(self, **changes: Any) -> EpochPlan:
        # a new plan gets its own caches; the chunk groups depend on neither the
        # sampler nor the shard, so they carry over
        new = dataclasses.replace(self, **changes)
        new._memo.groups = self._memo.groups
        return new


def _split_batches(units: NDArray[np.int64], size: int) -> list[NDArray[np.int64]]:
    """``np.split(units, np.arange(size, len(units), size))`` (views of ``units``:
    batches of ``size``, the last one shorter, one empty batch when ``units`` is
    empty), as rows of one reshape: ``np.split`` costs about 1 us a batch."""
    full = units.size // size * size
    out = list(units[:full].reshape(-1, size))
    if full < units.size or not out:
        out.append(units[full:])
    return out


def make_sampler(
    shuffle: bool | str | None,
    seed: int | None,
    sampler: Sampler | None,
    resident_bytes: int | str | None,
    sources: Mapping[Hashable, Source],
    block_cache_bytes: int,
) -> Sampler:
    """The sampler of ``BatchGenerator(shuffle=, seed=, sampler=, resident_bytes=)``.

    ``sources`` and ``block_cache_bytes`` size the chunk-aware shuffle's pool and
    decide whether a full shuffle warns that it would decode chunks again and again.
    """
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
        _warn_if_full_shuffle_thrashes(sources, block_cache_bytes)
        return ShuffleSampler(seed=seed)
    if shuffle == "chunks":
        budget = (
            parse_bytes(resident_bytes, "resident_bytes")
            if resident_bytes is not None
            else min(_DEFAULT_RESIDENT_BYTES, block_cache_bytes // 2)
        )
        chunk = max(s.chunk_nbytes for s in sources.values())
        per_unit = max(1, len(sources))
        resident = max(1, budget // max(chunk * per_unit, 1))
        return BlockShuffleSampler(seed=seed, resident_groups=int(resident))
    raise SchemaError(
        f"shuffle must be True, False or 'chunks'; got {shuffle!r}. Use shuffle=True "
        "for a full shuffle or shuffle='chunks' for a chunk-aware one."
    )


def _warn_if_full_shuffle_thrashes(
    sources: Mapping[Hashable, Source], budget: int
) -> None:
    """A full shuffle over chunked data that does not fit the chunk cache decodes
    most chunks again for every few batches: say so, and what to do instead."""
    chunked = [s for s in sources.values() if s.bounds is not None and s.shape]
    total = sum(math.prod(s.shape) * s.dtype.itemsize for s in chunked)
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
