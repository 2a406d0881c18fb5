"""Reading batches with several windows per sample (``windows=``), keyed by role.

Each role has the variables it reads, a one-window schema giving its layout
(:meth:`~xbatcher.schema.BatchSchema.role_schema`) and an xarray builder over its
variables. A batch gathers every role's windows from the engine's sources through the
shared chunk cache (so a chunk that two roles touch is decoded once) with the same
vectorised gathers as one-window batches, and lays each role out as a sample batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .errors import VariableError, XbatcherWarning
from .layout import VarLayout, XarrayBuilder, layout_array, plan_layout
from .reader import BlockCache, WindowRequest, gather
from .reader import prefetch as prefetch_chunks
from .schema import BatchSchema, Windows
from .sources import Source

__all__ = [
    "Role",
    "make_roles",
    "read_roles",
    "read_roles_xarray",
    "role_schema",
    "role_variables",
    "role_windows",
]

Batch = xr.Dataset | xr.DataArray
ArrayBatch = NDArray[Any] | dict[Hashable, NDArray[Any]]


class BatchEngine(Protocol):
    """What reading roles needs of :class:`xbatcher.engine.BatchEngine`."""

    schema: BatchSchema
    block_cache: BlockCache
    sources: dict[Hashable, Source]
    coord_sources: dict[Hashable, Source]
    source_dims: dict[Hashable, tuple[Hashable, ...]]
    var_dims: dict[Hashable, tuple[Hashable, ...]]
    sizes: dict[Hashable, int]
    roles: dict[str, Role] | None

    def request(
        self, windows: Windows, dims: Sequence[Hashable]
    ) -> WindowRequest: ...  # pragma: no cover

    def pack(
        self, per_var: dict[Hashable, NDArray[Any]]
    ) -> ArrayBatch: ...  # pragma: no cover


def role_windows(schema: BatchSchema, units: NDArray[np.int64]) -> dict[str, Windows]:
    """The windows of each role of ``units``: the anchors' windows (the schema's
    sample windows) moved by each role's offsets and lengthened to its count."""
    anchor = schema.unit_windows(units)
    out = {}
    for name, window in schema.windows:
        starts = dict(anchor.starts)
        lengths = dict(anchor.lengths)
        for o in window.offsets:
            starts[o.dim] = anchor.starts[o.dim] + o.first
            lengths[o.dim] = o.count
        out[name] = Windows(starts, lengths, anchor.count)
    return out


def role_schema(schema: BatchSchema, name: str) -> BatchSchema:
    """The one-window sample schema whose layout role ``name`` has: its offset dims
    (those kept, not given as a single int) are windows too, first, with stride 1
    (so its window ``k`` along such a dim starts at point ``k``)."""
    window = dict(schema.windows)[name]
    kept = [o for o in window.offsets if not o.scalar]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XbatcherWarning)
        return BatchSchema(
            dict(schema.sizes),
            {**{o.dim: o.count for o in kept}, **dict(schema.input_dims)},
            {**{o.dim: o.count - 1 for o in kept}, **dict(schema.input_overlap)},
            schema.batch_dims,
            keep_remainder=schema.keep_remainder,
            batch_size=schema.batch_size,
            drop_last=schema.drop_last,
        )


def gather_windows(
    src: Source, request: WindowRequest, cache: BlockCache
) -> NDArray[Any]:
    """:func:`~xbatcher.reader.gather`; a variable with none of the request's dims
    (0-d) gives its value for every window."""
    out = gather(src, request, cache)
    if out.shape[0] != request.count:
        out = np.repeat(out[:1], request.count, axis=0)
    return out


@dataclass(frozen=True, eq=False)
class Role:
    """One role of a sample: its variables, layouts and xarray builder."""

    name: str
    variables: tuple[Hashable, ...]
    schema: BatchSchema
    layouts: dict[Hashable, VarLayout]
    builder: XarrayBuilder


def role_variables(
    schema: BatchSchema, data_vars: Sequence[Hashable]
) -> dict[str, tuple[Hashable, ...]]:
    """The variables each role reads (all data variables for ``variables=None``);
    an unknown name raises :class:`~xbatcher.errors.VariableError`."""
    out = {}
    for name, window in schema.windows:
        if window.variables is None:
            out[name] = tuple(data_vars)
            continue
        for v in window.variables:
            if v not in data_vars:
                raise VariableError(
                    f"windows[{name!r}] reads variable {v!r}, which is not a data "
                    f"variable of the data; the data variables are {list(data_vars)}. "
                    "Fix the name in Window(variables=...)."
                )
        out[name] = tuple(window.variables)
    return out


def make_roles(obj: xr.Dataset | xr.DataArray, schema: BatchSchema) -> dict[str, Role]:
    """The roles of ``schema.windows`` over ``obj``."""
    data = obj._to_temp_dataset() if isinstance(obj, xr.DataArray) else obj
    variables = role_variables(schema, list(data.data_vars))
    sizes = dict(obj.sizes)
    roles = {}
    for name, names in variables.items():
        # the role's variables with every coordinate (as a one-window batch has)
        sub = (
            obj
            if isinstance(obj, xr.DataArray)
            else obj.drop_vars([v for v in obj.data_vars if v not in names])
        )
        one = role_schema(schema, name)
        builder = XarrayBuilder(sub, one)
        layouts = {
            v: plan_layout(one, builder.ds_dims, data[v].dims, sizes) for v in names
        }
        roles[name] = Role(name, names, one, layouts, builder)
    return roles


def _roles(engine: BatchEngine) -> dict[str, Role]:
    roles = engine.roles
    assert roles is not None
    return roles


def read_roles(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]]
) -> list[dict[str, ArrayBatch]]:
    """Numpy batches ``{role: batch}`` of ``batches`` (each role gathered at once)."""
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    windows = role_windows(engine.schema, flat)
    edges = np.cumsum([0, *(b.size for b in batches)])
    out: list[dict[str, ArrayBatch]] = [{} for _ in batches]
    for name, role in _roles(engine).items():
        gathered = {
            v: gather_windows(
                engine.sources[v],
                engine.request(windows[name], engine.source_dims[v]),
                engine.block_cache,
            )
            for v in role.variables
        }
        for j in range(len(batches)):
            lo, hi = edges[j], edges[j + 1]
            per_var = {
                v: layout_array(g[lo:hi], role.layouts[v]) for v, g in gathered.items()
            }
            out[j][name] = engine.pack(per_var)
    return out


def read_roles_xarray(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]], preload: bool = True
) -> list[dict[str, Batch]]:
    """xarray batches ``{role: batch}`` of ``batches`` (numpy- or dask-backed)."""
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    windows = role_windows(engine.schema, flat)
    edges = np.cumsum([0, *(b.size for b in batches)])
    out: list[dict[str, Batch]] = [{} for _ in batches]
    for name, role in _roles(engine).items():
        w = windows[name]
        arrays: dict[Hashable, Any] = {}
        for v in role.variables:
            request = engine.request(w, engine.source_dims[v])
            if preload:
                arrays[v] = gather_windows(
                    engine.sources[v], request, engine.block_cache
                )
            else:
                arrays[v] = request
        coords = {
            c: gather_windows(
                engine.coord_sources[c],
                engine.request(w, engine.source_dims[c]),
                engine.block_cache,
            )
            for c in role.builder.windowed_coords
        }
        for j, units in enumerate(batches):
            lo, hi = int(edges[j]), int(edges[j + 1])
            part = {
                v: a[lo:hi] if preload else _lazy(engine, v, _cut(a, lo, hi))
                for v, a in arrays.items()
            }
            first = {d: int(s[lo]) for d, s in w.starts.items()} if hi > lo else {}
            out[j][name] = role.builder.build(
                part, {c: a[lo:hi] for c, a in coords.items()}, first, units
            )
    return out


def _cut(request: WindowRequest, lo: int, hi: int) -> WindowRequest:
    return WindowRequest(
        tuple(s[lo:hi] for s in request.starts), request.lengths, hi - lo
    )


def _lazy(engine: BatchEngine, name: Hashable, request: WindowRequest) -> Any:
    """A dask array whose one task gathers ``request`` (``preload_batch=False``)."""
    import dask.array as da
    from dask.delayed import delayed

    src = engine.sources[name]
    task = delayed(gather_windows, pure=True)(src, request, engine.block_cache)
    shape = (request.count, *request.lengths)
    return da.from_delayed(task, shape=shape, dtype=src.dtype)  # type: ignore[no-untyped-call]


def roles_nbytes(engine: BatchEngine) -> int:
    """Bytes of one full batch, every role."""
    schema = engine.schema
    total = 0
    for name, role in _roles(engine).items():
        lengths = dict(role_windows(schema, np.zeros(1, np.int64))[name].lengths)
        for v in role.variables:
            dims = engine.var_dims[v]
            per_window = math.prod(lengths.get(d, engine.sizes[d]) for d in dims)
            total += per_window * engine.sources[v].dtype.itemsize
    return max(1, total * (schema.batch_size or 1))


def prefetch_roles(engine: BatchEngine, units: NDArray[np.int64]) -> None:
    """Decode into the chunk cache the chunks that every role of ``units`` needs."""
    windows = role_windows(engine.schema, units)
    roles = _roles(engine)
    reads = sum(len(r.variables) for r in roles.values())
    budget = engine.block_cache.max_bytes // (4 * max(1, reads))
    for name, role in roles.items():
        for v in role.variables:
            prefetch_chunks(
                engine.sources[v],
                engine.request(windows[name], engine.var_dims[v]),
                engine.block_cache,
                budget,
            )


def cached_roles(
    gen: Any, cache: Any, key: str, units: NDArray[np.int64]
) -> dict[str, Batch]:
    """The xarray batch of ``units`` through a generator's batch cache (``cache=``):
    one entry per role, at ``"<key>/<role>"``; ``cache_preprocess`` gets (and must
    return) the dict of roles."""
    keys = {name: f"{key}/{name}" for name in _roles(gen.engine)}
    if all(k in cache for k in keys.values()):
        return {name: cache.get(k, gen.preload_batch) for name, k in keys.items()}
    batch: dict[str, Batch] = read_roles_xarray(gen.engine, [units], gen.preload_batch)[
        0
    ]
    if gen.cache_preprocess is not None:
        batch = gen.cache_preprocess(batch)
    for name, part in batch.items():
        cache.put(f"{key}/{name}", part)
    return batch
